"""The meter against a stand-in NVML whose true power is known (tests/nvml_standin.py): short
windows from calibrated samples, each with an expected error that holds; long windows from the
counter; no counter read at window edges; power fields named wherever a number depends on them."""

import numpy as np
import pytest
from nvml_standin import Driver, Load, Segment, VirtualClock, standin
from test_energy_rapl import make_zone

from greenray.energy import EnergyMeter
from greenray.energy.calibration import UNCALIBRATED_REL
from greenray.energy.nvml import NvmlBackend
from greenray.energy.rapl import RaplBackend


def metered(clock: VirtualClock, n: int = 1, **gpu):
    nvml, gpus = standin(n, clock=clock, **gpu)
    meter = EnergyMeter([NvmlBackend(nvml=nvml)], clock=clock, sleep=clock.sleep)
    return meter, gpus, Driver(meter, clock, jitter_s=0.002, seed=1)


def windows(meter, driver, clock, seconds: float, count: int, seed: int = 0) -> list:
    """`count` windows of `seconds` with random gaps; each with its true Joules."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        driver.run_for(rng.uniform(0.0, 0.6))
        meter.begin_window("w")
        driver.run_for(seconds)
        out.append(meter.end_window("w"))
    return out


def truth(gpu, m) -> float:
    return gpu.true_j(m.clock_start, m.clock_start + m.seconds)


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_short_windows_come_from_calibrated_samples_and_their_stated_error_holds(seconds):
    clock = VirtualClock()
    meter, (gpu,), driver = metered(clock, gain=0.99)  # the sensor reads 1% low
    driver.run_to(60.0)
    found = windows(meter, driver, clock, seconds, 40)
    errors = np.array([abs(m.joules - truth(gpu, m)) for m in found])
    counter = np.array(
        [
            abs(gpu.counter_j(m.clock_start + m.seconds) - gpu.counter_j(m.clock_start) - truth(gpu, m))
            for m in found
        ]
    )
    stated = np.array([m.uncertainty_j for m in found])
    assert all(m.energy_source == "nvml-power" and m.power_field == "instant" for m in found)
    assert (errors <= stated).mean() >= 0.9  # an about-95% bound
    # the counter read at both edges (Zeus's way, and greenray's before) is far worse
    assert np.percentile(errors, 95) < np.percentile(counter, 95) / 3
    assert all(m.approximate == (m.uncertainty_j > 0.01 * m.joules) for m in found)


def test_the_counter_keeps_the_samples_honest_over_long_spans():
    clock = VirtualClock()
    meter, (gpu,), driver = metered(clock, gain=0.99)
    calibration = meter._calibration[0]
    driver.run_to(5.0)
    assert calibration.ratio() == (1.0, UNCALIBRATED_REL)  # too early to tell
    driver.run_to(120.0)
    ratio, error = calibration.ratio()
    assert ratio == pytest.approx(1 / 0.99, abs=error) and error < 0.005
    # a steady 0.2 s window is then trustworthy; one with a burst edge in it is not
    steady = Load([Segment(-1e4, 70.0, 0.0), Segment(130.0, 300.0, 0.0), Segment(130.5, 70.0, 0.0)])
    gpu.load = steady
    driver.run_to(125.0)
    meter.begin_window("calm")
    driver.run_for(0.2)
    calm = meter.end_window("calm")
    driver.run_to(129.9)
    meter.begin_window("edge")
    driver.run_for(0.2)
    edge = meter.end_window("edge")
    assert not calm.approximate and calm.joules == pytest.approx(14.0, rel=0.005)
    assert edge.approximate and abs(edge.joules - truth(gpu, edge)) <= edge.uncertainty_j


def test_a_long_window_takes_its_energy_from_the_counter():
    clock = VirtualClock()
    meter, (gpu,), driver = metered(clock, gain=0.99, load=Load.bursty(400.0, seed=3))
    driver.run_to(2.0)
    meter.begin_window("trial")
    driver.run_for(300.0)
    m = meter.end_window("trial")
    assert m.energy_source == "nvml-counter"
    assert abs(m.joules - truth(gpu, m)) <= m.uncertainty_j < 0.001 * m.joules


def test_windows_spend_no_time_on_the_counter():
    clock = VirtualClock()
    meter, (gpu,), driver = metered(clock)  # a counter read costs 4 ms, a power read 2.3 us
    driver.run_to(3.0)
    reads = meter._columns[0].backend._nvml.calls.get("counter", 0)
    spent = 0.0
    for _ in range(100):
        meter.begin_window("batch")
        driver.run_for(0.05)
        before = clock()
        meter.end_window("batch")
        spent += clock() - before
    assert meter._columns[0].backend._nvml.calls["counter"] - reads == 5  # the background's, 1 a second
    assert spent < 100 * 1e-4  # two power reads per window end, no counter read


def test_with_only_the_average_field_a_burst_is_neither_measured_nor_called_a_peak():
    clock = VirtualClock()
    burst = Load([Segment(-1e4, 70.0, 0.0), Segment(10.0, 300.0, 0.0), Segment(10.05, 70.0, 0.0)])
    results = {}
    for instant in (True, False):
        clock.t = 0.0
        meter, (gpu,), driver = metered(clock, load=burst, instant=instant)
        driver.run_to(10.0)
        meter.begin_window("batch", counter=False)
        driver.run_for(0.05)
        results[instant] = (meter.end_window("batch"), gpu)
    (fine, gpu), (coarse, _) = results[True], results[False]
    true_j = truth(gpu, fine)  # 15 J
    assert fine.power_field == fine.peak_power_field == "instant" and fine.peak_power_w == pytest.approx(
        300.0
    )
    assert abs(fine.joules - true_j) <= fine.uncertainty_j
    # the 1 s average hardly moves: a quarter of the energy, and 81.5 W is not a peak
    assert coarse.power_field == coarse.peak_power_field == "average"
    assert coarse.peak_power_w == pytest.approx(70.0 + 230.0 * 0.05, abs=0.1)
    assert coarse.to_row()["peak_power_field"] == "average"
    assert coarse.joules < 0.6 * true_j and abs(coarse.joules - true_j) <= coarse.uncertainty_j
    assert coarse.approximate


def test_the_power_field_is_the_gpus_when_rapl_is_measured_too(tmp_path):
    make_zone(tmp_path, "package-0", 0, 1000)
    clock = VirtualClock()
    nvml, _ = standin(1, clock=clock)
    meter = EnergyMeter([NvmlBackend(nvml=nvml), RaplBackend(root=tmp_path)], clock=clock)
    meter.begin_window("w")
    clock.t = 1.0
    m = meter.end_window("w")
    assert m.power_field == "instant" and m.to_row()["power_field"] == "instant"
    assert [d.power_field for d in m.devices] == ["instant", "derived"]


def test_sources_say_what_each_device_can_give():
    clock = VirtualClock()
    with_counter, _ = standin(1, clock=clock)
    without, _ = standin(1, clock=clock, counter=False)
    assert EnergyMeter([NvmlBackend(nvml=with_counter)]).sources == {"nvml-counter", "nvml-power"}
    old = EnergyMeter([NvmlBackend(nvml=without)])
    assert old.sources == {"nvml-power"} and old.device_sources() == {"cuda:0": "nvml-power"}
