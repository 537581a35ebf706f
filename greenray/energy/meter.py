"""EnergyMeter: measurement windows over one or more energy backends (windows.py), a served
batch's cheap window (a span: open_span / close_span; batches.py, spans.py) and the idle
baseline (idle.py), all read off a Sensor (sensor.py): the devices' power trace sampled in the
background (a thread, or a process of its own: sampling.py) and their counters. How a window's
Joules are read off the trace is in window.py; which devices still answer, in columns.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from greenray.energy import idle
from greenray.energy.backend import Backend, Device
from greenray.energy.batches import Batches
from greenray.energy.calibration import Anchor
from greenray.energy.discover import open_backends, open_backends_explained  # noqa: F401 (kept here too)
from greenray.energy.idle import SETTLE_MAX_S, IdleStats
from greenray.energy.measurement import Measurement
from greenray.energy.sampler import SamplerProcess
from greenray.energy.sampling import STOP_TIMEOUT_S
from greenray.energy.sensor import Sensor
from greenray.energy.spans import BatchSpan, SpanEnergy
from greenray.energy.window import fold
from greenray.energy.windows import Windows

log = logging.getLogger("greenray.energy")

DEFAULT_INTERVAL_S = 0.01
# The trace keeps about this much of the recent past (for peak_power_w and trace); open
# windows need none of it: they keep running sums.
TRACE_TAIL_S = 30.0
# While no busy window is open (a serving replica between batches, a meter kept for its counter
# windows), the sampler thread reads power this often instead of every interval: a wake-up costs
# the measured process's Python a thread switch and the GIL, 100 times a second at 10 ms, for
# samples that only idle stretches get. A busy window samples its own start and end, so a batch
# shorter than this is measured as before; a longer one gets its in-window samples once the
# sampler's sleep ends (at most this late). A batch span (open_span) is sampled every interval
# from an interval after it opened. Counter windows (RAPL, the model, the running tally) read
# their Joules from the counters, whatever the sampling.
IDLE_INTERVAL_S = 0.1
# Costly counters (NVML: about 4 ms a read) are read this often in the background, never at
# window edges; cheaper ones (RAPL, the model: window.CHEAP_READ_S) at the edges of every window.
ANCHOR_INTERVAL_S = 1.0
# Where the power sampler runs: a thread of this process, or a process of its own (see
# greenray/energy/sampler.py), which costs the measured work's Python nothing.
SAMPLERS = ("thread", "process")


@dataclass
class WindowResult:
    measurement: Measurement | None = None


class EnergyMeter:
    """Measures windows of work, possibly nested or overlapping, like Zeus's ZeusMonitor.

        with EnergyMeter.create() as meter:
            with meter.window("trial") as w:
                ...
            print(w.measurement.joules, w.measurement.uncertainty_j)

    One background thread samples every device's power every `interval_s`; another reads
    costly counters (NVML's) every `anchor_interval_s`. No NVML call is made under the meter's
    lock, and memory stays bounded however long a window is open. With `sampler="process"`
    the sampling runs in a process of its own, and the thread only drains what it read, twice
    a second (and at every window edge); the thread samples itself until that process is
    ready, and again if it fails.
    """

    def __init__(
        self,
        backends: list[Backend],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        idle_w: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        warn_if_empty: bool = True,
        anchor_interval_s: float = ANCHOR_INTERVAL_S,
        trace_tail_s: float = TRACE_TAIL_S,
        sleep: Callable[[float], None] = time.sleep,
        empty_reason: str | None = None,
        sampler: str = "thread",
        idle_interval_s: float = IDLE_INTERVAL_S,
    ) -> None:
        if interval_s <= 0 or anchor_interval_s <= 0:
            raise ValueError("the sampling and counter intervals must be positive")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
        self.sampler = sampler
        self._warned: set[str] = set()
        self.interval_s = interval_s
        self.idle_interval_s = max(idle_interval_s, interval_s)  # the sampler's step with no busy window
        self.anchor_interval_s = anchor_interval_s
        self._clock = clock
        self._sensor = Sensor(
            backends,
            interval_s=interval_s,
            anchor_interval_s=anchor_interval_s,
            trace_tail_s=trace_tail_s,
            clock=clock,
            sleep=sleep,
            warn=self._warn_once,
            on_rows=self._observe,
            on_anchor=self._give_anchor,
            step=self._step,
        )
        self._devices, self._trace, self._lock = self._sensor.devices, self._sensor.trace, self._sensor.lock
        self._columns = self._devices.all
        self._batches = Batches(self._sensor)
        self._windows = Windows(self._sensor, lambda: self.idle_w, self._warn_once)
        self._calibration = self._devices.calibration  # per device: None without a costly counter
        self.idle_w: dict[str, float] = self._devices.model_idle_w() | dict(idle_w or {})
        self.idle_stats: dict[str, IdleStats] = {}
        self.empty_reason = empty_reason  # why nothing is measured, when nothing is
        if not self._columns and warn_if_empty:
            why = f" ({empty_reason})" if empty_reason else " (neither NVML nor RAPL is readable)"
            self._warn_once("empty", f"no energy source{why}: energy is not measured")

    # ---- construction and lifetime -------------------------------------------------

    @classmethod
    def create(cls, energy: str = "auto", *, warn_if_empty: bool = True, **kwargs) -> EnergyMeter:
        """A meter over the backends named by `energy` (see `open_backends`); `none` asked
        for is not warned about."""
        backends, reasons = open_backends_explained(energy)
        return cls(
            backends,
            warn_if_empty=warn_if_empty and energy != "none",
            empty_reason="; ".join(reasons) or None,
            **kwargs,
        )

    @property
    def devices(self) -> list[Device]:
        return [c.device for c in self._columns]

    @property
    def sources(self) -> set[str]:
        """Every energy_source this meter's windows can carry: a device's counter source where
        it has a counter, and its power source (short windows, windows without counter reads)."""
        return self._devices.sources()

    def device_sources(self) -> dict[str, str]:
        """Per device, the source of a long window's Joules (the counter where it has one)."""
        return self._devices.device_sources()

    @property
    def power_field(self) -> str | None:
        """The compute devices' power field: what peaks and sample-integrated Joules are of."""
        return self._devices.power_field()

    def calibration(self) -> dict[str, tuple[float, float]]:
        """Per device with a costly counter: the factor that scales its sample integrals to the
        counter, and that factor's relative error (about 95%); (1, 0.02) until the counter has
        covered enough to tell."""
        return self._devices.ratios()

    @property
    def sampling(self) -> str:
        """Where power is being sampled now: "process" (a sampling process of its own is
        ready), "thread", or "none" (not started, or nothing to measure)."""
        if not self._sensor.background.threads:
            return "none"
        return "process" if self._sensor.link.ready() else "thread"

    @property
    def _process(self) -> SamplerProcess | None:
        """The sampling process, while the meter has one."""
        return self._sensor.link.process

    def start(self) -> EnergyMeter:
        """Start the background sampler, and the counter reader where a counter is costly
        (idempotent)."""
        if self._sensor.background.threads or not self._columns:
            return self
        self._sensor.start(process=self.sampler == "process")
        return self

    def wait_for_sampler(self) -> str:
        """Wait until a sampling process is sampling, or has failed (the thread samples then):
        its start (about 0.13 s of CPU on cpu-vm) would otherwise overlap the first work
        measured. Returns `sampling`."""
        while self._sensor.link.starting():
            time.sleep(self.interval_s)
        return self.sampling

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the background threads; False when one is still inside a read after
        `timeout_s` (a stalled driver): it is left behind, a daemon, and ends with its read."""
        stuck = self._sensor.background.stop(timeout_s)
        if stuck:
            self._warn_once(
                "stuck", f"{', '.join(stuck)} still inside a read after {timeout_s:g} s: left behind"
            )
        return not stuck

    def close(self) -> None:
        if not self.stop():
            return  # closing NVML under a read in progress could crash it: leave it open
        for backend in self._sensor.backends:
            backend.close()

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- windows -------------------------------------------------------------------

    def begin_window(self, name: str, *, counter: bool = True, busy: bool = True) -> None:
        """Open a window. `counter=False` skips edge counter reads where a window would make
        them (cheap counters, and GPUs with only the average power field), for many short
        windows such as one per served batch; `busy=False` says the window holds no work of
        its own (only the simulated backend cares)."""
        self._windows.begin(name, counter=counter, busy=busy)

    def end_window(self, name: str) -> Measurement:
        """Close a window and measure it. Two threads closing one window: one gets the
        measurement, the other a ValueError."""
        return self._windows.end(name)

    def read_window(self, name: str) -> Measurement:
        """What an open window has measured so far; it stays open (a trial reports its energy
        after every epoch this way)."""
        return self._windows.read(name)

    @contextmanager
    def window(self, name: str, *, counter: bool = True, busy: bool = True) -> Iterator[WindowResult]:
        """Context-manager form; the measurement is on the yielded object after the block."""
        result = WindowResult()
        self.begin_window(name, counter=counter, busy=busy)
        try:
            yield result
        finally:
            result.measurement = self.end_window(name)

    # ---- batch spans: a serving replica's per-batch windows (greenray.energy.spans) --------

    def open_span(self) -> BatchSpan:
        """Open a batch's window the cheap way: a power reading and the time. Busy, like
        `begin_window`; no counter reads."""
        return self._batches.open_span()

    def close_span(self, span: BatchSpan) -> BatchSpan:
        """Close a span: a power reading at its end. Its Joules (the compute devices' samples,
        scaled by each one's counter/samples ratio) and peak are known on return, from its two
        readings alone where no other came between them (the trace otherwise); `measure_spans`
        gives the rest, for many spans at once."""
        return self._batches.close_span(span)

    def measure_spans(self, closed: list[BatchSpan]) -> list[SpanEnergy]:
        """The full measurement of closed spans (Joules, expected error, idle-free Joules,
        peak), at the meter's current ratios, swings and idle baseline."""
        return self._batches.measure(closed, self.idle_w)

    def measure_idle(self, seconds: float, *, settle_max_s: float = SETTLE_MAX_S) -> dict[str, float]:
        """Mean power per device over `seconds` with nothing of ours running, once the power
        has settled (up to `settle_max_s`: a GPU just out of work draws more for a while, and
        an averaged reading lags); kept as the baseline idle-free energies subtract, with its
        spread in `idle_stats`. Modelled devices keep their model's idle (nothing is waited
        for when every device is modelled)."""
        if seconds <= 0:
            raise ValueError("the idle measurement needs a positive number of seconds")
        measured = [i for i, c in enumerate(self._columns) if c.model_idle_w is None and self._live(i)]
        if not measured:
            return dict(self.idle_w)
        found = idle.measure(
            self._sensor,
            measured,
            seconds,
            settle_max_s,
            begin=self.begin_window,
            end=self.end_window,
            warn=self._warn_once,
        )
        for key, stats in found.items():
            self.idle_w[key] = stats.mean_w
            self.idle_stats[key] = stats
        return dict(self.idle_w)

    def baseline(self) -> dict[str, float]:
        """The idle baseline keyed by device UUID (the key where a device has none), the
        form that travels between processes: another process names the same GPU otherwise."""
        return {(d.uuid or d.key): self.idle_w[d.key] for d in self.devices if d.key in self.idle_w}

    def use_baseline(self, by_uuid: dict[str, float]) -> None:
        """Adopt a baseline measured elsewhere (see `baseline`) for the devices this meter has."""
        for device in self.devices:
            watts = by_uuid.get(device.uuid or device.key)
            if watts is not None:
                self.idle_w[device.key] = watts

    # ---- the power trace -----------------------------------------------------------

    def sample(self) -> None:
        """One pass over every device's power; the sampler thread calls it every interval.
        The reads happen outside the meter's lock. What a sampling process read comes first."""
        self._sensor.sample()

    def anchor(self) -> None:
        """One pass over the costly counters (a background read each); the counter thread
        calls it every `anchor_interval_s`."""
        self._sensor.anchor()

    def trace(self, t0: float | None = None, t1: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sample times (monotonic seconds) and Watts (one column per device, NaN where a device
        gave no reading) in [t0, t1], from the last TRACE_TAIL_S or so only."""
        return self._sensor.rows(t0, t1)

    def peak_power_w(self, t0: float, t1: float | None = None) -> float | None:
        """Peak summed power of the compute devices (GPUs, else CPUs) over [t0, t1] of the
        meter's clock, counting the samples just outside it: a window shorter than the
        sampling interval may hold none of its own. The highest reading of `power_field`:
        with only the average field, the highest 1 s average, not a peak. Units: W."""
        return self._sensor.peak_w(t0, self._clock() if t1 is None else t1)

    def now(self) -> float:
        """The meter's clock, the one trace times use."""
        return self._clock()

    def memory_bytes(self) -> int:
        """What the trace holds (it does not grow once full)."""
        return self._trace.nbytes()

    # ---- the sampler thread's pace -----------------------------------------------------

    def _step(self) -> float:
        """Seconds to the sampler's next reading: an interval while a busy window (or an idle
        measurement) is open; while only batch spans are, once the oldest is an interval old
        (a span reads its own edges: one shorter than an interval needs no reading between
        them); the idle step otherwise."""
        with self._lock:
            if self._sensor.dense or self._sensor.busy > len(self._batches.open):
                return self.interval_s
            if not self._batches.open:
                return self.idle_interval_s
            age = self._clock() - self._batches.open[0].t0
        return min(max(self.interval_s - age, 0.0), self.idle_interval_s) or self.interval_s

    # ---- internals: reading ----------------------------------------------------------

    def _live(self, i: int) -> bool:
        return self._devices.live(i)

    def _give_anchor(self, i: int, t: float, anchor: Anchor) -> None:
        self._windows.give_anchor(i, t, anchor)

    def _observe(self, times: list[float], watts: list[list[float]]) -> None:
        """Fold newly integrated trace rows into the peaks of the open windows they fall in."""
        open_windows = [w for w in self._windows.open.values() if w is not None]
        if open_windows or self._batches.open:
            summed = [self._devices.summed_row(row) for row in watts]
            for window in open_windows:
                fold(window, times, watts, summed)
            for span in self._batches.open:
                for t, total in zip(times, summed, strict=True):
                    if t >= span.peak_from:
                        span.fold(total)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
