"""What a meter reads: its devices' power sampled into a trace (trace.py), in the background or
by hand, the counters read at window edges and in the background (reads.py), which devices
still answer (columns.py), and whether work runs (the simulated backend and the sampling
process follow it). EnergyMeter's windows, spans and idle baseline are read off it."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable

import numpy as np

from greenray.energy import reads
from greenray.energy.backend import Backend
from greenray.energy.calibration import Anchor
from greenray.energy.columns import Columns
from greenray.energy.sampling import Background, ProcessLink
from greenray.energy.spans import Reading
from greenray.energy.trace import PowerTrace

Warn = Callable[[str, str], None]


class Sensor:
    """A meter's devices and their power trace. `on_rows` is told of newly integrated trace
    rows, `on_anchor` of each background counter read paired with the samples (under `lock`);
    the sampler thread waits `step()` seconds between readings."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        interval_s: float,
        anchor_interval_s: float,
        trace_tail_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        warn: Warn,
        on_rows: Callable[[list[float], list[list[float]]], None],
        on_anchor: Callable[[int, float, Anchor], None],
        step: Callable[[], float],
    ) -> None:
        self.backends = backends
        self.interval_s = interval_s
        self.clock = clock
        self._sleep = sleep
        self._warn = warn
        self._on_anchor = on_anchor
        self.devices = Columns(backends, warn)
        self.lock = threading.RLock()
        self.busy = 0  # busy windows and spans open
        self.dense = 0  # idle measurements in progress: sampled every interval too
        n = len(self.devices)
        # Edge readings of an RAPL package, for instance, add rows: leave room for them.
        capacity = max(1024, math.ceil(1.5 * trace_tail_s / interval_s))
        limits = np.array([c.limit_w or np.nan for c in self.devices.all], dtype=float)
        self.trace = PowerTrace(
            n, capacity, gap_s=max(3 * interval_s, 0.05), limits_w=limits, on_rows=on_rows
        )
        self.link = ProcessLink(self.devices, self.trace, self.lock, warn, self.failed)
        self.background = Background(
            self.link,
            sample=self.sample,
            anchor=self.anchor,
            step=step,
            anchor_interval_s=anchor_interval_s,
            warn=warn,
        )

    def start(self, process: bool) -> None:
        """Start sampling in the background: in a process of its own where `process` asks for
        one and one can be had."""
        if process:
            self.link.start(self.backends, self.clock, self.interval_s, self.busy > 0)
        self.background.start(counters=any(c.anchored for c in self.devices.all))

    def add_busy(self, step: int) -> None:
        """Count busy windows and spans in (1) or out (-1); the backends and the sampling
        process are told when work starts or stops running."""
        before = self.busy
        self.busy += step
        if (before == 0) != (self.busy == 0):
            for backend in self.backends:
                backend.set_busy(self.busy > 0)
            self.link.set_busy(self.busy > 0)

    def sample(self) -> Reading | None:
        """One pass over every device's power, outside the lock, after what a sampling process
        read; what it read, and the trace row's number (None: nothing to read)."""
        if not len(self.devices):
            return None
        self.link.drain()
        stamps, watts, failures = reads.read_power(self.devices, self.clock, self._warn)
        health = self.devices.health
        with self.lock:
            for i in [i for i in health.failing if watts[i] == watts[i]]:
                health.succeeded(i)
            for i, exc in failures:
                self.failed(i, exc)
            return Reading(stamps, watts, self.trace.append(stamps, watts))

    def anchor(self) -> None:
        """One pass over the costly counters (a background read each)."""
        done, failures = reads.read_anchors(self.devices, self.clock)
        with self.lock:
            for i, exc in failures:
                self.failed(i, exc)
            for i, t, value in done:
                anchor = reads.take_anchor(self.devices, self.trace, i, t, value, self.interval_s, self._warn)
                if anchor is not None:
                    self._on_anchor(i, t, anchor)

    def edge_counters(self, which: list[int]) -> tuple[float, dict[int, tuple[float, float]]]:
        """The counters of the columns `which` and the moment they stand for
        (reads.read_edge_counters); none read where `which` is empty."""
        if not which:
            return self.clock(), {}
        return reads.read_edge_counters(self.devices, which, self.clock, self._warn, self.failed, self.lock)

    def failed(self, i: int, exc: Exception) -> None:
        self.devices.health.failed(i, exc, self.clock(), float(self.trace.last_t[i]))

    def rows(self, t0: float | None, t1: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The trace's times and Watts in [t0, t1] (empty without devices)."""
        if not len(self.devices):
            return np.empty(0), np.empty((0, 0))
        with self.lock:
            return self.trace.rows(t0, t1)

    def peak_w(self, t0: float, t1: float) -> float | None:
        """The highest summed power of the compute devices over [t0, t1], counting the samples
        an interval outside it."""
        _, watts = self.rows(t0 - self.interval_s, t1 + self.interval_s)
        if not len(watts):
            return None
        summed = self.devices.summed(watts)
        return float(np.nanmax(summed)) if not np.isnan(summed).all() else None

    def wait(self, seconds: float) -> None:
        """Let `seconds` pass, sampling by hand when no sampler thread runs."""
        if self.background.threads:
            self._sleep(seconds)
            return
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 1e-9:
            self._sleep(min(self.interval_s, left))
            self.sample()


def synchronize_cuda() -> None:
    """Let queued kernels finish before a window closes, if this process uses CUDA; torch is
    only consulted when something else already imported it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
