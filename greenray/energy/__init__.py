"""How greenray measures Joules. Nothing else in the package talks to NVML or RAPL, and this
package imports nothing else of greenray."""

from greenray.energy.backend import (
    ENERGY_CHOICES,
    ENERGY_SOURCES,
    Backend,
    Device,
    DeviceLost,
    EnergyUnavailable,
)
from greenray.energy.discover import open_backends, open_backends_explained
from greenray.energy.idle import IdleStats
from greenray.energy.measurement import (
    DeviceEnergy,
    Measurement,
    combine,
    combined_source,
    sum_or_none,
)
from greenray.energy.meter import EnergyMeter, WindowResult, integrate
from greenray.energy.open import EnergyRequestError, open_meter

__all__ = [
    "ENERGY_CHOICES",
    "ENERGY_SOURCES",
    "Backend",
    "Device",
    "DeviceEnergy",
    "DeviceLost",
    "EnergyMeter",
    "EnergyRequestError",
    "EnergyUnavailable",
    "IdleStats",
    "Measurement",
    "WindowResult",
    "combine",
    "combined_source",
    "integrate",
    "open_backends",
    "open_backends_explained",
    "open_meter",
    "sum_or_none",
]
