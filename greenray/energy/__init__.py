"""How greenray measures Joules. Nothing else in the package talks to NVML or RAPL, and this
package imports nothing else of greenray."""

from greenray.energy.backend import ENERGY_SOURCES, Backend, Device, EnergyUnavailable
from greenray.energy.meter import (
    DeviceEnergy,
    EnergyMeter,
    Measurement,
    WindowResult,
    integrate,
    open_backends,
)

ENERGY_CHOICES = ("auto", "nvml", "rapl", "simulated", "none")

__all__ = [
    "ENERGY_CHOICES",
    "ENERGY_SOURCES",
    "Backend",
    "Device",
    "DeviceEnergy",
    "EnergyMeter",
    "EnergyUnavailable",
    "Measurement",
    "WindowResult",
    "integrate",
    "open_backends",
]
