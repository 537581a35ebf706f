"""A model replica's one record of its batches (BatchLedger): every batch measure_batches
measured, in order, with running totals, and each reader's place in it (Cursor). A batch comes
in closed (ClosedBatch: its span's Joules, which its answers carry, are known); the ledger
measures the closed batches in full together (`settle`: the expected error, the idle-free
Joules, the peak, Ray's batch metrics) when anything reads it, once SETTLE_BATCHES wait, or
SETTLE_S after the first of them closed, on the replica's event loop between batches."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from greenray.energy import EnergyMeter, co2e_g, combined_source, sum_or_none
from greenray.energy.measurement import node_name
from greenray.energy.spans import BatchSpan, SpanEnergy
from greenray.ray_metrics import record_batch

KEEP = 100_000  # batch records a replica keeps (the newest) for its report; totals count every batch
# Closed batches are measured in full together once this many are waiting, or this long after the
# first of them closed (on the replica's event loop, between batches: Ray's batch metrics lag by
# about that), if no reader came first.
SETTLE_BATCHES, SETTLE_S = 256, 1.0


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


@dataclass(frozen=True)
class LedgerEntry:
    """One batch in a replica's ledger: its energy, and what the deployment recorded of it
    besides (`BatchLedger.describe_last`; None when it recorded nothing)."""

    energy: BatchEnergy
    detail: Any = None


@dataclass(slots=True)
class ClosedBatch:
    """A batch whose window has closed, before the ledger has its full record: what its answers
    need now (`energy_j`, from the span's close) and what the ledger needs to measure it."""

    batch_id: int
    size: int
    span: BatchSpan
    meter: EnergyMeter
    g_per_kwh: float | None
    detail: Any = None

    @property
    def seconds(self) -> float:
        return self.span.seconds

    @property
    def energy_j(self) -> float | None:
        return self.span.joules

    @property
    def energy_source(self) -> str:
        return self.span.source


@dataclass
class BatchTotals:
    """Running totals over batches. Units: s, J, W."""

    batches: int = 0
    items: int = 0
    seconds: float = 0.0  # inside batch windows
    energy_j: float | None = 0.0  # None once any batch was not measured
    idle_free_energy_j: float | None = 0.0
    co2e_g: float | None = 0.0  # None once any batch had none (no grid intensity, or not measured)
    peak_power_w: float | None = None
    sources: set[str] = field(default_factory=set)
    sizes: Counter = field(default_factory=Counter)  # items per batch -> batches

    def add(self, record: BatchEnergy) -> None:
        self.batches += 1
        self.items += record.size
        self.seconds += record.seconds
        self.energy_j = sum_or_none([self.energy_j, record.energy_j])
        self.idle_free_energy_j = sum_or_none([self.idle_free_energy_j, record.idle_free_energy_j])
        self.co2e_g = sum_or_none([self.co2e_g, record.co2e_g])
        if record.peak_power_w is not None:
            self.peak_power_w = max(self.peak_power_w or 0.0, record.peak_power_w)
        self.sources.add(record.energy_source)
        self.sizes[record.size] += 1

    def add_many(self, records: list[BatchEnergy]) -> None:
        """`add` each of `records`, summed once."""
        self.batches += len(records)
        self.items += sum(r.size for r in records)
        self.seconds += sum(r.seconds for r in records)
        self.energy_j = sum_or_none([self.energy_j, *(r.energy_j for r in records)])
        idle_free = (r.idle_free_energy_j for r in records)
        self.idle_free_energy_j = sum_or_none([self.idle_free_energy_j, *idle_free])
        self.co2e_g = sum_or_none([self.co2e_g, *(r.co2e_g for r in records)])
        peaks = [r.peak_power_w for r in records if r.peak_power_w is not None]
        if peaks:
            self.peak_power_w = max(self.peak_power_w or 0.0, *peaks)
        self.sources.update(r.energy_source for r in records)
        self.sizes.update(r.size for r in records)


class BatchLedger:
    """A replica's one record of its batches: every batch `measure_batches` measured, in order,
    with running totals since the replica started (`totals`) and since the report's last reset.
    Each reader keeps its own place (`cursor`); the ledger holds a batch while a cursor without
    a limit has not taken it, else only the newest `keep`."""

    def __init__(self, keep: int = KEEP) -> None:
        self._entries: deque[LedgerEntry] = deque()
        self._closed: list[ClosedBatch] = []  # not yet measured in full (settle)
        self._first = 0  # the index of _entries[0] among every batch added
        self._keep = keep
        self._cursors: list[Cursor] = []
        self._ids = itertools.count()
        self._totals = BatchTotals()
        self._report, self._report_from = BatchTotals(), 0

    @property
    def totals(self) -> BatchTotals:
        """Running totals over every batch since the replica started."""
        self.settle()
        return self._totals

    @property
    def end(self) -> int:
        """How many batches were ever added (the index the next one gets)."""
        self.settle()
        return self._first + len(self._entries)

    @property
    def first(self) -> int:
        """The index of the oldest batch still held."""
        self.settle()
        return self._first

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, record: BatchEnergy, detail: Any = None) -> None:
        self.settle()
        self._add(LedgerEntry(record, detail))

    def add_closed(self, batch: ClosedBatch) -> None:
        """A batch whose span has closed: measured in full later, with the others since."""
        self._closed.append(batch)
        if len(self._closed) >= SETTLE_BATCHES:
            self.settle()
        elif len(self._closed) == 1:
            # Outside an event loop (a batch method called directly) readers settle them.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(SETTLE_S, self.settle)

    def settle(self) -> None:
        """Measure the closed batches in full, in one pass, into the ledger."""
        if not self._closed:
            return
        closed, self._closed = self._closed, []
        for meter, group in _by_meter(closed):
            measured = meter.measure_spans([batch.span for batch in group])
            records = [_record(batch, m, meter.power_field) for batch, m in zip(group, measured, strict=True)]
            self._entries.extend(LedgerEntry(r, b.detail) for r, b in zip(records, group, strict=True))
            self._totals.add_many(records)
            self._report.add_many(records)
            self._trim()
            _count(records, meter)

    def _add(self, entry: LedgerEntry) -> None:
        self._entries.append(entry)
        self._totals.add(entry.energy)
        self._report.add(entry.energy)
        self._trim()

    @property
    def last(self) -> BatchEnergy | None:
        """The batch measured most recently."""
        self.settle()
        return self._entries[-1].energy if self._entries else None

    def describe_last(self, detail: Any) -> BatchEnergy | ClosedBatch:
        """The batch measured most recently, with `detail` (what the deployment knows of it
        besides its energy: queue waits, request ids) kept beside it for the ledger's readers.
        A batch method calls it right after its measured call returns, before it awaits: a
        batch not yet measured in full answers with what its close measured (its Joules,
        seconds, size, id and source)."""
        if self._closed:
            self._closed[-1].detail = detail
            return self._closed[-1]
        entry = self._entries[-1]
        self._entries[-1] = LedgerEntry(entry.energy, detail)
        return entry.energy

    def cursor(self, limit: int | None = None) -> Cursor:
        """A new reader's place at the ledger's end: it takes the batches added from now on.
        Without `limit` the ledger holds them until taken; with one, the reader loses (and
        counts) those more than `limit` behind the newest."""
        self.settle()
        cursor = Cursor(self, self.end, limit)
        self._cursors.append(cursor)
        return cursor

    def newest(self, count: int) -> list[LedgerEntry]:
        """The newest `count` entries still held, oldest first."""
        self.settle()
        return list(itertools.islice(reversed(self._entries), min(count, len(self._entries))))[::-1]

    def report(self, meter: EnergyMeter, reset: bool = False) -> EnergyReport:
        self.settle()
        totals = self._report
        held = min(self.end - self._report_from, self._keep)
        report = EnergyReport(
            batches=tuple(entry.energy for entry in self.newest(held)),
            batch_count=totals.batches,
            items=totals.items,
            energy_j=totals.energy_j if totals.batches else None,
            idle_free_energy_j=totals.idle_free_energy_j if totals.batches else None,
            peak_power_w=totals.peak_power_w,
            energy_source=combined_source(totals.sources),
            device=",".join(d.key for d in meter.devices),
            node=node_name(),
            co2e_g=totals.co2e_g if totals.batches else None,
        )
        if reset:
            self._report, self._report_from = BatchTotals(), self.end
        return report

    def _close(self, cursor: Cursor) -> None:
        self._cursors.remove(cursor)
        self._trim()

    def _trim(self) -> None:
        keep_from = self.end - self._keep
        for cursor in self._cursors:
            keep_from = min(keep_from, cursor.needs_from())
        while self._first < keep_from:
            self._entries.popleft()
            self._first += 1


