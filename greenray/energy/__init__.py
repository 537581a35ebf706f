"""How greenray measures Joules. Nothing else in the package talks to NVML or RAPL, and this
package imports nothing else of greenray."""

import importlib
from typing import Any

# Loaded on first use (PEP 562, as greenray.lazy does; not imported: this package imports
# nothing else of greenray), so the sampling process (sampler.py) imports the backends alone,
# without numpy and the meter, and starts in a fifth of the time.
_PUBLIC = {
    **dict.fromkeys(
        ("ENERGY_CHOICES", "ENERGY_SOURCES", "Backend", "Device", "DeviceLost", "EnergyUnavailable"),
        "greenray.energy.backend",
    ),
    **dict.fromkeys(("open_backends", "open_backends_explained"), "greenray.energy.discover"),
    "IdleStats": "greenray.energy.idle",
    **dict.fromkeys(("add_work", "modelled_work", "work_seconds"), "greenray.energy.work"),
    **dict.fromkeys(("DeviceTotal", "RunningTally"), "greenray.energy.tally"),
    **dict.fromkeys(("GridIntensity", "UnknownRegion", "co2e_g"), "greenray.energy.carbon"),
    **dict.fromkeys(
        ("DeviceEnergy", "Measurement", "combine", "combined_source", "sum_or_none"),
        "greenray.energy.measurement",
    ),
    **dict.fromkeys(("EnergyMeter", "WindowResult"), "greenray.energy.meter"),
    "integrate": "greenray.energy.trace",
    **dict.fromkeys(("EnergyRequestError", "open_meter"), "greenray.energy.open"),
    **dict.fromkeys(
        (
            "PowerSince",
            "Tally",
            "counted_joules",
            "counted_key",
            "idle_known",
            "nothing_readable",
            "nothing_to_count",
            "rows_key",
        ),
        "greenray.energy.rules",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'greenray.energy' has no attribute {name!r}")


__all__ = sorted(_PUBLIC)
