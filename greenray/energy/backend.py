"""What every energy backend offers the meter: its devices, a power reading and, where the
hardware keeps one, a monotonic energy counter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Where a number of Joules came from; every result row carries one of these.
ENERGY_SOURCES = ("nvml-counter", "nvml-power", "rapl", "simulated", "none")
# The backends a user may ask for (auto: NVML GPUs, plus RAPL CPUs when readable).
ENERGY_CHOICES = ("auto", "nvml", "rapl", "simulated", "none")


class EnergyUnavailable(RuntimeError):
    """A backend cannot read a device (library missing, no permission, device lost)."""


@dataclass(frozen=True)
class Device:
    """One measured device, named as this process sees it."""

    key: str  # "cuda:0" (after CUDA_VISIBLE_DEVICES), "cpu:package-0", "sim:0"
    kind: str  # "gpu" or "cpu"
    name: str  # "NVIDIA H100 80GB HBM3", "package-0", ...
    uuid: str | None = None
    index: int | None = None  # NVML index or RAPL zone number: the backend's own numbering


class Backend(Protocol):
    """The meter reads devices only through this."""

    counter_source: str  # energy_source of a window measured with the counter
    power_source: str  # energy_source of a window integrated from power samples
    power_field: str  # "instant", "average", "derived" (from a counter) or "model"

    def devices(self) -> list[Device]: ...

    def has_counter(self, device: Device) -> bool: ...

    def read_counter_j(self, device: Device) -> float:
        """Monotonic Joules since an arbitrary origin."""
        ...

    def read_power_w(self, device: Device) -> float: ...

    def model_idle_w(self, device: Device) -> float | None:
        """The idle power a modelled device draws by construction (W); None when measured."""
        ...

    def set_busy(self, busy: bool) -> None:
        """Told when work starts or stops; only a simulated backend uses it."""
        ...

    def close(self) -> None: ...
