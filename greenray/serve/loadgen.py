"""Request arrivals (a constant rate, the study's jitter, Poisson), sent at absolute times whatever
the answers do, each request timestamped at the caller when sent and when answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from greenray.config import ARRIVALS

_CHUNK = 4096  # gaps drawn at a time


def arrival_offsets(kind: str, frequency_hz: float, seed: int = 0) -> Iterator[float]:
    """Seconds after the start at which requests 0, 1, 2, ... are due, forever. constant: every
    1/f; jitter: the study's gaps of (1/f) * U(0.8, 1.2); poisson: exponential gaps, mean 1/f."""
    if kind not in ARRIVALS:
        raise ValueError(f"arrivals are one of {', '.join(ARRIVALS)}, not {kind!r}")
    if not frequency_hz > 0 or frequency_hz == float("inf"):
        raise ValueError(f"a request frequency must be a positive number of Hz, not {frequency_hz:g}")
    period = 1.0 / frequency_hz
    rng = np.random.default_rng(seed)
    start, index = 0.0, 0
    while True:
        if kind == "constant":  # from the index, so no rounding error builds up
            yield from (period * i for i in range(index, index + _CHUNK))
            index += _CHUNK
            continue
        gaps = period * (rng.uniform(0.8, 1.2, _CHUNK) if kind == "jitter" else rng.exponential(1.0, _CHUNK))
        times = start + np.concatenate(([0.0], np.cumsum(gaps[:-1])))
        start = float(times[-1] + gaps[-1])
        yield from times.tolist()


@dataclass
class RequestTiming:
    """One request as the caller saw it; Unix seconds on the caller's clock."""

    request_id: int
    scheduled_s: float  # when the generator meant to send it
    submitted_s: float  # when the call was made
    completed_s: float | None = None  # when its answer (or error) reached the caller
    error: str | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.completed_s is None else self.completed_s - self.submitted_s


@dataclass(frozen=True)
class SendStats:
    """How closely the generator kept its schedule."""

    sent: int
    achieved_rate_hz: float | None  # (sent - 1) / (last send - first send)
    scheduled_rate_hz: float | None  # the same over the due times (Poisson's own sample rate)
    p99_lateness_s: float | None  # send time minus due time
    p99_interval_error_s: float | None  # |actual gap - scheduled gap| between consecutive sends


class LoadGenerator:
    """Sends request i at start + offsets[i] by calling `submit(i)`, which must start the request
    and return an awaitable of its answer; it never waits for answers, and a late send goes out
    at once, so the rate holds whatever the answers do. `on_answer(timing, ok)` sees each answer.
    With `max_in_flight`, a request due while that many are unanswered waits for one of them
    (it goes out late, and its lateness is recorded), and the ones after it go out at once."""

    def __init__(
        self,
        submit: Callable[[int], Awaitable],
        offsets: Iterable[float],
        *,
        on_answer: Callable[[RequestTiming, bool], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_in_flight: int | None = None,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._submit = submit
        self._offsets = iter(offsets)
        self._on_answer = on_answer
        self._clock = clock
        self._window = max_in_flight
        self.timings: list[RequestTiming] = []
        self._pending: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def run(self, stop: asyncio.Event, max_requests: int | None = None) -> None:
        """Send on schedule until `stop` is set (or `max_requests` have gone out)."""
        start = self._clock()
        for request_id, offset in enumerate(self._offsets):
            if max_requests is not None and request_id >= max_requests:
                break
            due = start + offset
            delay = due - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            while self._window is not None and len(self._pending) >= self._window and not stop.is_set():
                await asyncio.wait(set(self._pending), return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                break
            timing = RequestTiming(request_id, due, self._clock())
            answer = self._submit(request_id)
            self.timings.append(timing)
            task = asyncio.ensure_future(self._wait(timing, answer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def drain(self, timeout_s: float | None = None) -> int:
        """Wait for outstanding answers; returns how many are still missing after `timeout_s`."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
        return len(self._pending)

    def stats(self) -> SendStats:
        submitted = np.array([t.submitted_s for t in self.timings])
        due = np.array([t.scheduled_s for t in self.timings])
        if len(submitted) < 2:
            return SendStats(len(submitted), None, None, None, None)
        interval_error = np.abs(np.diff(submitted) - np.diff(due))
        return SendStats(
            sent=len(submitted),
            achieved_rate_hz=_rate(submitted),
            scheduled_rate_hz=_rate(due),
            p99_lateness_s=float(np.percentile(submitted - due, 99)),
            p99_interval_error_s=float(np.percentile(interval_error, 99)),
        )

    async def _wait(self, timing: RequestTiming, answer: Awaitable) -> None:
        ok = False
        try:
            await answer
            ok = True
        except Exception as exc:  # the answer of a failed request is its error, recorded per request
            timing.error = error_line(exc)
        finally:
            timing.completed_s = self._clock()
        if self._on_answer is not None:
            self._on_answer(timing, ok)


def _rate(times: np.ndarray) -> float | None:
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else None


def error_line(exc: BaseException) -> str:
    """A Ray error's text holds the remote traceback; its last line says what went wrong."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else exc.__class__.__name__
