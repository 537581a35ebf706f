"""What every energy backend offers the meter: its devices, a power reading and, where the
hardware keeps one, a monotonic energy counter, with the facts the meter needs to judge them
(how often the counter moves, what a read costs, the power limit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Where a number of Joules came from; every result row carries one of these.
ENERGY_SOURCES = ("nvml-counter", "nvml-power", "rapl", "simulated", "none")
# The backends a user may ask for (auto: NVML GPUs, plus RAPL CPUs when readable).
ENERGY_CHOICES = ("auto", "nvml", "rapl", "simulated", "none")


class EnergyUnavailable(RuntimeError):
    """A backend cannot read a device (library missing, no permission, device lost). Raised by
    a read, it may be transient: the meter retries until the device is lost or keeps failing."""


class DeviceLost(EnergyUnavailable):
    """The device is gone for this process (NVML: GPU lost, or reset required): no retry."""


@dataclass(frozen=True)
class Device:
    """One measured device, named as this process sees it."""

    key: str  # "cuda:0" (after CUDA_VISIBLE_DEVICES), "cpu:package-0", "sim:0"
    kind: str  # "gpu" or "cpu"
    name: str  # "NVIDIA H100 80GB HBM3", "package-0", ...
    uuid: str | None = None  # of the device whose energy is read (a MIG instance's parent GPU)
    index: int | None = None  # NVML index or RAPL zone number: the backend's own numbering
    shared: bool = False  # its energy is a whole device that others use too (a MIG instance)
    mig_uuid: str | None = None  # the MIG instance this process was given, when it was one


class Backend(Protocol):
    """The meter reads devices only through this. Every read may raise EnergyUnavailable
    (transient) or DeviceLost (final). The meter reads the optional facts below with getattr,
    so a backend without them is judged conservatively (as an NVML GPU would be)."""

    counter_source: str  # energy_source of a window measured with the counter
    power_source: str  # energy_source of a window integrated from power samples
    power_field: str  # "instant", "average", "derived" (from a counter) or "model"
    counter_period_s: float  # how often the counter moves: each edge read errs up to P x this
    counter_read_s: float  # what one counter read costs; costly counters are not read at edges
    average_window_s: float  # for power_field "average": the span the reading averages over

    def devices(self) -> list[Device]: ...

    def has_counter(self, device: Device) -> bool: ...

    def read_counter_j(self, device: Device) -> float:
        """Monotonic Joules since an arbitrary origin (a GPU reset or driver reload may
        restart it: the meter checks)."""
        ...

    def read_power_w(self, device: Device) -> float: ...

    def power_limit_w(self, device: Device) -> float | None:
        """The most the device can draw (W), None when unknown."""
        ...

    def model_idle_w(self, device: Device) -> float | None:
        """The idle power a modelled device draws by construction (W); None when measured."""
        ...

    def set_busy(self, busy: bool) -> None:
        """Told when work starts or stops; only a simulated backend uses it."""
        ...

    def spec(self) -> dict | None:
        """Optional: how another process opens the same devices ({"backend": name, "options":
        keyword arguments}), for a sampler in a process of its own; None when it cannot (an
        injected library, a custom clock)."""
        ...

    def close(self) -> None: ...
