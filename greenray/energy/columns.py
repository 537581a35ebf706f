"""A meter's devices, one column of its power trace each: what each one is (window.Column), which
still answer (health.py), the calibration of the costly counters (calibration.py), and the
compute devices (GPUs, else CPUs) whose summed power the peaks are of."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from greenray.energy.backend import Backend, Device
from greenray.energy.calibration import Calibration
from greenray.energy.health import Health
from greenray.energy.window import DeviceState, column


class Columns:
    """The devices of a meter's backends, fixed when it opens, and their health."""

    def __init__(self, backends: list[Backend], warn: Callable[[str, str], None]) -> None:
        self.all = [column(b, d) for b in backends for d in b.devices()]
        self.health = Health([c.device.key for c in self.all], warn)
        self.calibration = [
            Calibration(c.period_s, c.limit_w, c.average_s) if c.anchored else None for c in self.all
        ]
        self.compute = [i for i, c in enumerate(self.all) if c.device.kind == "gpu"] or list(
            range(len(self.all))
        )
        self.power_sources = [c.backend.power_source for c in self.all]

    def __len__(self) -> int:
        return len(self.all)

    @property
    def devices(self) -> list[Device]:
        return [c.device for c in self.all]

    def live(self, i: int) -> bool:
        return self.health.live(i)

    def model_idle_w(self) -> dict[str, float]:
        """The idle power of the modelled devices (RAPL's model), by device key."""
        return {c.device.key: c.model_idle_w for c in self.all if c.model_idle_w is not None}

    def sources(self) -> set[str]:
        """Every energy_source a window can carry: a device's counter source where it has a
        counter, and its power source (short windows, windows without counter reads)."""
        found = set()
        for c in self.all:
            found.add(c.backend.power_source)
            if c.backend.has_counter(c.device):
                found.add(c.backend.counter_source)
        return found

    def device_sources(self) -> dict[str, str]:
        """Per device, the source of a long window's Joules (the counter where it has one)."""
        return {
            c.device.key: c.backend.counter_source
            if c.backend.has_counter(c.device)
            else c.backend.power_source
            for c in self.all
        }

    def power_field(self) -> str | None:
        """The compute devices' power field: what peaks and sample-integrated Joules are of."""
        fields = sorted({self.all[i].field for i in self.compute})
        return ",".join(fields) if fields else None

    def ratios(self) -> dict[str, tuple[float, float]]:
        """Per device with a costly counter: its counter/samples ratio and that ratio's error."""
        return {c.device.key: cal.ratio() for c, cal in zip(self.all, self.calibration, strict=True) if cal}

    def sample_ratios(self) -> list[float]:
        """Per device, the factor its sample integrals are scaled by: 1 without a costly counter."""
        return [1.0 if cal is None else cal.ratio()[0] for cal in self.calibration]

    def state(self, i: int, idle_w: dict[str, float]) -> DeviceState:
        c = self.all[i]
        return DeviceState(i, c, self.health[i], self.calibration[i], idle_w.get(c.device.key))

    def summed_row(self, row: list[float]) -> float:
        """A row's summed power of the compute devices; NaN when a live one gave no reading or
        none did (an ended device counts as absent)."""
        total, seen = 0.0, False
        for i in self.compute:
            w = row[i]
            if w == w:
                total, seen = total + w, True
            elif self.health[i].ended_at is None:
                return math.nan
        return total if seen else math.nan

    def summed(self, watts: np.ndarray) -> np.ndarray:
        """Each row's summed power of the compute devices; NaN where a live one gave no reading
        (an ended device counts as absent)."""
        part = watts[:, self.compute]
        ended = np.array([not self.live(i) for i in self.compute], dtype=bool)
        missing = np.isnan(part)
        summed = np.where(missing & ended, 0.0, part).sum(axis=1)
        summed[missing.all(axis=1)] = np.nan
        return summed
