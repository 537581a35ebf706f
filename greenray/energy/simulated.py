"""A deterministic power model for tests and GPU-less machines; everything it yields is
labelled `simulated`, never presented as a measurement."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable

from greenray.energy.backend import Device
from greenray.energy.work import work_is_modelled, work_seconds


def cpu_seconds(pid: int | None = None) -> Callable[[], float]:
    """The CPU seconds (user + system, every thread, and children waited for) that process
    `pid` (None: this one) has used so far, as a clock: it moves with the work done, not with
    how long a busy machine takes to do it."""
    if pid is None or pid == os.getpid():
        meters: dict[threading.Thread, float] = {}  # the meters' own threads: CPU seconds last seen

        def own() -> float:
            # A meter's threads wake as often on a busy machine as on a quiet one, so the longer
            # the work takes the more CPU they use: not the work's, left out where readable.
            for thread in threading.enumerate():
                if thread.name.startswith(METER_THREADS) and thread.ident is not None:
                    with contextlib.suppress(OSError, AttributeError, OverflowError):
                        meters[thread] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            return time.process_time() + children.ru_utime + children.ru_stime - sum(meters.values())

        return own
    tick = os.sysconf("SC_CLK_TCK")
    path = f"/proc/{pid}/stat"

    def other() -> float:
        with open(path, "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime

    return other


METER_THREADS = "greenray-"  # the names of an EnergyMeter's threads (greenray.energy.meter)
# Power readings closer together than this reuse the last rate: CPU time read in this process
# moves in nanoseconds, another process's (/proc) in 10 ms ticks.
MIN_RATE_S, MIN_RATE_PROC_S = 0.002, 0.05


class SimulatedBackend:
    """Devices that draw `idle_w` when nothing runs and `busy_w` while work runs.

    The meter says when work runs (`set_busy`). By default a busy device draws busy_w, so a
    window's energy is exactly idle_w x idle seconds + busy_w x busy seconds, and its counter is
    that integral: a model of wall time, for tests of the meter. With `work_pid` (what
    `--energy simulated` uses) the power above idle follows that process's CPU work instead:
    idle_w + (busy_w - idle_w) x (CPU seconds per second) while busy, so a window's idle-free
    energy is (busy_w - idle_w) x the CPU seconds of its work, the same on a quiet or a busy
    machine (a wall-time model gave 499.5 J and 401.5 J for one study at two loads). Created for
    this process under `greenray.energy.work.modelled_work()`, it follows the modelled busy
    seconds the trainable reports (`add_work`) instead of CPU seconds: a study's Joules are then
    a function of its configuration and data alone (`work_model` says which applies). Each power
    reading is that rate since the previous reading, so the samples integrate to the counter.
    `power_fn(t)` replaces the two-level model with any power curve (Watts at monotonic
    time t); give `energy_fn(t)` (its integral) too, or the counter is reported unsupported.
    """

    counter_source = "simulated"
    power_source = "simulated"
    power_field = "model"
    counter_period_s = 0.0  # the model's integral is exact
    counter_read_s = 0.0
    average_window_s = 0.0

    def __init__(
        self,
        n_devices: int = 1,
        idle_w: float = 60.0,
        busy_w: float = 250.0,
        *,
        kind: str = "gpu",
        power_fn: Callable[[float], float] | None = None,
        energy_fn: Callable[[float], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        work_pid: int | None = None,
        work: Callable[[], float] | None = None,
    ) -> None:
        if n_devices < 1:
            raise ValueError("a simulated backend needs at least one device")
        if idle_w < 0 or busy_w < 0:
            raise ValueError("simulated power cannot be negative")
        self.idle_w = idle_w
        self.busy_w = busy_w
        self._kind = kind
        self._power_fn = power_fn
        self._energy_fn = energy_fn
        self._clock = clock
        self._work_pid = work_pid
        # Seconds of work done: the clock itself (the wall-time model), the modelled work the
        # trainable reports, or CPU seconds.
        if work is None and work_pid == os.getpid() and work_is_modelled():
            work, self.work_model = work_seconds, "modelled"
        elif work is not None:
            self.work_model = "custom"
        else:
            self.work_model = "cpu" if work_pid is not None else "wall"
        self._work = work or (cpu_seconds(work_pid) if work_pid is not None else None)
        self._min_rate_s = MIN_RATE_S if work_pid in (None, os.getpid()) else MIN_RATE_PROC_S
        self._lock = threading.Lock()
        self._busy = False
        self._since = clock()
        self._work_since = self._worked()
        self._last = (self._since, self._work_since, 0.0)  # the last reading: time, work, rate
        self._banked_j = 0.0  # energy before the last busy/idle change
        self._devices = [
            Device(key=f"sim:{i}", kind=kind, name="simulated", uuid=f"SIM-{i}", index=i)
            for i in range(n_devices)
        ]

    def devices(self) -> list[Device]:
        return list(self._devices)

    def has_counter(self, device: Device) -> bool:
        return self._power_fn is None or self._energy_fn is not None

    def power_limit_w(self, device: Device) -> float | None:
        return None

    def model_idle_w(self, device: Device) -> float | None:
        """The model's idle power: the baseline is known, not measured."""
        return self.idle_w

    def spec(self) -> dict | None:
        """How a sampling process models the same devices (its power follows the busy flag
        the meter shares with it); None for a custom curve or clock, which stay in this one."""
        if self._power_fn is not None or self._clock is not time.monotonic:
            return None
        if self.work_model in ("custom", "modelled"):
            # A work clock of the caller's own, or the modelled work this process counts: the
            # meter samples in a thread here (another process could not read the clock).
            return None
        options = {"n_devices": len(self._devices), "idle_w": self.idle_w, "busy_w": self.busy_w}
        return {"backend": "simulated", "options": options | {"kind": self._kind, "work_pid": self._work_pid}}

    def set_busy(self, busy: bool) -> None:
        with self._lock:
            if busy == self._busy:
                return
            now, worked = self._clock(), self._worked()
            self._banked_j += self._energy_since(now, worked)
            self._since, self._work_since = now, worked
            self._last = (now, worked, self._last[2])
            self._busy = busy

    def read_power_w(self, device: Device) -> float:
        if self._power_fn is not None:
            return float(self._power_fn(self._clock()))
        with self._lock:
            if self._work is None or not self._busy:
                return self._level_w()
            now = self._clock()
            t, w, rate = self._last
            if now - t >= self._min_rate_s:  # else the previous rate: too short a span to divide by
                worked = self._worked()
                rate = max(worked - w, 0.0) / (now - t)
                self._last = (now, worked, rate)
            return self.idle_w + (self.busy_w - self.idle_w) * rate

    def read_counter_j(self, device: Device) -> float:
        if self._power_fn is not None:
            if self._energy_fn is None:
                raise NotImplementedError("this simulated power curve has no counter")
            return float(self._energy_fn(self._clock()))
        with self._lock:
            return self._banked_j + self._energy_since(self._clock(), self._worked())

    def close(self) -> None:
        pass

    def _worked(self) -> float:
        return self._work() if self._work is not None else self._clock()

    def _energy_since(self, now: float, worked: float) -> float:
        """The energy since the last busy/idle change, up to (`now`, `worked`)."""
        if self._work is None or not self._busy:
            return self._level_w() * (now - self._since)
        return self.idle_w * (now - self._since) + (self.busy_w - self.idle_w) * (worked - self._work_since)

    def _level_w(self) -> float:
        return self.busy_w if self._busy else self.idle_w
