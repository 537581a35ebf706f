"""The one answer to "what can be measured here?": a meter over the backend asked for, or one
sentence saying why it cannot be had and what to do instead."""

from __future__ import annotations

import socket

from greenray.energy.backend import EnergyUnavailable
from greenray.energy.meter import EnergyMeter
from greenray.energy.rules import nothing_readable


class EnergyRequestError(ValueError):
    """The energy asked for cannot be had where the work runs; the message is one sentence
    that names the fix (a command prints it and exits 2)."""


def open_meter(
    backend: str = "auto",
    *,
    interval_ms: float = 10.0,
    require: bool = False,
    quiet: bool = False,
    sampler: str = "thread",
) -> EnergyMeter:
    """A meter over `backend` (auto, nvml, rapl, simulated, none) sampling power every
    `interval_ms`, in a thread or a process of its own (`sampler`, see EnergyMeter). `require`:
    refuse when nothing is measurable. `quiet`: leave the "nothing is measurable" warning to
    the caller (a Ray worker's driver says it once for the whole job)."""
    where = socket.gethostname()
    try:
        meter = EnergyMeter.create(
            backend, interval_s=interval_ms / 1000.0, warn_if_empty=not quiet, sampler=sampler
        )
    except EnergyUnavailable as exc:
        raise EnergyRequestError(
            f"--energy {backend} is not available on {where} ({exc}); use --energy auto"
        ) from None
    if require and not meter.devices:
        meter.close()
        raise EnergyRequestError(nothing_readable(where, meter.empty_reason))
    return meter
