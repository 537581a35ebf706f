"""How requests join a model replica's batch queue: one image a call (`Item`, the study's path:
a handle call per request), or in groups from ingress replicas (`GroupInbox`: `submit` /
`collect`, the model replica's side of greenray.serve.ingress.Feeder), which take Serve's
per-call cost off the replica's one thread. Either way every image joins Serve's batch queue on
its own, so a policy counts images and times waits as it always did."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import torch

from greenray.serve.loadgen import error_line
from greenray.serve.records import Answer

# How long `submit` waits for the batch its images may start before it answers "send more": a
# batch starts a few loop turns after its images are queued; longer than this, the queue is
# waiting for more images (a fixed:N batch not yet full, or its max wait).
SETTLE_S = 0.002
# An ingress's `collect` returns empty after this long without an answer (and asks again).
COLLECT_POLL_S = 10.0

Ticketed = tuple[int, Answer | None, str | None]  # (ticket, answer, error)


@dataclass
class Item:
    """One image in the batch queue."""

    image: torch.Tensor
    request_id: int | None
    enqueued_s: float  # Unix seconds it reached this replica
    grouped: bool = False  # came in a group from an ingress replica (counted in GroupInbox)


class _Outbox:
    """Answers finished for one ingress replica, until its next submit or collect takes them."""

    def __init__(self) -> None:
        self.ready: list[Ticketed] = []
        self.event = asyncio.Event()

    def put(self, ticket: int, answer: Answer | None, error: str | None) -> None:
        self.ready.append((ticket, answer, error))
        self.event.set()

    def take(self) -> list[Ticketed]:
        ready, self.ready = self.ready, []
        self.event.clear()
        return ready


class GroupInbox:
    """Groups of images from ingress replicas, queued one image at a time through `infer` (the
    replica's batch method); `cap()` is the batch cap in force. The batch method calls
    `batch_started` as each batch begins."""

    def __init__(
        self, infer: Callable[[Item], Awaitable[Answer]], image_size: int, cap: Callable[[], int]
    ) -> None:
        self._infer, self._size, self._cap = infer, image_size, cap
        self._outboxes: dict[str, _Outbox] = {}
        self._tasks: set[asyncio.Task] = set()
        self._next_batch: asyncio.Future | None = None  # resolved when the next batch starts
        self._queued = 0  # grouped images in Serve's batch queue, not yet in a batch

    def batch_started(self, items: list[Item]) -> None:
        if self._next_batch is not None and not self._next_batch.done():
            self._next_batch.set_result(None)  # the submits waiting on it answer after this batch
        self._queued -= sum(item.grouped for item in items)

    async def submit(self, feeder: str, images: np.ndarray, tickets: list[int], request_ids: list) -> list:
        """Take a group of checked uint8 images (N x 3 x S x S) from an ingress replica (`feeder`
        names it); each image joins Serve's batch queue on its own. Answers once a batch has
        taken them (a batch holds this thread, so the answer leaves when it ends, and the
        ingress's next group holds what arrived meanwhile: greedy still takes what queued
        while the model was busy) or, after SETTLE_S, when the queue waits for more images.
        While more than a batch's worth of grouped images is queued here it waits for more
        batches first (the next group would only queue behind them: fewer, bigger groups, and
        the backlog stays in the ingress, whose queue is bounded). It carries the answers ready
        for this feeder; the rest come through `collect`."""
        size = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(
                f"a group must be N x 3 x {size} x {size} uint8, got {images.dtype} {images.shape}"
            )
        # Ray hands arrays over read-only, from its object store: one copy for the whole group
        group = torch.from_numpy(images if images.flags.writeable else np.array(images))
        outbox = self._outbox(feeder)
        started = self._batch_started()
        now = time.time()
        for i, ticket in enumerate(tickets):
            item = Item(group[i], request_ids[i], now, grouped=True)
            task = asyncio.ensure_future(self._answer(outbox, ticket, item))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
        self._queued += len(tickets)
        await asyncio.wait([started], timeout=SETTLE_S)
        while self._queued > self._cap():
            await self._batch_started()
        await asyncio.sleep(0)  # a batch that just ended hands its answers over first
        return outbox.take()

    async def collect(self, feeder: str) -> list:
        """The answers finished for `feeder`, once there is one (empty after COLLECT_POLL_S)."""
        outbox = self._outbox(feeder)
        if not outbox.ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.event.wait(), COLLECT_POLL_S)
        return outbox.take()

    async def _answer(self, outbox: _Outbox, ticket: int, item: Item) -> None:
        try:
            answer = await self._infer(item)
        except Exception as exc:  # the image's own error answer; the others go on
            outbox.put(ticket, None, error_line(exc))
        else:
            outbox.put(ticket, answer, None)

    def _outbox(self, feeder: str) -> _Outbox:
        outbox = self._outboxes.get(feeder)
        if outbox is None:
            outbox = self._outboxes[feeder] = _Outbox()
        return outbox

    def _batch_started(self) -> asyncio.Future:
        if self._next_batch is None or self._next_batch.done():
            self._next_batch = asyncio.get_running_loop().create_future()
        return self._next_batch
