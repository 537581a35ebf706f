"""greenray on Ray Serve: energy for any deployment's batches (`measure_batches`, `EnergyReport`),
the study's model deployment built on it, batching policies, load generation, and the bench.

The public names load on first use, so that light modules (the load generator) can be imported
without Ray Serve."""

from __future__ import annotations

from greenray.lazy import exports

_PUBLIC = {
    "measure_batches": "greenray.serve.measure",
    "energy_report": "greenray.serve.measure",
    "replica_meter": "greenray.serve.measure",
    "batch_ledger": "greenray.serve.measure",
    "EnergyReport": "greenray.serve.ledger",
    "BatchEnergy": "greenray.serve.ledger",
}

__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
