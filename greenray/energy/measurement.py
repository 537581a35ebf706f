"""What a window of work cost: Joules per device, their sum over the compute devices, where
the Joules came from (one rule, whatever mix of devices, replicas or batches is combined), and
the flat energy columns every result row carries."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from greenray.energy.backend import Device

SIMULATED, UNMEASURED = "simulated", "none"


def combined_source(sources: Iterable[str]) -> str:
    """The energy_source of Joules summed from parts with these sources: `none` if any part
    was not measured, `simulated` if any part was modelled (never passed off as measured),
    else the part's own, or `nvml-power` for a mix (name the less precise one)."""
    kinds = set(sources)
    if not kinds or UNMEASURED in kinds:
        return UNMEASURED
    if SIMULATED in kinds:
        return SIMULATED
    return kinds.pop() if len(kinds) == 1 else "nvml-power"


def sum_or_none(values: Iterable[float | None]) -> float | None:
    """The sum, or None when there is nothing to add or a part is unknown."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))


@dataclass(frozen=True)
class DeviceEnergy:
    """One device over one window. Units: J, W."""

    device: Device
    joules: float | None
    idle_free_joules: float | None  # joules less idle_w x seconds
    avg_power_w: float | None
    peak_power_w: float | None
    samples: int
    source: str
    idle_w: float | None = None  # the idle baseline subtracted


@dataclass(frozen=True)
class Measurement:
    """What a window yields. `joules` is the energy of the compute devices: the GPUs when the
    meter sees any, else the CPU packages; `cpu_joules` is the CPUs' beside GPUs."""

    name: str
    started_at: float  # Unix time
    seconds: float
    devices: tuple[DeviceEnergy, ...]
    peak_power_w: float | None  # peak of the compute devices' summed power
    power_field: str | None
    approximate: bool
    node: str = field(default_factory=socket.gethostname)

    @property
    def compute(self) -> tuple[DeviceEnergy, ...]:
        gpus = tuple(d for d in self.devices if d.device.kind == "gpu")
        return gpus or self.devices

    @property
    def joules(self) -> float | None:
        return sum_or_none(d.joules for d in self.compute)

    @property
    def idle_free_joules(self) -> float | None:
        return sum_or_none(d.idle_free_joules for d in self.compute)

    @property
    def idle_w(self) -> float | None:
        """The compute devices' idle baseline, as idle_free_joules subtracted it."""
        return sum_or_none(d.idle_w for d in self.compute)

    @property
    def cpu_joules(self) -> float | None:
        cpus = [d for d in self.devices if d.device.kind == "cpu"]
        if not cpus or cpus == list(self.compute):
            return None
        return sum_or_none(d.joules for d in cpus)

    @property
    def avg_power_w(self) -> float | None:
        joules = self.joules
        return joules / self.seconds if joules is not None and self.seconds > 0 else None

    @property
    def energy_source(self) -> str:
        return combined_source(d.source for d in self.compute)

    def to_row(self) -> dict:
        """The flat energy columns every result row carries (greenray.results.schema)."""
        return {
            "seconds": self.seconds,
            "energy_j": self.joules,
            "idle_free_energy_j": self.idle_free_joules,
            "cpu_energy_j": self.cpu_joules,
            "avg_power_w": self.avg_power_w,
            "peak_power_w": self.peak_power_w,
            "energy_source": self.energy_source,
            "power_field": self.power_field,
            "energy_approximate": self.approximate,
            "device": ",".join(d.device.key for d in self.compute),
            "device_name": ",".join(sorted({d.device.name for d in self.compute})),
            "device_uuid": ",".join(d.device.uuid or "" for d in self.compute),
            "node": self.node,
        }

    def to_dict(self) -> dict:
        """Everything, JSON-ready."""
        out = asdict(self)
        out.update(
            joules=self.joules,
            idle_free_joules=self.idle_free_joules,
            cpu_joules=self.cpu_joules,
            avg_power_w=self.avg_power_w,
            energy_source=self.energy_source,
        )
        return out


def combine(measurements: list[Measurement], name: str | None = None) -> Measurement:
    """One measurement from windows on several devices or replicas (possibly several nodes)
    over the same span of work: Joules add up, it lasts as long as the longest window, and
    its peak is the highest part's (their power samples are not aligned, so not summed)."""
    if not measurements:
        raise ValueError("nothing to combine")
    if len(measurements) == 1:
        return measurements[0]
    peaks = [m.peak_power_w for m in measurements if m.peak_power_w is not None]
    fields = sorted({str(m.power_field) for m in measurements})
    return Measurement(
        name=name or measurements[0].name,
        started_at=min(m.started_at for m in measurements),
        seconds=max(m.seconds for m in measurements),
        devices=tuple(d for m in measurements for d in m.devices),
        peak_power_w=max(peaks) if peaks else None,
        power_field=fields[0] if len(fields) == 1 else ",".join(fields),
        approximate=any(m.approximate for m in measurements),
        node=",".join(sorted({m.node for m in measurements})),
    )
