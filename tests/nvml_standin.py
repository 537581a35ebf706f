"""A stand-in for the pynvml module whose true power is known, for testing and benchmarking the
meter without a GPU (benchmarks/meter_accuracy.py and gpu_suite.py --dry-run use it too).

What it does, as an H100 or A100 does (numbers from shared/reference/h100.md and Yang et al.,
SC'24), and where its truth differs:
- the true power is a `Load`: piecewise levels, each reached through a first-order response of
  `ramp_s` (0: a step), with an exact integral;
- the energy counter advances every `counter_period_s` (100 ms) to the true energy at that
  tick, in mJ, and one read costs `counter_read_s` (4 ms);
- the instant power field is the true power times `gain` (a sensor bias), in mW; without it,
  nvmlDeviceGetPowerUsage is the true power's moving average over `average_s` (1 s);
- faults: a counter reset (it restarts from zero) or jump, transient errors, a lost GPU, a
  read that blocks until released, and MIG instances (which NVML cannot measure on their own).

Time is a `VirtualClock` (reads advance it by their cost; deterministic) or the real clock.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_UNKNOWN = 999
NVML_FI_DEV_POWER_INSTANT = 186


class NVMLError(Exception):
    """pynvml's error: a return code in `value`."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {
            NVML_ERROR_NOT_SUPPORTED: "Not Supported",
            NVML_ERROR_NOT_FOUND: "Not Found",
            NVML_ERROR_TIMEOUT: "Timeout",
            NVML_ERROR_GPU_IS_LOST: "GPU is lost",
            NVML_ERROR_RESET_REQUIRED: "GPU requires reset",
        }.get(self.value, "Unknown Error")


# ---------------------------------------------------------------------------------- time


