"""The idle baseline on the stand-in NVML: it waits for a GPU just out of work to settle (and
for an averaged reading to catch up), and reports its spread."""

import logging

import pytest
from nvml_standin import Load, Segment, VirtualClock, standin

from greenray.energy import EnergyMeter
from greenray.energy.nvml import NvmlBackend


def cooling_meter(instant: bool) -> tuple[EnergyMeter, VirtualClock]:
    """A GPU at 300 W until t=0, relaxing to 71 W with a 0.5 s time constant; 20 ms later."""
    clock = VirtualClock()
    load = Load.cooling(busy_w=300.0, idle_w=71.0, until_s=0.0, decay_s=0.5)
    nvml, _ = standin(1, clock=clock, load=load, instant=instant)
    meter = EnergyMeter([NvmlBackend(nvml=nvml)], clock=clock, sleep=clock.sleep)
    clock.t = 0.02
    return meter, clock


@pytest.mark.parametrize("instant", [True, False])
def test_the_baseline_waits_for_the_power_to_settle(instant, caplog):
    hasty, _ = cooling_meter(instant)
    with caplog.at_level(logging.WARNING, logger="greenray.energy"):
        early = hasty.measure_idle(2.0, settle_max_s=0.0)["cuda:0"]
    assert early > 71.0 * 1.05  # without waiting: tens of Watts too high
    assert not hasty.idle_stats["cuda:0"].settled
    assert any("still changing" in r.message for r in caplog.records)
    meter, clock = cooling_meter(instant)
    idle = meter.measure_idle(2.0)["cuda:0"]
    stats = meter.idle_stats["cuda:0"]
    assert idle == pytest.approx(71.0, rel=0.01)
    assert stats.settled and stats.settle_s >= (2.0 if not instant else 1.0)
    assert stats.power_field == ("instant" if instant else "average")
    assert stats.samples >= 150 and stats.mean_w == idle


def test_the_baseline_reports_its_spread():
    clock = VirtualClock()
    # 70 W and 72 W in turns of 50 ms: a mean of 71 W, a standard deviation of 1 W
    ripple = Load(
        [Segment(-1e4, 70.0, 0.0)] + [Segment(k * 0.05, 70.0 + 2 * (k % 2), 0.0) for k in range(400)]
    )
    nvml, _ = standin(1, clock=clock, load=ripple)
    meter = EnergyMeter([NvmlBackend(nvml=nvml)], clock=clock, sleep=clock.sleep)
    meter.measure_idle(4.0)
    stats = meter.idle_stats["cuda:0"]
    assert stats.mean_w == pytest.approx(71.0, abs=0.1)
    assert stats.spread_w == pytest.approx(1.0, abs=0.05)
    assert stats.uncertainty_w is not None and stats.uncertainty_w < 2.0
