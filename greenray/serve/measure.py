"""Energy for any Ray Serve deployment's batches: `measure_batches`, stacked under `@serve.batch`
on a batch method, opens an energy window per batch on the replica's own device and keeps a
record of each; `energy_report` gives what the replica measured, per batch and in total, for a
method of the deployment to return through its handle."""

from __future__ import annotations

import functools
import inspect
import itertools
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from greenray.energy import ENERGY_CHOICES, EnergyMeter, co2e_g, combined_source, open_meter, sum_or_none
from greenray.ray_metrics import record_batch

METER_ATTRIBUTE = "_greenray_meter"  # the replica's meter, on the deployment instance
LEDGER_ATTRIBUTE = "_greenray_batches"  # its batch records
KEEP = 100_000  # batch records a replica keeps (the newest); totals count every batch


@dataclass(frozen=True)
class BatchEnergy:
    """One batch as the replica measured it. Times are Unix seconds on the replica's clock;
    Joules come from the power samples over the batch (`energy_source` says from where)."""

    batch_id: int
    size: int  # items in the batch
    started_s: float
    ended_s: float
    seconds: float  # the batch's energy window
    energy_j: float | None
    uncertainty_j: float | None  # about-95% bound on the error of energy_j
    idle_free_energy_j: float | None  # None until the replica has an idle baseline
    peak_power_w: float | None  # from the samples in the batch and at its edges
    energy_source: str
    power_field: str | None
    co2e_g: float | None = None  # energy_j in kWh times the grid intensity given (None without one)

    @property
    def joules_per_item(self) -> float | None:
        return self.energy_j / self.size if self.energy_j is not None and self.size else None


@dataclass(frozen=True)
class EnergyReport:
    """What one replica's measured batches cost since it started (or since the last reset):
    totals over every batch, and the newest batch records. Batches that overlap in time
    (`max_concurrent_batches` > 1) each count the device's whole power over their span."""

    batches: tuple[BatchEnergy, ...]
    batch_count: int
    items: int
    energy_j: float | None
    idle_free_energy_j: float | None
    peak_power_w: float | None
    energy_source: str
    device: str  # the devices measured, as the replica sees them ("cuda:0"; "" for none)
    node: str
    co2e_g: float | None = None  # the batches' grams of CO2e (None without a grid intensity)

    @property
    def joules_per_item(self) -> float | None:
        return self.energy_j / self.items if self.energy_j is not None and self.items else None


class BatchLedger:
    """A replica's batch records (the newest `keep`) and running totals."""

    def __init__(self, keep: int = KEEP) -> None:
        self._records: deque[BatchEnergy] = deque(maxlen=keep)
        self._ids = itertools.count()
        self._reset()

    def _reset(self) -> None:
        self._records.clear()
        self._count = self._items = 0
        self._energy: float | None = 0.0
        self._idle_free: float | None = 0.0
        self._co2e: float | None = 0.0
        self._peak: float | None = None
        self._sources: set[str] = set()

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, record: BatchEnergy) -> None:
        self._records.append(record)
        self._count += 1
        self._items += record.size
        self._energy = sum_or_none([self._energy, record.energy_j])
        self._idle_free = sum_or_none([self._idle_free, record.idle_free_energy_j])
        self._co2e = sum_or_none([self._co2e, record.co2e_g])
        if record.peak_power_w is not None:
            self._peak = max(self._peak or 0.0, record.peak_power_w)
        self._sources.add(record.energy_source)

    @property
    def last(self) -> BatchEnergy | None:
        return self._records[-1] if self._records else None

    def report(self, meter: EnergyMeter, reset: bool = False) -> EnergyReport:
        report = EnergyReport(
            batches=tuple(self._records),
            batch_count=self._count,
            items=self._items,
            energy_j=self._energy if self._count else None,
            idle_free_energy_j=self._idle_free if self._count else None,
            peak_power_w=self._peak,
            energy_source=combined_source(self._sources),
            device=",".join(d.key for d in meter.devices),
            node=socket.gethostname(),
            co2e_g=self._co2e if self._count else None,
        )
        if reset:
            self._reset()
        return report


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
    """A batch's energy window, from the call of the batch method to its return."""

    def __init__(
        self, meter: EnergyMeter, ledger: BatchLedger, size: int, g_per_kwh: float | None = None
    ) -> None:
        self.meter, self.ledger, self.size, self.g_per_kwh = meter, ledger, size, g_per_kwh
        self.batch_id = ledger.next_id()
        self.name = f"batch-{id(ledger)}-{self.batch_id}"
        self.t0, self.started_s = meter.now(), time.time()
        # No counter reads: a batch is far shorter than the counter's step.
        meter.begin_window(self.name, counter=False)

    def close(self) -> None:
        m = self.meter.end_window(self.name)
        record = BatchEnergy(
            batch_id=self.batch_id,
            size=self.size,
            started_s=self.started_s,
            ended_s=time.time(),
            seconds=m.seconds,
            energy_j=m.joules,
            uncertainty_j=m.uncertainty_j,
            idle_free_energy_j=m.idle_free_joules,
            peak_power_w=self.meter.peak_power_w(self.t0),
            energy_source=m.energy_source,
            power_field=m.power_field,
            co2e_g=co2e_g(m.joules, self.g_per_kwh),
        )
        self.ledger.add(record)
        devices = ",".join(d.key for d in self.meter.devices)
        record_batch(m.joules, m.seconds, self.size, m.energy_source, devices)


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
    """The replica's batch records (`last` is the batch measured most recently)."""
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
