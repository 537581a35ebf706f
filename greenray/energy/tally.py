"""Running energy totals for a process that measures for days (a live server's replica): per
device, the Joules since the tally started and the recent power, from back-to-back meter windows
each closed after about `period_s`, so that no window stays open for the process's lifetime (the
meter keeps the power samples of open windows)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from greenray.energy.measurement import sum_or_none
from greenray.energy.meter import EnergyMeter

PERIOD_S = 5.0  # how long each window of a tally stays open, seconds


@dataclass(frozen=True)
class DeviceTotal:
    """One device since its tally started. Units: J, W."""

    device: str  # the device's key ("cuda:0", "cpu:0", "sim:0")
    energy_j: float | None  # idle included; None once any part of it was not measured
    power_w: float | None  # mean power over the last closed window (the open one's, until one closes)
    energy_source: str


class RunningTally:
    """Per-device Joules since it started: the closed windows' sum plus what the open one holds
    so far. Counter reads may take milliseconds on NVML: call `tick` and `totals` off an event
    loop."""

    def __init__(self, meter: EnergyMeter, period_s: float = PERIOD_S) -> None:
        self.meter, self.period_s = meter, period_s
        self._closed: dict[str, float | None] = {d.key: 0.0 for d in meter.devices}
        self._power_w: dict[str, float | None] = {}
        self._index = 0
        self._opened = time.monotonic()
        meter.begin_window(self._name(), counter=True, busy=False)

    def _name(self) -> str:
        return f"tally-{id(self)}-{self._index}"

    def due(self) -> bool:
        """Whether the open window is old enough to close (`tick` would close it)."""
        return time.monotonic() - self._opened >= self.period_s

    def tick(self) -> None:
        """Close the open window into the totals once it is `period_s` old, and open the next."""
        if not self.due():
            return
        measured = self.meter.end_window(self._name())
        self._index += 1
        self._opened = time.monotonic()
        self.meter.begin_window(self._name(), counter=True, busy=False)
        for reading in measured.devices:
            key = reading.device.key
            self._closed[key] = sum_or_none([self._closed.get(key, 0.0), reading.joules])
            self._power_w[key] = reading.avg_power_w

    def totals(self) -> list[DeviceTotal]:
        """Per device: Joules so far, recent Watts, and where they come from."""
        self.tick()
        now = self.meter.read_window(self._name())
        return [
            DeviceTotal(
                device=reading.device.key,
                energy_j=sum_or_none([self._closed.get(reading.device.key, 0.0), reading.joules]),
                power_w=self._power_w.get(reading.device.key, reading.avg_power_w),
                energy_source=reading.source,
            )
            for reading in now.devices
        ]