class VirtualClock:
    """Seconds that move only when told (or when a read spends its cost)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    spend = sleep


class RealClock:
    """time.monotonic, with reads that really take their cost."""

    def __call__(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))

    def spend(self, seconds: float) -> None:
        if seconds >= 1e-4:
            time.sleep(seconds)


# ---------------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class Segment:
    start_s: float
    level_w: float
    ramp_s: float  # time constant of the approach to level_w (0: a step)


class Load:
    """A known power curve: `segments` in time order, each approaching its level from where the
    previous one left off. Before the first segment, and after the last, its level holds."""

    def __init__(self, segments: list[Segment]) -> None:
        if not segments:
            raise ValueError("a load needs a segment")
        self.segments = segments
        self._starts = [s.start_s for s in segments]
        self._entry_w = [segments[0].level_w]  # the power at each segment's start
        self._entry_j = [0.0]  # the energy from the first segment's start to each segment's start
        for a, b in zip(segments, segments[1:], strict=False):
            length = b.start_s - a.start_s
            self._entry_j.append(self._entry_j[-1] + self._part_j(a, self._entry_w[-1], length))
            self._entry_w.append(self._power_in(a, self._entry_w[-1], length))
        self._zero_j = 0.0
        self._zero_j = self._from_first(0.0)

    def append(self, segment: Segment) -> None:
        """Extend the curve from `segment.start_s` on (not before the last segment's start):
        a load that follows work as it happens (gpu_suite.py --dry-run)."""
        last = self.segments[-1]
        if segment.start_s < last.start_s:
            raise ValueError("segments must come in time order")
        length = segment.start_s - last.start_s
        self._entry_j.append(self._entry_j[-1] + self._part_j(last, self._entry_w[-1], length))
        self._entry_w.append(self._power_in(last, self._entry_w[-1], length))
        self.segments.append(segment)
        self._starts.append(segment.start_s)

    @staticmethod
    def _power_in(s: Segment, entry_w: float, dt: float) -> float:
        if s.ramp_s <= 0:
            return s.level_w
        return s.level_w + (entry_w - s.level_w) * math.exp(-dt / s.ramp_s)

    @staticmethod
    def _part_j(s: Segment, entry_w: float, dt: float) -> float:
        if s.ramp_s <= 0:
            return s.level_w * dt
        return s.level_w * dt + (entry_w - s.level_w) * s.ramp_s * (1 - math.exp(-dt / s.ramp_s))

    def _locate(self, t: float) -> int:
        return max(bisect.bisect_right(self._starts, t) - 1, 0)

    def power_w(self, t: float) -> float:
        i = self._locate(t)
        s = self.segments[i]
        return self._power_in(s, self._entry_w[i], max(t - s.start_s, 0.0))

    def energy_j(self, t: float) -> float:
        """Joules from time 0 to t (negative before 0)."""
        return self._from_first(t) - self._zero_j

    def _from_first(self, t: float) -> float:
        i = self._locate(t)
        s = self.segments[i]
        if t < s.start_s:
            return s.level_w * (t - s.start_s)
        return self._entry_j[i] + self._part_j(s, self._entry_w[i], t - s.start_s)

    def between_j(self, t0: float, t1: float) -> float:
        return self.energy_j(t1) - self.energy_j(t0)

    @classmethod
    def steady(cls, watts: float) -> Load:
        return cls([Segment(-1e4, watts, 0.0)])

    @classmethod
    def bursty(
        cls,
        seconds: float,
        *,
        seed: int = 0,
        idle_w: float = 70.0,
        busy_w: float = 300.0,
        mean_w: float = 135.0,
        burst_s: tuple[float, float] = (0.03, 0.3),
        ramp_s: float = 0.0,
        start_s: float = 0.0,
    ) -> Load:
        """Bursts at `busy_w` of uniform length in `burst_s`, gaps at `idle_w` of exponential
        length chosen so that the mean power is about `mean_w` (135 W, 300 W peaks: the audit's
        load); `ramp_s` smooths every change."""
        rng = random.Random(seed)
        duty = (mean_w - idle_w) / (busy_w - idle_w)
        mean_burst = sum(burst_s) / 2
        mean_gap = mean_burst * (1 - duty) / duty
        segments = [Segment(-1e4, idle_w, 0.0)]
        t = start_s
        while t < start_s + seconds:
            segments.append(Segment(t, busy_w, ramp_s))
            t += rng.uniform(*burst_s)
            segments.append(Segment(t, idle_w, ramp_s))
            t += rng.expovariate(1 / mean_gap)
        return cls(segments)

    @classmethod
    def cooling(cls, *, busy_w: float, idle_w: float, until_s: float, decay_s: float) -> Load:
        """Busy until `until_s`, then relaxing to `idle_w` with time constant `decay_s`: a GPU
        just out of work."""
        return cls([Segment(-1e4, busy_w, 0.0), Segment(until_s, idle_w, decay_s)])


# ---------------------------------------------------------------------------------- devices


@dataclass
class StandInGpu:
    uuid: str
    load: Load
    clock: Callable[[], float]
    name: str = "Stand-in H100"
    counter: bool = True
    instant: bool = True
    gain: float = 1.0  # the power sensor's bias: readings are true power x gain
    average_s: float = 1.0
    counter_period_s: float = 0.1
    counter_phase_s: float = 0.037
    counter_read_s: float = 0.004
    power_read_s: float = 2.3e-6
    limit_w: float = 700.0
    origin_j: float = 5000.0
    mig_uuids: tuple[str, ...] = ()
    lost: bool = False
    fail: dict[str, int] = field(default_factory=dict)  # "power"/"counter" -> failures to come
    fail_code: int = NVML_ERROR_UNKNOWN
    _resets: list[tuple[float, float]] = field(default_factory=list)  # (at, new origin J)
    _gate: dict[str, threading.Event] = field(default_factory=dict)
    entered: threading.Event = field(default_factory=threading.Event)

    def tick(self, t: float) -> float:
        """The last time the counter advanced at or before t."""
        p, phase = self.counter_period_s, self.counter_phase_s
        return phase + math.floor((t - phase) / p) * p if p > 0 else t

    def counter_j(self, t: float) -> float:
        tick = self.tick(t)
        value = self.origin_j + self.load.energy_j(tick)
        for at, to_j in self._resets:
            if tick >= at:
                value = to_j + self.load.between_j(at, tick)
        return value

    def reset_counter(self, at_s: float, to_j: float = 0.0) -> None:
        """From `at_s` on, the counter restarts at `to_j` (a GPU reset or driver reload; a large
        `to_j` is a jump)."""
        self._resets.append((at_s, to_j))

    def block_next(self, kind: str) -> threading.Event:
        """The next `kind` read ("power" or "counter") blocks until the returned event is set;
        `entered` is set once it blocks."""
        gate = threading.Event()
        self._gate[kind] = gate
        self.entered.clear()
        return gate

    def enter(self, kind: str) -> None:
        """What every read goes through: a blocked read, an injected failure, a lost GPU."""
        gate = self._gate.pop(kind, None)
        if gate is not None:
            self.entered.set()
            gate.wait()
        if self.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if self.fail.get(kind, 0) > 0:
            self.fail[kind] -= 1
            raise NVMLError(self.fail_code)

    def true_j(self, t0: float, t1: float) -> float:
        return self.load.between_j(t0, t1)


@dataclass
class MigInstance:
    parent: StandInGpu
    uuid: str
    profile: str = "1g.10gb"


class StandInNvml:
    """The pynvml functions greenray calls, over `gpus`. `calls` counts reads by kind."""

    NVMLError = NVMLError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_RESET_REQUIRED = NVML_ERROR_RESET_REQUIRED
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT

    def __init__(self, gpus: list[StandInGpu], clock=None) -> None:
        self.gpus = gpus
        self.clock = clock if clock is not None else VirtualClock()
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] = self.calls.get(kind, 0) + 1

    def _spend(self, gpu: StandInGpu, seconds: float) -> float:
        """Spend a read's cost; the value is taken half-way through it."""
        spend = getattr(self.clock, "spend", None)
        if spend is not None:
            spend(seconds / 2)
        t = gpu.clock()
        if spend is not None:
            spend(seconds / 2)
        return t

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int):
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle) -> str:
        if isinstance(handle, MigInstance):
            return f"{handle.parent.name} MIG {handle.profile}"
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu) -> int:
        self._count("counter")
        if isinstance(gpu, MigInstance) or not gpu.counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        gpu.enter("counter")
        t = self._spend(gpu, gpu.counter_read_s)
        return int(1000 * gpu.counter_j(t))

    def nvmlDeviceGetPowerUsage(self, gpu) -> int:
        self._count("power")
        if isinstance(gpu, MigInstance):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        gpu.enter("power")
        t = self._spend(gpu, gpu.power_read_s)
        average = gpu.load.between_j(t - gpu.average_s, t) / gpu.average_s
        return int(1000 * gpu.gain * average)

    def nvmlDeviceGetFieldValues(self, gpu, field_ids: list[int]):
        self._count("field")
        if isinstance(gpu, MigInstance):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        gpu.enter("power")
        t = self._spend(gpu, gpu.power_read_s)
        ok = gpu.instant and field_ids == [NVML_FI_DEV_POWER_INSTANT]
        value = SimpleNamespace(uiVal=int(1000 * gpu.gain * gpu.load.power_w(t)))
        return [
            SimpleNamespace(
                nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED,
                value=value,
                timestamp=int(t * 1e6),
            )
        ]

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu) -> int:
        return int(gpu.limit_w * 1000)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "stand-in"

    def nvmlDeviceGetMigMode(self, gpu) -> list[int]:
        mode = 1 if gpu.mig_uuids else 0
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, gpu) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu, index: int) -> MigInstance:
        if index >= len(gpu.mig_uuids):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return MigInstance(gpu, gpu.mig_uuids[index])


