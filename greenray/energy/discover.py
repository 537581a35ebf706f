"""Which backends to open for an `--energy` choice, and for "auto" why each one that did not
open did not (the sentence a user reads when nothing is measured)."""

from __future__ import annotations

import logging
import os

from greenray.energy.backend import Backend, EnergyUnavailable

log = logging.getLogger("greenray.energy")


def open_backends(energy: str = "auto") -> list[Backend]:
    """Backends for `energy`: "auto" (NVML GPUs, plus RAPL CPUs when readable; RAPL alone
    without GPUs; nothing, with a warning, when neither answers), "nvml", "rapl",
    "simulated" or "none". A backend named explicitly must work: EnergyUnavailable if not."""
    return open_backends_explained(energy)[0]


def open_backends_explained(energy: str = "auto") -> tuple[list[Backend], list[str]]:
    """`open_backends`, and for "auto" why each backend that did not open did not."""
    from greenray.energy.nvml import NvmlBackend
    from greenray.energy.rapl import RaplBackend
    from greenray.energy.simulated import SimulatedBackend

    if energy == "none":
        return [], []
    if energy == "simulated":
        return [SimulatedBackend(work_pid=os.getpid())], []
    if energy == "nvml":
        return [_nonempty(NvmlBackend())], []
    if energy == "rapl":
        return [RaplBackend()], []
    if energy != "auto":
        raise ValueError(f"unknown energy backend {energy!r}: use auto, nvml, rapl, simulated or none")
    backends: list[Backend] = []
    reasons: list[str] = []
    for label, make in (("NVML", NvmlBackend), ("RAPL", RaplBackend)):
        try:
            backends.append(_nonempty(make()))
        except EnergyUnavailable as exc:
            log.debug("energy backend unavailable: %s", exc)
            reasons.append(f"{label}: {exc}")
    return backends, reasons


def _nonempty(backend: Backend) -> Backend:
    if not backend.devices():
        note = getattr(backend, "visibility_note", None)
        backend.close()
        raise EnergyUnavailable(note or "NVML sees no GPU visible to this process")
    return backend
