"""The energy layer's own rules: combining windows of several replicas, the energy-source rule,
open windows read without closing them, peak power around short windows, a modelled idle,
and the one "what can be measured here" check."""

import pytest
from helpers import FakeClock

from greenray.energy import (
    EnergyMeter,
    EnergyRequestError,
    Measurement,
    combine,
    combined_source,
    open_meter,
)
from greenray.energy.simulated import SimulatedBackend


def window(clock: FakeClock, backend: SimulatedBackend, seconds: float, node: str) -> Measurement:
    meter = EnergyMeter([backend], clock=clock)
    start = clock.t
    meter.begin_window("run")
    clock.t = start + seconds
    measurement = meter.end_window("run")
    return Measurement(**{**measurement.__dict__, "node": node})


def test_combined_replicas_add_joules_and_last_as_long_as_the_longest():
    clock = FakeClock(0.0)
    a = window(clock, SimulatedBackend(idle_w=50.0, busy_w=100.0, clock=clock), 2.0, "node-b")
    b = window(clock, SimulatedBackend(idle_w=50.0, busy_w=300.0, clock=clock), 1.0, "node-a")
    both = combine([a, b])
    assert both.joules == pytest.approx(100.0 * 2 + 300.0 * 1)
    assert both.idle_free_joules == pytest.approx(50.0 * 2 + 250.0 * 1)
    assert both.idle_w == pytest.approx(100.0)
    assert both.seconds == pytest.approx(2.0) and both.started_at == min(a.started_at, b.started_at)
    assert both.node == "node-a,node-b" and both.to_row()["device"] == "sim:0,sim:0"
    assert both.energy_source == "simulated"
    assert combine([a]) is a
    with pytest.raises(ValueError):
        combine([])


@pytest.mark.parametrize(
    ("sources", "combined"),
    [
        ([], "none"),
        (["nvml-counter"], "nvml-counter"),
        (["nvml-counter", "nvml-power"], "nvml-power"),
        (["nvml-counter", "none"], "none"),
        (["nvml-counter", "simulated"], "simulated"),  # a model is never passed off as measured
    ],
)
def test_the_energy_source_of_a_sum(sources, combined):
    assert combined_source(sources) == combined


def test_an_open_window_can_be_read_and_goes_on():
    clock = FakeClock(0.0)
    meter = EnergyMeter([SimulatedBackend(idle_w=50.0, busy_w=200.0, clock=clock)], clock=clock)
    meter.begin_window("trial")
    clock.t = 1.0
    first = meter.read_window("trial")
    clock.t = 3.0
    second = meter.read_window("trial")
    final = meter.end_window("trial")
    assert (first.joules, second.joules, final.joules) == pytest.approx((200.0, 600.0, 600.0))
    assert first.seconds == pytest.approx(1.0) and final.seconds == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no open window"):
        meter.read_window("trial")


def test_peak_power_of_a_span_shorter_than_the_sampling_interval_uses_the_edge_samples():
    clock = FakeClock(0.0)
    levels = {0.0: 100.0, 0.01: 400.0, 0.02: 100.0}
    meter = EnergyMeter(
        [SimulatedBackend(power_fn=lambda t: levels[round(t, 2)], clock=clock)], clock=clock, interval_s=0.01
    )
    for t in levels:
        clock.t = t
        meter.sample()
    assert meter.peak_power_w(0.012, 0.015) == 400.0  # no sample inside, the one just before counts
    assert meter.peak_power_w(0.2, 0.3) is None


def test_a_modelled_idle_is_the_baseline_without_measuring():
    clock = FakeClock(0.0)
    meter = EnergyMeter([SimulatedBackend(idle_w=42.0, clock=clock)], clock=clock)
    assert meter.baseline() == {"SIM-0": 42.0}
    assert meter.measure_idle(5.0) == {"sim:0": 42.0}  # returns at once: the fake clock never moved
    meter.begin_window("w", busy=False)
    clock.t = 2.0
    assert meter.end_window("w").idle_free_joules == pytest.approx(0.0)


def test_open_meter_says_in_one_sentence_why_energy_cannot_be_had(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("GREENRAY_POWERCAP", "/nonexistent")
    with pytest.raises(EnergyRequestError, match=r"--energy nvml is not available on .*; use --energy auto"):
        open_meter("nvml")
    with pytest.raises(EnergyRequestError, match="no energy source is readable .* drop --require-energy"):
        open_meter("auto", require=True)
    with open_meter("simulated", interval_ms=5.0, require=True) as meter:
        assert meter.interval_s == 0.005 and meter.sources == {"simulated"}


def test_require_energy_says_why_nothing_is_readable(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("GREENRAY_POWERCAP", "/nonexistent")
    with pytest.raises(EnergyRequestError, match=r"\(NVML: .*; RAPL: no readable RAPL package counter under"):
        open_meter("auto", require=True, quiet=True)