def standin(
    n: int = 1, *, load: Load | None = None, clock=None, **gpu_kwargs
) -> tuple[StandInNvml, list[StandInGpu]]:
    """A stand-in NVML over `n` GPUs with the same kind of load (each its own seed)."""
    clock = clock if clock is not None else VirtualClock()
    gpus = [
        StandInGpu(
            uuid=f"GPU-{i:08x}-stand-in",
            load=load if load is not None else Load.bursty(120.0, seed=i),
            clock=clock,
            **gpu_kwargs,
        )
        for i in range(n)
    ]
    return StandInNvml(gpus, clock), gpus


# ---------------------------------------------------------------------------------- driving


class Driver:
    """Plays a meter's two background threads on a VirtualClock, in time order: a power sample
    every `interval_s` (plus up to `jitter_s`, as a thread's wake-ups drift) and a counter read
    every `anchor_s`. Deterministic for a given seed."""

    def __init__(self, meter, clock: VirtualClock, *, interval_s=0.01, anchor_s=1.0, jitter_s=0.0, seed=0):
        self.meter, self.clock = meter, clock
        self.interval_s, self.anchor_s, self.jitter_s = interval_s, anchor_s, jitter_s
        self._rng = random.Random(seed)
        self._next_sample = clock()
        self._next_anchor = clock() + anchor_s / 2

    def run_to(self, t: float) -> None:
        while True:
            due = min(self._next_sample, self._next_anchor)
            if due > t:
                break
            self.clock.t = max(self.clock.t, due)
            if due == self._next_anchor:
                getattr(self.meter, "anchor", lambda: None)()  # a meter without a counter reader
                self._next_anchor += self.anchor_s
            else:
                self.meter.sample()
                self._next_sample += self.interval_s + self._rng.uniform(0.0, self.jitter_s)
        self.clock.t = max(self.clock.t, t)

    def run_for(self, seconds: float) -> None:
        self.run_to(self.clock() + seconds)
