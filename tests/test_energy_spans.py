"""A serving replica's per-batch spans (EnergyMeter.open_span / close_span / measure_spans): what
they measure equals what a general window over the same power readings measures, on their own
two readings and through the trace when another reading came between; they set the busy flag;
and the batch ledger answers at once with the span's Joules and keeps the settled record.
Simulated power on a fake clock, no sampler thread: every reading is the test's."""

import pytest
from helpers import FakeClock

from greenray.energy import EnergyMeter
from greenray.energy.simulated import SimulatedBackend
from greenray.serve.ledger import BatchLedger
from greenray.serve.measure import _OpenBatch


def ramp(t: float) -> float:
    """50 + 100 t W from t = 1; before, 300 W then 20 W, so that the power's range is known."""
    return 300.0 if t < 0.5 else 20.0 if t < 0.9 else 50.0 + 100.0 * t


def ramp_energy(t0: float, t1: float) -> float:
    return 50.0 * (t1 - t0) + 50.0 * (t1 * t1 - t0 * t0)


def two_meters():
    """Two meters over the same simulated power curve and one fake clock, each with the same
    readings before t = 1 (gap_s is 0.05 s)."""
    clock = FakeClock(0.3)

    def meter():
        backend = SimulatedBackend(power_fn=ramp, clock=clock, idle_w=40.0)
        return EnergyMeter([backend], clock=clock, interval_s=0.01)

    meters = meter(), meter()
    for t in (0.3, 0.8):
        clock.t = t
        for m in meters:
            m.sample()
    for m in meters:
        m.trace()  # integrated: the power's range is known before the span
    clock.t = 1.0
    return clock, *meters


# its own two readings; the trace: a reading between them, several across gaps, one gap
@pytest.mark.parametrize("between, end", [((), 1.04), ((1.02,), 1.04), ((1.1, 1.3, 1.45), 1.5), ((), 1.5)])
def test_a_span_measures_what_a_window_over_the_same_readings_measures(between, end):
    clock, spans, windows = two_meters()
    span = spans.open_span()
    windows.begin_window("w", counter=False)
    for t in between:  # the sampler's readings inside the batch, if any
        clock.t = t
        spans.sample()
        windows.sample()
    clock.t = end
    closed = spans.close_span(span)
    m = windows.end_window("w")
    # a linear ramp: the trapezoids are exact
    expected = ramp_energy(1.0, end)
    assert closed.joules == pytest.approx(expected) and m.joules == pytest.approx(expected)
    (settled,) = spans.measure_spans([closed])
    assert settled.joules == pytest.approx(m.joules)
    assert settled.uncertainty_j == pytest.approx(m.uncertainty_j) and settled.uncertainty_j > 0
    assert settled.idle_free_joules == pytest.approx(m.idle_free_joules)
    assert settled.idle_free_joules == pytest.approx(expected - 40.0 * (end - 1.0))
    assert settled.peak_power_w == pytest.approx(m.peak_power_w) == pytest.approx(ramp(end))
    assert closed.source == m.energy_source == "simulated" and closed.seconds == pytest.approx(end - 1.0)


def test_a_span_marks_its_device_busy_while_it_is_open():
    clock = FakeClock(0.0)
    backend = SimulatedBackend(idle_w=60.0, busy_w=250.0, clock=clock)
    meter = EnergyMeter([backend], clock=clock)
    device = backend.devices()[0]
    span = meter.open_span()
    assert backend.read_power_w(device) == 250.0
    clock.t = 0.5
    closed = meter.close_span(span)
    assert backend.read_power_w(device) == 60.0
    assert closed.joules == pytest.approx(250.0 * 0.5)


def test_a_meter_with_nothing_to_measure_gives_spans_without_joules():
    span = EnergyMeter([], warn_if_empty=False).open_span()
    closed = span and EnergyMeter([], warn_if_empty=False).close_span(span)
    assert closed.joules is None and closed.source == "none"


def test_the_ledger_answers_with_the_spans_joules_and_keeps_the_settled_record():
    clock, meter, _ = two_meters()
    ledger = BatchLedger()
    reader = ledger.cursor()
    batch = _OpenBatch(meter, ledger, 4, g_per_kwh=100.0)
    clock.t = 1.5
    batch.close()
    answer = ledger.describe_last("detail")  # what the batch's answers carry, before any settling
    assert answer.energy_j == pytest.approx(87.5) == pytest.approx(ramp_energy(1.0, 1.5))
    assert answer.size == 4 and answer.seconds == pytest.approx(0.5)
    assert answer.energy_source == "simulated" and answer.batch_id == 0
    (entry,), lost = reader.take()  # a reader settles what closed
    record = entry.energy
    assert lost == 0 and entry.detail == "detail"
    assert record.energy_j == pytest.approx(87.5) and record.joules_per_item == pytest.approx(87.5 / 4)
    assert record.uncertainty_j > 0 and record.idle_free_energy_j == pytest.approx(87.5 - 40.0 * 0.5)
    assert record.peak_power_w == pytest.approx(200.0)
    assert record.co2e_g == pytest.approx(87.5 / 3.6e6 * 100.0)
    assert record.ended_s - record.started_s == pytest.approx(0.5)
    assert ledger.totals.batches == 1 and ledger.totals.energy_j == pytest.approx(87.5)
