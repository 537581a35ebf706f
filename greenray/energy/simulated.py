"""A deterministic power model for tests and GPU-less machines; everything it yields is
labelled `simulated`, never presented as a measurement."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from greenray.energy.backend import Device


class SimulatedBackend:
    """Devices that draw `idle_w` when nothing runs and `busy_w` while work runs.

    The meter says when work runs (`set_busy`), so the energy of a window is exactly
    idle_w x idle seconds + busy_w x busy seconds, and its counter is that integral.
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
        self._lock = threading.Lock()
        self._busy = False
        self._since = clock()
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
        options = {"n_devices": len(self._devices), "idle_w": self.idle_w, "busy_w": self.busy_w}
        return {"backend": "simulated", "options": options | {"kind": self._kind}}

    def set_busy(self, busy: bool) -> None:
        with self._lock:
            if busy == self._busy:
                return
            now = self._clock()
            self._banked_j += self._level_w() * (now - self._since)
            self._since = now
            self._busy = busy

    def read_power_w(self, device: Device) -> float:
        if self._power_fn is not None:
            return float(self._power_fn(self._clock()))
        with self._lock:
            return self._level_w()

    def read_counter_j(self, device: Device) -> float:
        if self._power_fn is not None:
            if self._energy_fn is None:
                raise NotImplementedError("this simulated power curve has no counter")
            return float(self._energy_fn(self._clock()))
        with self._lock:
            return self._banked_j + self._level_w() * (self._clock() - self._since)

    def close(self) -> None:
        pass

    def _level_w(self) -> float:
        return self.busy_w if self._busy else self.idle_w
