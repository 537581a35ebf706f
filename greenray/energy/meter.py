"""EnergyMeter: measurement windows over one or more energy backends, a background power
sampler (trace and peak power), and the idle baseline."""

from __future__ import annotations

import bisect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from greenray.energy.backend import Backend, Device, EnergyUnavailable
from greenray.energy.measurement import DeviceEnergy, Measurement

log = logging.getLogger("greenray.energy")

# The NVML counter advances about every 100 ms: below this a window's counter delta is
# coarse, so the window is integrated from power samples and marked approximate.
MIN_COUNTER_WINDOW_S = 0.5
DEFAULT_INTERVAL_S = 0.01
# Samples kept after every window has closed, for late peak-power queries.
TRACE_TAIL_S = 30.0


def integrate(times: np.ndarray, watts: np.ndarray, t0: float, t1: float) -> float:
    """Joules of a sampled power curve over [t0, t1]: trapezoids between samples, the
    curve interpolated at the edges and held flat beyond the first and last sample."""
    if t1 <= t0 or len(times) == 0:
        return 0.0
    inside = (times > t0) & (times < t1)
    edge0, edge1 = np.interp([t0, t1], times, watts)
    t = np.concatenate(([t0], times[inside], [t1]))
    p = np.concatenate(([edge0], watts[inside], [edge1]))
    return float(np.trapezoid(p, t))


@dataclass
class _OpenWindow:
    name: str
    t0: float
    wall0: float
    counters: dict[str, float | None]
    busy: bool


