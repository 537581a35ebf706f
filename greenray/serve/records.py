"""What a model replica keeps of its batches for its readers, each read off the replica's one
batch ledger (greenray.serve.ledger.BatchLedger) through a cursor of its own: a bench run's
bookkeeping (`RunRecorder`: its energy window, the batches inside it and those drained after)
and a live server's journal (`Journal`: every batch, for the driver to append to
DIR/batches.parquet). Torch-free: an ingress replica unpickles the `Answer`s it forwards."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from greenray.energy import EnergyMeter, Measurement
from greenray.serve.ledger import BatchLedger, Cursor, LedgerEntry

JOURNAL_KEEP = 100_000  # batch records a serving replica holds for the driver to take


class Answer(NamedTuple):
    """One image's answer with its batch's numbers: what the request waited for and cost."""

    label: int
    batch_id: int
    batch_size: int
    queue_s: float  # batch start minus the image's arrival at this replica
    compute_s: float  # the batch's energy window (forward and argmax)
    energy_j: float | None  # the batch's Joules over its size: this image's share
    energy_source: str


@dataclass(frozen=True)
class BatchDetail:
    """What the model replica knows of a batch besides its energy (the ledger keeps it beside
    the batch's BatchEnergy). Times are Unix seconds on the replica's clock."""

    started_s: float  # the batch left Serve's queue and reached the model
    queue_wait_max_s: float  # started_s minus the oldest request's arrival at the replica
    queue_wait_mean_s: float
    cpu_s: float  # its loop thread's CPU on it: preparing the tensor, forward, argmax
    requests: tuple[tuple[int, float], ...] = ()  # (request_id, arrival) of the numbered requests


@dataclass
class BatchRecord:
    """One batch as the replica saw it; times are Unix seconds on the replica's clock."""

    batch_id: int
    size: int
    started_s: float  # the batch left Serve's queue and reached the model
    ended_s: float  # answers computed (device synchronized)
    compute_s: float  # the batch's energy window: forward and argmax (and preprocessing, if in it)
    queue_wait_max_s: float  # started_s minus the oldest request's enqueued_s
    queue_wait_mean_s: float
    energy_j: float | None  # integrated from power samples: approximate for short batches
    idle_free_energy_j: float | None  # less the idle baseline (None without one)
    uncertainty_j: float | None  # about-95% bound on the error of energy_j
    peak_power_w: float | None  # from the samples in the batch and at its edges
    power_field: str | None
    energy_source: str
    in_run: bool  # ended inside a run window: its requests count as served


def batch_record(entry: LedgerEntry, in_run: bool) -> BatchRecord:
    measured, detail = entry.energy, entry.detail
    return BatchRecord(
        batch_id=measured.batch_id,
        size=measured.size,
        started_s=detail.started_s,
        ended_s=measured.ended_s,
        compute_s=measured.seconds,
        queue_wait_max_s=detail.queue_wait_max_s,
        queue_wait_mean_s=detail.queue_wait_mean_s,
        energy_j=measured.energy_j,
        idle_free_energy_j=measured.idle_free_energy_j,
        uncertainty_j=measured.uncertainty_j,
        peak_power_w=measured.peak_power_w,
        power_field=measured.power_field,
        energy_source=measured.energy_source,
        in_run=in_run,
    )


def _answered(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """The batches that gave answers (one whose forward failed has no detail, and no answers)."""
    return [entry for entry in entries if entry.detail is not None]


@dataclass(frozen=True)
class RunEnd:
    """What a replica measured over one bench run."""

    energy: Measurement  # the run window: counter at its edges, idle included
    served: int  # requests in batches that ended inside the window
    batches: int
    cpu_s: float = 0.0  # the replica process's CPU seconds over the window, every thread
    batch_cpu_s: float = 0.0  # of which its loop thread spent on batches (tensor, forward, argmax)


@dataclass
class _Run:
    run_id: str
    cursor: Cursor
    open: bool = True
    cpu0: float = field(default_factory=time.process_time)
    batches: list[BatchRecord] = field(default_factory=list)
    requests: dict[int, tuple[float, int]] = field(default_factory=dict)  # id -> (arrival, batch_id)

    def keep(self, entries: list[LedgerEntry]) -> None:
        for entry in entries:
            self.batches.append(batch_record(entry, in_run=self.open))
            for request_id, enqueued_s in entry.detail.requests:
                self.requests[request_id] = (enqueued_s, entry.energy.batch_id)


class RunRecorder:
    """A bench run on one model replica: its energy window (counter read, idle included:
    busy=False, only the batches inside it are work), the batches that ended inside it, then
    those of the drain after it (kept, not counted)."""

    def __init__(self, meter: EnergyMeter, ledger: BatchLedger) -> None:
        self.meter, self.ledger = meter, ledger
        self._run: _Run | None = None

    def begin(self, run_id: str) -> float:
        """Open the run's window; returns its Unix start time."""
        if self._run is not None and self._run.open:
            raise RuntimeError(f"run {self._run.run_id} is still open")
        if self._run is not None:  # a run whose records were never taken
            self._run.cursor.close()
        self._run = _Run(run_id, self.ledger.cursor())
        self.meter.begin_window(f"run-{run_id}", counter=True, busy=False)
        return time.time()

    def end(self, run_id: str) -> RunEnd:
        """Close the run's window. Its batches are the ledger's since `begin`: a batch holds the
        replica's loop until its answers are known, so this call falls between two batches."""
        window = self.meter.end_window(f"run-{run_id}")
        run = self._run
        counted = _answered(run.cursor.take()[0])
        run.keep(counted)
        run.open = False
        return RunEnd(
            window,
            served=sum(entry.energy.size for entry in counted),
            batches=len(counted),
            cpu_s=time.process_time() - run.cpu0,
            batch_cpu_s=sum(entry.detail.cpu_s for entry in counted),
        )

    def take(self) -> dict:
        """The run's batches and numbered requests (drained ones included), then forgets them."""
        run, self._run = self._run, None
        if run is None:
            return {"batches": [], "requests": {}}
        run.keep(_answered(run.cursor.take()[0]))
        run.cursor.close()
        return {"batches": [asdict(b) for b in run.batches], "requests": run.requests}


class Journal:
    """A live server's batches, from `begin` on, until the driver takes them (at most `keep`
    held: a late take counts the older ones it lost)."""

    def __init__(self, ledger: BatchLedger, keep: int = JOURNAL_KEEP) -> None:
        self.ledger, self.keep = ledger, keep
        self._cursor: Cursor | None = None

    def begin(self) -> None:
        if self._cursor is None:
            self._cursor = self.ledger.cursor(limit=self.keep)

    def take(self) -> dict:
        """The batches since the last take and how many were `dropped`, then forgets them."""
        if self._cursor is None:
            return {"batches": [], "dropped": 0}
        entries, dropped = self._cursor.take()
        batches = [asdict(batch_record(entry, in_run=True)) for entry in _answered(entries)]
        return {"batches": batches, "dropped": dropped}
