"""How an ingress replica hands requests to a model replica in groups, so that Serve's cost per
call (about 1 ms of the model replica's one thread on a 2-core machine) is paid per group, not
per image.

A `Feeder` is one ingress replica's link to one model replica. It keeps at most one group in
transit: requests that arrive meanwhile wait here and go together as the next group. The model
replica (ModelServer.submit) answers a group once a batch has taken it, or once its batch queue
waits for more images, so:

- greedy still takes what queued while the model was busy: the group in transit is answered
  only after the batch that took it, and what arrived during that batch comes as one group;
- `fixed:N` still means N images, and `@MS` still counts from the first image in the model
  replica's queue: every image joins Serve's batch queue on its own there, and a queue that waits
  for more gets the next group at once.

Answers come back on the group's own reply when they are ready by then (a greedy batch), else on
`collect`, a call that waits for them; at most one of each is in flight per feeder.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import numpy as np

from greenray.serve.loadgen import error_line

MAX_GROUP = 256  # images in one call at most (a burst after a long batch goes as several)
# Requests serve-bench keeps in flight through ingress replicas, per model replica; later ones
# wait at the caller, late (their lateness is in the run's row). Room for the largest group in
# transit, the next one forming and any batch cap. Unbounded, an overload queues calls in the
# ingress replica's actor faster than it takes them, and Serve's health checks time out behind
# them; bounded by Serve instead (max_ongoing_requests), its router probes the full replica
# for every waiting call, and the probes take the ingress's CPU.
IN_FLIGHT_PER_MODEL = 4 * MAX_GROUP


class ModelUnavailable(RuntimeError):
    """The model replica did not take or answer a group (it died, or Serve refused the call)."""


class Feeder:
    """One ingress replica's link to one model replica's `submit` and `collect`."""

    def __init__(self, handle, name: str, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.handle = handle  # a DeploymentHandle of a ModelServer
        self.name = name  # unique per ingress replica and model replica: the model's outbox key
        self._on_error = on_error
        self._tickets = itertools.count()
        self._pending: list[tuple[int, np.ndarray, int | None]] = []  # (ticket, image, request_id)
        self._waiting: dict[int, asyncio.Future] = {}  # ticket -> the caller's answer
        self._sending = False
        self._collecting = False
        self._tasks: set[asyncio.Task] = set()

    @property
    def outstanding(self) -> int:
        """Images handed to this feeder and not answered yet."""
        return len(self._waiting)

    def put(self, image: np.ndarray, request_id: int | None = None) -> asyncio.Future:
        """Queue one checked 3 x S x S uint8 image; the future gets its ModelServer Answer (or
        the error that stopped it)."""
        ticket = next(self._tickets)
        future = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        self._pending.append((ticket, image, request_id))
        self._kick()
        return future

    def _kick(self) -> None:
        if self._pending and not self._sending:
            self._sending = True
            self._spawn(self._send())
        elif self._waiting and not self._sending and not self._collecting:
            # Nothing to send, answers still owed: wait for them (a submit in flight brings them).
            self._collecting = True
            self._spawn(self._collect())

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        tickets = [ticket for ticket, _, _ in group]
        try:
            images = np.stack([image for _, image, _ in group])
            answers = await self.handle.submit.remote(self.name, images, tickets, [r for _, _, r in group])
        except Exception as exc:  # Ray raises many types for a replica that is gone
            self._fail(tickets, exc)
        else:
            self._deliver(answers)
        finally:
            self._sending = False
            self._kick()

    async def _collect(self) -> None:
        try:
            answers = await self.handle.collect.remote(self.name)
        except Exception as exc:
            self._fail(list(self._waiting), exc)
        else:
            self._deliver(answers)
        finally:
            self._collecting = False
            self._kick()

    def _deliver(self, answers: list) -> None:
        for ticket, answer, error in answers:
            future = self._waiting.pop(ticket, None)
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(answer)
            else:
                future.set_exception(ValueError(error))

    def _fail(self, tickets: list[int], exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        error = ModelUnavailable(f"the model replica did not answer ({error_line(exc)})")
        for ticket in tickets:
            future = self._waiting.pop(ticket, None)
            if future is not None and not future.done():
                future.set_exception(error)