class Cursor:
    """One reader's place in a BatchLedger."""

    def __init__(self, ledger: BatchLedger, position: int, limit: int | None) -> None:
        self._ledger, self._position, self.limit = ledger, position, limit

    def needs_from(self) -> int:
        """The oldest batch this reader still needs held."""
        if self.limit is None:
            return self._position
        return max(self._position, self._ledger.end - self.limit)

    def take(self) -> tuple[list[LedgerEntry], int]:
        """The batches added since the last take, oldest first, and how many of them were lost
        (beyond the limit) before this take."""
        ledger = self._ledger
        start = max(self.needs_from(), ledger.first)
        lost, self._position = start - self._position, ledger.end
        return ledger.newest(ledger.end - start), lost

    def close(self) -> None:
        """Stop reading: the ledger no longer holds batches for this reader."""
        self._ledger._close(self)


def _by_meter(closed: list[ClosedBatch]) -> list[tuple[EnergyMeter, list[ClosedBatch]]]:
    """The batches grouped by the meter that measured them (a replica has one), in order."""
    groups: dict[int, tuple[EnergyMeter, list[ClosedBatch]]] = {}
    for batch in closed:
        groups.setdefault(id(batch.meter), (batch.meter, []))[1].append(batch)
    return list(groups.values())


def _record(batch: ClosedBatch, measured: SpanEnergy, power_field: str | None) -> BatchEnergy:
    span = batch.span
    return BatchEnergy(
        batch_id=batch.batch_id,
        size=batch.size,
        started_s=span.wall0,
        ended_s=span.wall0 + span.seconds,
        seconds=span.seconds,
        energy_j=measured.joules,
        uncertainty_j=measured.uncertainty_j,
        idle_free_energy_j=measured.idle_free_joules,
        peak_power_w=measured.peak_power_w,
        energy_source=span.source,
        power_field=power_field,
        co2e_g=co2e_g(measured.joules, batch.g_per_kwh),
    )


def _count(records: list[BatchEnergy], meter: EnergyMeter) -> None:
    """Ray's metrics of the batches (greenray_serve_*): their Joules, items and power, once for
    the batches settled together (the counters' sums are the same)."""
    measured = [r for r in records if r.energy_j is not None]
    if measured:
        joules, seconds = sum(r.energy_j for r in measured), sum(r.seconds for r in measured)
        source = combined_source(r.energy_source for r in measured)
        devices = ",".join(d.key for d in meter.devices)
        record_batch(joules, seconds, sum(r.size for r in measured), source, devices)
