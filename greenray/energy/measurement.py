"""What a window of work cost: Joules per device, their sum over the compute devices, where
the Joules came from (one rule, whatever mix of devices, replicas or batches is combined), how
far off they may be, and the flat energy columns every result row carries."""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from greenray.energy.backend import Device
from greenray.energy.carbon import co2e_g

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


@functools.cache
def node_name() -> str:
    """This machine's host name (asked once: a system call per measurement adds up)."""
    return socket.gethostname()


@dataclass(frozen=True)
class DeviceEnergy:
    """One device over one window. Units: J, W, s."""

    device: Device
    joules: float | None  # None: nothing of this window was measured on it
    idle_free_joules: float | None  # joules less idle_w x seconds
    avg_power_w: float | None
    peak_power_w: float | None  # the highest reading of `power_field` (a 1 s average is no peak)
    samples: int
    source: str
    idle_w: float | None = None  # the idle baseline subtracted
    uncertainty_j: float | None = None  # about-95% bound on the error of `joules`
    partial: bool = False  # the device stopped answering: joules are until then
    power_field: str | None = None  # what its samples and peak are: instant, average, derived, model
    seconds: float | None = None  # the span its joules cover (shorter than the window's if partial)
    note: str = ""  # a fault the number survived (counter reset, lost GPU, shared GPU), in words


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
    approximate: bool  # its expected error is above 1% of its Joules
    node: str = field(default_factory=node_name)
    clock_start: float | None = None  # the meter's clock (EnergyMeter.now, trace times) at the start

    @property
    def compute(self) -> tuple[DeviceEnergy, ...]:
        return _compute(self.devices)

    @property
    def measured(self) -> tuple[DeviceEnergy, ...]:
        """The compute devices that measured something of this window."""
        return _measured(self.devices)

    @property
    def joules(self) -> float | None:
        """What the compute devices measured; None when none did. A device that stopped
        answering adds what it measured until then (see `energy_partial`)."""
        return sum_or_none(d.joules for d in self.measured)

    @property
    def idle_free_joules(self) -> float | None:
        return sum_or_none(d.idle_free_joules for d in self.measured)

    @property
    def idle_w(self) -> float | None:
        """The compute devices' idle baseline, as idle_free_joules subtracted it."""
        return sum_or_none(d.idle_w for d in self.measured)

    @property
    def uncertainty_j(self) -> float | None:
        """About-95% bound on the error of `joules` (devices err independently: root sum of
        squares); None when unknown."""
        return _uncertainty_j(self.measured)

    @property
    def energy_partial(self) -> bool:
        """Some compute device measured only part of the window, or none of it."""
        return any(d.partial or d.joules is None for d in self.compute) and bool(self.measured)

    @property
    def peak_power_field(self) -> str | None:
        """The power field `peak_power_w` is the highest reading of ("average": a 1 s average,
        not a peak)."""
        return self.power_field if self.peak_power_w is not None else None

    @property
    def note(self) -> str:
        """Every device's note, once each."""
        return "; ".join(dict.fromkeys(d.note for d in self.devices if d.note))

    @property
    def device_shared(self) -> bool:
        """A compute device is shared with work outside this window (a MIG instance's GPU)."""
        return any(d.device.shared for d in self.compute)

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
        """The source of `joules` (see combined_source); `none` when nothing was measured."""
        return combined_source(d.source for d in self.measured)

    def to_row(self, g_per_kwh: float | None = None) -> dict:
        """The flat energy columns every result row carries (greenray.results.schema);
        `co2e_g` is counted at the grid intensity `g_per_kwh` (None without one)."""
        return {
            "seconds": self.seconds,
            "energy_j": self.joules,
            "co2e_g": co2e_g(self.joules, g_per_kwh),
            "idle_free_energy_j": self.idle_free_joules,
            "cpu_energy_j": self.cpu_joules,
            "avg_power_w": self.avg_power_w,
            "peak_power_w": self.peak_power_w,
            "energy_source": self.energy_source,
            "power_field": self.power_field,
            "energy_approximate": self.approximate,
            "uncertainty_j": self.uncertainty_j,
            "energy_partial": self.energy_partial,
            "peak_power_field": self.peak_power_field,
            "energy_note": self.note,
            "device_shared": self.device_shared,
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
            uncertainty_j=self.uncertainty_j,
            energy_partial=self.energy_partial,
            peak_power_field=self.peak_power_field,
            note=self.note,
            device_shared=self.device_shared,
        )
        return out


def is_approximate(devices: tuple[DeviceEnergy, ...], rel: float) -> bool:
    """Whether a window over `devices` errs by more than `rel` of its Joules (expected error)."""
    measured = _measured(devices)
    joules, error = sum_or_none(d.joules for d in measured), _uncertainty_j(measured)
    return joules is not None and error is not None and error > rel * abs(joules)


def _compute(devices: tuple[DeviceEnergy, ...]) -> tuple[DeviceEnergy, ...]:
    gpus = tuple(d for d in devices if d.device.kind == "gpu")
    return gpus or devices


def _measured(devices: tuple[DeviceEnergy, ...]) -> tuple[DeviceEnergy, ...]:
    return tuple(d for d in _compute(devices) if d.joules is not None)


def _uncertainty_j(measured: tuple[DeviceEnergy, ...]) -> float | None:
    parts = [d.uncertainty_j for d in measured]
    if not parts or any(u is None for u in parts):
        return None
    return math.sqrt(sum(u * u for u in parts))


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
