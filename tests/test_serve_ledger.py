"""A model replica's one batch ledger and its readers, without Ray: each reader takes the batches
added since its last take through a cursor of its own (a bench run's recorder holds them all, a
server's journal the newest few and counts what it lost), /metrics reads the totals, and the
device tally adds back-to-back windows (simulated backend: 60 W idle)."""

import time

import pytest

from greenray.config import BatchPolicy
from greenray.energy import RunningTally, open_meter
from greenray.serve.ledger import BatchEnergy, BatchLedger
from greenray.serve.metrics import replica_stats
from greenray.serve.records import BatchDetail, Journal, RunRecorder


def add(ledger: BatchLedger, size: int = 2, request_ids=(), detail: bool = True) -> BatchEnergy:
    batch_id = ledger.next_id()
    ledger.add(BatchEnergy(batch_id, size, 10.0, 10.5, 0.5, 1.0, 0.01, 0.7, 250.0, "simulated", "power"))
    if detail:
        requests = tuple((r, 9.0) for r in request_ids)
        return ledger.describe_last(BatchDetail(10.0, 1.0, 0.5, 0.25, requests))
    return ledger.last


def test_each_reader_takes_what_came_since_its_last_take():
    ledger = BatchLedger(keep=2)
    add(ledger)
    first, late = ledger.cursor(), ledger.cursor(limit=2)
    ids = [add(ledger).batch_id for _ in range(4)]
    entries, lost = first.take()
    assert [e.energy.batch_id for e in entries] == ids and lost == 0  # held until taken
    entries, lost = late.take()
    assert [e.energy.batch_id for e in entries] == ids[-2:] and lost == 2
    assert first.take() == ([], 0)
    first.close()
    add(ledger)
    assert ledger.end - ledger.first == 2  # no reader holds more than the newest `keep`
    assert ledger.totals.batches == 6 and ledger.totals.items == 12 and ledger.totals.sizes == {2: 6}


def test_a_run_counts_its_batches_and_keeps_the_drained_ones_apart():
    ledger = BatchLedger()
    with open_meter("simulated", interval_ms=5.0) as meter:
        runs = RunRecorder(meter, ledger)
        add(ledger, request_ids=(99,))  # before the run: not its own
        runs.begin("r")
        add(ledger, size=3, request_ids=(0, 1, 2))
        add(ledger, size=1, detail=False)  # its forward failed: no answers, not served
        add(ledger, size=2, request_ids=(3,))
        end = runs.end("r")
        add(ledger, size=1, request_ids=(4,))  # the drain
        taken = runs.take()
    assert end.served == 5 and end.batches == 2 and end.batch_cpu_s == pytest.approx(0.5)
    assert end.energy.energy_source == "simulated"
    assert [(b["size"], b["in_run"]) for b in taken["batches"]] == [(3, True), (2, True), (1, False)]
    assert sorted(taken["requests"]) == [0, 1, 2, 3, 4] and taken["requests"][4] == (9.0, 4)
    assert runs.take() == {"batches": [], "requests": {}}


def test_the_journal_counts_what_a_late_take_lost_and_metrics_count_every_batch():
    ledger = BatchLedger()
    journal = Journal(ledger, keep=3)
    assert journal.take() == {"batches": [], "dropped": 0}  # before the server opens
    journal.begin()
    for size in (1, 2, 3, 5, 40):
        add(ledger, size=size)
    taken = journal.take()
    assert [b["size"] for b in taken["batches"]] == [3, 5, 40] and taken["dropped"] == 2
    stats = replica_stats(0, "m", ledger.totals, BatchPolicy("fixed", 4, 20.0), [])
    assert stats["batches"] == 5 and stats["images"] == 51 and stats["compute_s"] == pytest.approx(2.5)
    assert stats["batch_size_counts"][:7] == [1, 1, 1, 1, 0, 0, 1]  # buckets 1, 2, 4, 8, 16, 32, 64
    assert stats["batch_energy_j"] == pytest.approx(5.0) and stats["batch_energy_source"] == "simulated"
    assert stats["max_batch_size"] == 4 and stats["batch_wait_timeout_s"] == pytest.approx(0.02)


def test_the_device_tally_adds_closed_windows_and_the_open_one():
    with open_meter("simulated", interval_ms=5.0) as meter:
        started = time.monotonic()
        tally = RunningTally(meter, period_s=0.05)
        time.sleep(0.12)
        tally.tick()  # closes the first window, opens the next
        time.sleep(0.05)
        (device,) = tally.totals()
        elapsed = time.monotonic() - started
    assert device.device == "sim:0" and device.energy_source == "simulated"
    # idle (nothing ran), not the busy 190 W. Within 5%: with no busy window open the sampler
    # is sparse, so the counter's edges decide, each timed to the middle of its read, which a
    # preempted read on a loaded machine moves by milliseconds
    assert device.power_w == pytest.approx(60.0, rel=0.05)
    # both windows' Joules: at least their sleeps, at most the whole span, at the idle 60 W
    assert 60.0 * 0.17 * 0.99 <= device.energy_j <= 60.0 * elapsed * 1.01
