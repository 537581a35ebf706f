"""A meter's background: its power sampler thread, its counter thread (costly counters read in
the background), and its side of a power sampler in a process of its own (sampler.py): starting
one where the backends and the clock allow it, telling it whether work runs, moving what it read
into the meter's trace (each failed, stalled or ended read counted as the meter's own read would
have been), and giving up on it when it fails (the sampler thread samples again)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from greenray.energy.backend import Backend, DeviceLost, EnergyUnavailable
from greenray.energy.columns import Columns
from greenray.energy.reads import SLOW_READ_S
from greenray.energy.sampler import DRAIN_INTERVAL_S, FAILED, LOST, OK, SLOW, SamplerProcess
from greenray.energy.trace import PowerTrace

log = logging.getLogger("greenray.energy")

STOP_TIMEOUT_S = 2.0


class ProcessLink:
    """A meter's sampling process, when it has one (`process`)."""

    def __init__(
        self,
        columns: Columns,
        trace: PowerTrace,
        lock: threading.RLock,
        warn: Callable[[str, str], None],
        failed: Callable[[int, Exception], None],
    ) -> None:
        self.process: SamplerProcess | None = None
        self._columns = columns
        self._trace = trace
        self._lock = lock
        self._warn = warn
        self._failed = failed

    def start(
        self, backends: list[Backend], clock: Callable[[], float], interval_s: float, busy: bool
    ) -> None:
        """Start a sampling process for these devices, unless one cannot be had (a backend
        another process cannot open, a clock other than the system's)."""
        specs = [getattr(b, "spec", lambda: None)() for b in backends]
        if clock is not time.monotonic or any(s is None for s in specs):
            log.info("power sampled in a thread: a backend or the clock is this process's own")
            return
        try:
            keys = [c.device.key for c in self._columns.all]
            process = SamplerProcess(specs, keys, interval_s, SLOW_READ_S)
        except OSError as exc:
            self._warn("process", f"no sampling process ({exc}): power is sampled in a thread")
            return
        process.set_busy(busy)
        self.process = process

    def ready(self) -> bool:
        process = self.process
        return process is not None and process.ready()

    def starting(self) -> bool:
        """Whether a sampling process is neither sampling yet nor failed."""
        process = self.process
        return process is not None and not process.ready() and process.problem() is None

    def set_busy(self, busy: bool) -> None:
        if self.process is not None:
            self.process.set_busy(busy)

    def sampling(self) -> bool:
        """Whether the sampling process is ready and sound; one that is not is stopped (said
        once), and the meter's thread samples again."""
        process = self.process
        if process is None:
            return False
        problem = process.problem()
        if problem is None:
            return process.ready()
        self._warn("process", f"the power sampling process stopped ({problem}): sampling in a thread")
        with self._lock:
            self.process = None
        process.stop(STOP_TIMEOUT_S)
        return False

    def stop(self, deadline: float) -> None:
        """Stop the sampling process by `deadline` (time.monotonic), however briefly it has left."""
        with self._lock:
            process, self.process = self.process, None
        if process is not None:
            process.stop(max(deadline - time.monotonic(), 0.1))

    def drain(self) -> None:
        """Move what the sampling process read into the trace."""
        process = self.process
        if process is None:
            return
        with self._lock:
            if self.process is not process:
                return
            rows = process.drain()
            if process.lost_rows:
                self._warn("lapped", "power readings were overwritten before they were read")
            columns, n = self._columns, len(self._columns)
            healthy = not columns.health.failing and all(map(columns.live, range(n)))
            if healthy and (rows[:, 2 * n :] == OK).all():
                for row in rows.tolist():  # the usual case: every read went well
                    self._trace.append(row[:n], row[n : 2 * n])
            else:
                self._take_fates(process, rows.tolist())

    def _take_fates(self, process: SamplerProcess, rows: list[list[float]]) -> None:
        """Rows with a failed, stalled or ended read: each read's fate counts as a thread's
        read would have (retries, the end of a device)."""
        columns, n = self._columns, len(self._columns)
        for row in rows:
            stamps, watts, status = row[:n], row[n : 2 * n], row[2 * n :]
            for i in range(n):
                if not columns.live(i):  # ended here: what it reads now is not used
                    watts[i] = math.nan
                elif status[i] == OK and i in columns.health.failing:
                    columns.health.succeeded(i)
                elif status[i] == FAILED:
                    self._failed(i, EnergyUnavailable(process.ring.message(i)))
                elif status[i] == LOST:
                    self._failed(i, DeviceLost(process.ring.message(i)))
                elif status[i] == SLOW:
                    key = columns.all[i].device.key
                    self._warn(f"slow:{i}", f"a power read of {key} stalled: its value is not used")
            self._trace.append(stamps, watts)


class Background:
    """A meter's background threads: the power sampler, which calls `sample` every `step()`
    seconds, or drains the sampling process twice a second while that one is sound; and, where
    a counter is costly, the counter reader, which calls `anchor` every `anchor_interval_s`."""

    def __init__(
        self,
        link: ProcessLink,
        *,
        sample: Callable[[], None],
        anchor: Callable[[], None],
        step: Callable[[], float],
        anchor_interval_s: float,
        warn: Callable[[str, str], None],
    ) -> None:
        self.threads: list[threading.Thread] = []
        self._stop: threading.Event | None = None
        self._link = link
        self._sample = sample
        self._anchor = anchor
        self._step = step
        self._anchor_interval_s = anchor_interval_s
        self._warn = warn

    def start(self, counters: bool) -> None:
        """Start the sampler thread, and the counter thread where `counters` are costly."""
        stop = threading.Event()
        self._stop = stop
        targets = [("greenray-power", self._run_sampler)]
        if counters:
            targets.append(("greenray-counter", self._run_anchors))
        for name, target in targets:
            thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout_s: float) -> list[str]:
        """Stop the threads, then the sampling process; the names of the threads still inside
        a read after `timeout_s` (a stalled driver): they are left behind, daemons."""
        if self._stop is not None:
            self._stop.set()
        deadline = time.monotonic() + timeout_s
        stuck = []
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                stuck.append(thread.name)
        self._link.stop(deadline)  # after the threads: the sampler thread checks on the process
        self.threads, self._stop = [], None
        return stuck

    def _run_sampler(self, stop: threading.Event) -> None:
        next_t = time.monotonic()
        while not stop.is_set():
            if self._link.sampling():
                self._survive(self._drain)
                stop.wait(DRAIN_INTERVAL_S)
                next_t = time.monotonic()
                continue
            self._survive(self._sample)
            next_t += self._step()
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (a long GIL hold): skip, don't burst to catch up
                next_t = time.monotonic()
                delay = 0
            stop.wait(delay)

    def _run_anchors(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._survive(self._anchor)
            stop.wait(self._anchor_interval_s)

    def _drain(self) -> None:
        self._link.drain()

    def _survive(self, step: Callable[[], None]) -> None:
        """Run one pass of a background thread; an unexpected error (a backend's bug) is said
        once and costs that pass, not the thread."""
        try:
            step()
        except Exception as exc:
            self._warn(f"crash:{step.__name__}", f"the meter's {step.__name__} pass failed: {exc!r}")
