"""Energy for any Ray Serve deployment's batches: `measure_batches`, stacked under `@serve.batch`
on a batch method, opens an energy window per batch on the replica's own device and keeps a
record of each in the replica's one `BatchLedger`; `energy_report` gives what the replica
measured, per batch and in total, for a method of the deployment to return through its handle.
Whatever else reads the batches (a bench run's bookkeeping, a live server's journal and
/metrics) reads that ledger, each reader through its own cursor.

A batch's own thread pays for its window's edges alone (greenray.energy.spans: a power reading
and the time at each, so its Joules are known for its answers at once); the rest of its record
is worked out by the ledger (greenray.serve.ledger) for all the batches closed since, in one
pass."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from greenray.energy import ENERGY_CHOICES, EnergyMeter, open_meter
from greenray.serve.ledger import KEEP, BatchLedger, ClosedBatch, EnergyReport

METER_ATTRIBUTE = "_greenray_meter"  # the replica's meter, on the deployment instance
LEDGER_ATTRIBUTE = "_greenray_batches"  # its batch records


def measure_batches(
    method: Callable | None = None,
    *,
    energy: str = "auto",
    interval_ms: float = 10.0,
    keep: int = KEEP,
    carbon_intensity: float | None = None,
):
    """Measure each call of a deployment's batch method as one batch: stack it under
    `@serve.batch`, on the method Serve calls with a list of requests.

        @serve.deployment
        class Classifier:
            @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
            @measure_batches(energy="auto")
            async def classify(self, images: list) -> list: ...

            async def energy(self) -> EnergyReport:  # handle.energy.remote().result()
                return energy_report(self)

    The replica's meter opens on its first batch (or earlier, with `replica_meter(self, ...)`,
    whose settings then apply) over the devices the replica sees: its GPU through NVML, else
    the CPU packages through RAPL, else nothing (`energy_source` "none").

    Args:
        energy: "auto", "nvml", "rapl", "simulated" (a model, labelled so) or "none".
        interval_ms: power sampling interval, milliseconds.
        keep: batch records kept (the newest); the report's totals count every batch.
        carbon_intensity: the grid's gCO2e/kWh (`greenray.energy.carbon.lookup(CODE).g_per_kwh`
            for a country or cloud region): each batch and the report gain `co2e_g`, else None.
    """
    if energy not in ENERGY_CHOICES:
        raise ValueError(f"energy must be one of {', '.join(ENERGY_CHOICES)}, not {energy!r}")
    _check_intensity(carbon_intensity)

    def decorate(fn: Callable) -> Callable:
        params = list(inspect.signature(fn).parameters)
        if not params or params[0] != "self":
            raise TypeError("measure_batches decorates a deployment's batch method: def method(self, items)")
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError("measure_batches does not measure streaming (generator) batch methods")

        def begin(self, items) -> _OpenBatch:
            meter = replica_meter(self, energy=energy, interval_ms=interval_ms)
            return _OpenBatch(meter, _ledger(self, keep), len(items), carbon_intensity)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def measured(self, items, *args, **kwargs):
                batch = begin(self, items)
                try:
                    return await fn(self, items, *args, **kwargs)
                finally:
                    batch.close()

        else:

            @functools.wraps(fn)
            def measured(self, items, *args, **kwargs):
                batch = begin(self, items)
                try:
                    return fn(self, items, *args, **kwargs)
                finally:
                    batch.close()

        return measured

    return decorate(method) if method is not None else decorate


class _OpenBatch:
    """A batch's energy window, from the call of the batch method to its return: a span of the
    meter's (greenray.energy.spans), handed to the ledger closed."""

    def __init__(
        self, meter: EnergyMeter, ledger: BatchLedger, size: int, g_per_kwh: float | None = None
    ) -> None:
        self.meter, self.ledger, self.size, self.g_per_kwh = meter, ledger, size, g_per_kwh
        self.span = meter.open_span()

    def close(self) -> None:
        span = self.meter.close_span(self.span)
        ledger = self.ledger
        ledger.add_closed(ClosedBatch(ledger.next_id(), self.size, span, self.meter, self.g_per_kwh))


def replica_meter(
    instance, *, energy: str = "auto", interval_ms: float = 10.0, require: bool = False
) -> EnergyMeter:
    """The replica's energy meter (opened and started on first use, the same one after); an
    EnergyRequestError when the backend asked for cannot be had on this node."""
    meter = getattr(instance, METER_ATTRIBUTE, None)
    if meter is None:
        meter = open_meter(energy, interval_ms=interval_ms, require=require, quiet=True).start()
        setattr(instance, METER_ATTRIBUTE, meter)
    return meter


def batch_ledger(instance) -> BatchLedger:
    """The replica's one ledger of batches (`last` is the batch measured most recently; readers
    take new batches through a `cursor` each)."""
    return _ledger(instance, KEEP)


def energy_report(instance, *, reset: bool = False) -> EnergyReport:
    """What the replica's measured batches cost since it started or since the last reset."""
    return _ledger(instance, KEEP).report(replica_meter(instance), reset=reset)


def _check_intensity(g_per_kwh: float | None) -> None:
    if g_per_kwh is not None and not (isinstance(g_per_kwh, int | float) and 0 <= g_per_kwh < float("inf")):
        raise ValueError(f"carbon_intensity must be a number of gCO2e/kWh of at least 0, not {g_per_kwh!r}")


def _ledger(instance, keep: int) -> BatchLedger:
    ledger = getattr(instance, LEDGER_ATTRIBUTE, None)
    if ledger is None:
        ledger = BatchLedger(keep)
        setattr(instance, LEDGER_ATTRIBUTE, ledger)
    return ledger