class EnergyMeter:
    """Measures windows of work, possibly nested or overlapping, like Zeus's ZeusMonitor.

        with EnergyMeter.create() as meter:
            with meter.window("trial") as w:
                ...
            print(w.measurement.joules)

    One background thread samples every device's power every `interval_s`; counters are
    read only at window edges (one NVML counter read costs about 4 ms on an H100).
    """

    def __init__(
        self,
        backends: list[Backend],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        idle_w: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        warn_if_empty: bool = True,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the sampling interval must be positive")
        self.interval_s = interval_s
        self._clock = clock
        self._backends = backends
        self._devices: list[tuple[Backend, Device]] = [(b, d) for b in backends for d in b.devices()]
        # A modelled device's idle is known exactly; a measured one's needs measure_idle.
        self._model_idle = {
            d.key: watts for b, d in self._devices if (watts := b.model_idle_w(d)) is not None
        }
        self.idle_w: dict[str, float] = self._model_idle | dict(idle_w or {})
        self._lock = threading.RLock()
        self._times: list[float] = []
        self._watts: list[tuple[float, ...]] = []
        self._open: dict[str, _OpenWindow] = {}
        self._busy = 0
        self._lost: dict[str, float] = {}  # device key -> when it stopped answering
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self._devices and warn_if_empty:
            self._warn_once("no energy source (neither NVML nor RAPL is readable): energy is not measured")

    # ---- construction and lifetime -------------------------------------------------

    @classmethod
    def create(cls, energy: str = "auto", *, warn_if_empty: bool = True, **kwargs) -> EnergyMeter:
        """A meter over the backends named by `energy` (see `open_backends`); `none` asked
        for is not warned about."""
        return cls(open_backends(energy), warn_if_empty=warn_if_empty and energy != "none", **kwargs)

    @property
    def devices(self) -> list[Device]:
        return [d for _, d in self._devices]

    @property
    def sources(self) -> set[str]:
        return {b.counter_source for b in self._backends}

    def start(self) -> EnergyMeter:
        """Start the background sampler (idempotent)."""
        if self._thread is None and self._devices:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="greenray-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        for backend in self._backends:
            backend.close()

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- windows -------------------------------------------------------------------

    def begin_window(self, name: str, *, counter: bool = True, busy: bool = True) -> None:
        """Open a window. `counter=False` skips the edge counter reads (for many short
        windows, such as one per served batch); `busy=False` says the window holds no work
        of its own (only the simulated backend cares)."""
        with self._lock:
            if name in self._open:
                raise ValueError(f"a window named {name!r} is already open")
            if busy:
                self._busy += 1
                if self._busy == 1:
                    self._set_busy(True)
        self.sample()
        before = self._clock()
        counters = self._read_counters() if counter else {}
        t0 = (before + self._clock()) / 2
        with self._lock:
            self._open[name] = _OpenWindow(name, t0, time.time() - (self._clock() - t0), counters, busy)

    def end_window(self, name: str) -> Measurement:
        _synchronize_cuda()
        with self._lock:
            if name not in self._open:
                raise ValueError(f"no open window named {name!r}")
        before = self._clock()
        counters = self._read_counters() if self._open[name].counters else {}
        t1 = (before + self._clock()) / 2
        self.sample()
        with self._lock:
            window = self._open.pop(name)
            if window.busy:
                self._busy -= 1
                if self._busy == 0:
                    self._set_busy(False)
            measurement = self._measure(window, t1, counters)
            self._trim()
        return measurement

    def read_window(self, name: str) -> Measurement:
        """What an open window has measured so far; it stays open (a trial reports its energy
        after every epoch this way). Reads the counters when the window has them."""
        _synchronize_cuda()
        with self._lock:
            if name not in self._open:
                raise ValueError(f"no open window named {name!r}")
            window = self._open[name]
        before = self._clock()
        counters = self._read_counters() if window.counters else {}
        t1 = (before + self._clock()) / 2
        self.sample()
        with self._lock:
            return self._measure(window, t1, counters)

    @contextmanager
    def window(self, name: str, *, counter: bool = True, busy: bool = True) -> Iterator[WindowResult]:
        """Context-manager form; the measurement is on the yielded object after the block."""
        result = WindowResult()
        self.begin_window(name, counter=counter, busy=busy)
        try:
            yield result
        finally:
            result.measurement = self.end_window(name)

    def measure_idle(self, seconds: float) -> dict[str, float]:
        """Mean power per device over `seconds` with nothing of ours running; kept as the
        baseline that idle-free energies subtract. Modelled devices keep their model's idle
        (nothing is waited for when every device is modelled)."""
        if seconds <= 0:
            raise ValueError("the idle measurement needs a positive number of seconds")
        if all(d.key in self._model_idle for d in self.devices):
            return dict(self.idle_w)
        self.start()
        name = f"idle-{time.monotonic_ns()}"
        self.begin_window(name, busy=False)
        time.sleep(seconds)
        measurement = self.end_window(name)
        for reading in measurement.devices:
            if reading.joules is not None and reading.device.key not in self._model_idle:
                self.idle_w[reading.device.key] = reading.joules / measurement.seconds
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
        """One pass over every device's power; the sampler thread calls it every interval."""
        if not self._devices:
            return
        with self._lock:
            watts = tuple(self._read_power(b, d) for b, d in self._devices)
            self._times.append(self._clock())
            self._watts.append(watts)

    def trace(self, t0: float | None = None, t1: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sample times (monotonic seconds) and Watts (one column per device) in [t0, t1]."""
        with self._lock:
            lo = 0 if t0 is None else bisect.bisect_left(self._times, t0)
            hi = len(self._times) if t1 is None else bisect.bisect_right(self._times, t1)
            times = np.array(self._times[lo:hi], dtype=float)
            watts = np.array(self._watts[lo:hi], dtype=float).reshape(len(times), len(self._devices))
        return times, watts

    def peak_power_w(self, t0: float, t1: float | None = None) -> float | None:
        """Peak summed power of the compute devices (GPUs, else CPUs) over [t0, t1] of the
        meter's clock, counting the samples just outside it: a window shorter than the
        sampling interval may hold none of its own. Units: W."""
        t1 = self._clock() if t1 is None else t1
        _, watts = self.trace(t0 - self.interval_s, t1 + self.interval_s)
        return _peak(watts[:, self._compute_columns()])

    def _compute_columns(self) -> list[int]:
        gpus = [i for i, (_, d) in enumerate(self._devices) if d.kind == "gpu"]
        return gpus or list(range(len(self._devices)))

    def now(self) -> float:
        """The meter's clock, the one trace times use."""
        return self._clock()

    # ---- internals -----------------------------------------------------------------

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.sample()
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (a long GIL hold): skip, don't burst to catch up
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def _set_busy(self, busy: bool) -> None:
        for backend in self._backends:
            backend.set_busy(busy)

    def _read_counters(self) -> dict[str, float | None]:
        readings: dict[str, float | None] = {}
        for backend, device in self._devices:
            readings[device.key] = None
            if device.key in self._lost or not backend.has_counter(device):
                continue
            try:
                readings[device.key] = backend.read_counter_j(device)
            except EnergyUnavailable as exc:
                self._lose(device, exc)
        return readings

    def _read_power(self, backend: Backend, device: Device) -> float:
        if device.key in self._lost:
            return float("nan")
        try:
            return backend.read_power_w(device)
        except EnergyUnavailable as exc:
            self._lose(device, exc)
            return float("nan")

    def _lose(self, device: Device, exc: Exception) -> None:
        self._lost.setdefault(device.key, self._clock())
        self._warn_once(f"energy of {device.key} is no longer measured: {exc}")

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning(message)

    def _measure(self, window: _OpenWindow, t1: float, counters: dict[str, float | None]) -> Measurement:
        seconds = t1 - window.t0
        times, watts = self.trace(window.t0 - self.interval_s, t1 + self.interval_s)
        in_window = (times >= window.t0) & (times <= t1)
        readings = []
        for column, (backend, device) in enumerate(self._devices):
            readings.append(
                self._device_energy(window, t1, counters, backend, device, times, watts[:, column], in_window)
            )
        peak = _peak(watts[in_window][:, self._compute_columns()])
        fields = {b.power_field for b, _ in self._devices}
        return Measurement(
            name=window.name,
            started_at=window.wall0,
            seconds=seconds,
            devices=tuple(readings),
            peak_power_w=peak,
            power_field=fields.pop() if len(fields) == 1 else None,
            approximate=seconds < MIN_COUNTER_WINDOW_S,
        )

    def _device_energy(self, window, t1, counters, backend, device, times, watts, in_window) -> DeviceEnergy:
        lost_at = self._lost.get(device.key)
        valid = ~np.isnan(watts)
        samples = int((in_window & valid).sum())
        if lost_at is not None and lost_at <= t1:
            return DeviceEnergy(device, None, None, None, None, samples, "none")
        seconds = t1 - window.t0
        start, end = window.counters.get(device.key), counters.get(device.key)
        if start is not None and end is not None and seconds >= MIN_COUNTER_WINDOW_S:
            joules, source = end - start, backend.counter_source
        else:
            joules, source = integrate(times[valid], watts[valid], window.t0, t1), backend.power_source
        idle = self.idle_w.get(device.key)
        peak = float(watts[in_window & valid].max()) if samples else None
        return DeviceEnergy(
            device=device,
            joules=joules,
            idle_free_joules=joules - idle * seconds if idle is not None else None,
            avg_power_w=joules / seconds if seconds > 0 else None,
            peak_power_w=peak,
            samples=samples,
            source=source,
            idle_w=idle,
        )

    def _trim(self) -> None:
        """Forget samples no open window can need, past a short tail."""
        horizon = self._clock() - TRACE_TAIL_S
        if self._open:
            horizon = min(horizon, min(w.t0 for w in self._open.values()) - 2 * self.interval_s)
        cut = bisect.bisect_left(self._times, horizon)
        if cut > 1024:  # trim in chunks: deleting a list prefix costs its length
            del self._times[:cut]
            del self._watts[:cut]


def _peak(watts: np.ndarray) -> float | None:
    """The highest summed power of some sample rows (NaN: a device that did not answer)."""
    if watts.size == 0 or watts.shape[1] == 0:
        return None
    summed = watts.sum(axis=1)
    return None if np.isnan(summed).all() else float(np.nanmax(summed))


@dataclass
class WindowResult:
    measurement: Measurement | None = None


def _synchronize_cuda() -> None:
    """Let queued kernels finish before a window closes, if this process uses CUDA; torch is
    only consulted when something else already imported it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def open_backends(energy: str = "auto") -> list[Backend]:
    """Backends for `energy`: "auto" (NVML GPUs, plus RAPL CPUs when readable; RAPL alone
    without GPUs; nothing, with a warning, when neither answers), "nvml", "rapl",
    "simulated" or "none". A backend named explicitly must work: EnergyUnavailable if not."""
    from greenray.energy.nvml import NvmlBackend
    from greenray.energy.rapl import RaplBackend
    from greenray.energy.simulated import SimulatedBackend

    if energy == "none":
        return []
    if energy == "simulated":
        return [SimulatedBackend()]
    if energy == "nvml":
        return [_nonempty(NvmlBackend())]
    if energy == "rapl":
        return [RaplBackend()]
    if energy != "auto":
        raise ValueError(f"unknown energy backend {energy!r}: use auto, nvml, rapl, simulated or none")
    backends: list[Backend] = []
    for make in (NvmlBackend, RaplBackend):
        try:
            backends.append(_nonempty(make()))
        except EnergyUnavailable as exc:
            log.debug("energy backend unavailable: %s", exc)
    return backends


def _nonempty(backend: Backend) -> Backend:
    if not backend.devices():
        backend.close()
        raise EnergyUnavailable("NVML sees no GPU visible to this process")
    return backend
