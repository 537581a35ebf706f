import logging
import math
import threading
import time

import numpy as np
import pytest
from helpers import FakeClock

from greenray.energy import EnergyMeter, integrate
from greenray.energy.simulated import SimulatedBackend


def wave(t: float) -> float:
    return 100.0 + 50.0 * math.sin(2 * math.pi * t / 0.37)


def wave_energy(t: float) -> float:
    return 100.0 * t - 50.0 * 0.37 / (2 * math.pi) * math.cos(2 * math.pi * t / 0.37)


def test_integrate_matches_the_analytic_integral():
    times = np.arange(0.0, 3.0, 0.01)
    watts = np.array([wave(t) for t in times])
    joules = integrate(times, watts, 0.013, 2.5)
    assert joules == pytest.approx(wave_energy(2.5) - wave_energy(0.013), rel=0.005)


def test_integrate_holds_edges_flat_and_handles_empty_windows():
    times, watts = np.array([1.0, 2.0]), np.array([10.0, 30.0])
    assert integrate(times, watts, 0.0, 1.0) == pytest.approx(10.0)  # before the first sample
    assert integrate(times, watts, 1.0, 2.0) == pytest.approx(20.0)  # a linear ramp
    assert integrate(times, watts, 2.0, 2.0) == 0.0


def test_a_window_over_a_sampled_trace_equals_the_analytic_integral():
    clock = FakeClock(0.0)
    backend = SimulatedBackend(power_fn=wave, clock=clock)  # no energy_fn: no counter
    meter = EnergyMeter([backend], clock=clock)
    clock.t = 0.013
    meter.begin_window("w")
    for t in np.arange(0.02, 2.0, 0.01):
        clock.t = float(t)
        meter.sample()
    clock.t = 2.0
    m = meter.end_window("w")
    assert m.energy_source == "simulated"
    assert m.joules == pytest.approx(wave_energy(2.0) - wave_energy(0.013), rel=0.005)
    assert m.peak_power_w == pytest.approx(150.0, rel=0.01)
    assert m.devices[0].samples >= 198


def test_overlapping_and_nested_windows_each_get_their_own_energy():
    clock = FakeClock(0.0)
    meter = EnergyMeter([SimulatedBackend(idle_w=50.0, busy_w=200.0, clock=clock)], clock=clock)
    meter.begin_window("outer", busy=False)
    clock.t = 1.0
    meter.begin_window("a")
    clock.t = 2.0
    meter.begin_window("b")
    clock.t = 3.0
    a = meter.end_window("a")
    clock.t = 4.0
    b = meter.end_window("b")
    clock.t = 5.0
    outer = meter.end_window("outer")
    assert a.seconds == pytest.approx(2.0) and a.joules == pytest.approx(400.0)
    assert b.seconds == pytest.approx(2.0) and b.joules == pytest.approx(400.0)
    # busy from 1 to 4 (either window open), idle otherwise
    assert outer.joules == pytest.approx(3 * 200.0 + 2 * 50.0)
    assert outer.energy_source == "simulated" and not outer.approximate


def test_window_names_must_be_unique_while_open():
    meter = EnergyMeter([SimulatedBackend()])
    meter.begin_window("x")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("x")
    meter.end_window("x")
    with pytest.raises(ValueError, match="no open window"):
        meter.end_window("x")


def test_approximate_follows_the_expected_error_not_the_length():
    clock = FakeClock(0.0)
    # The model's counter is exact: a 0.2 s window is no estimate.
    exact = EnergyMeter([SimulatedBackend(idle_w=50.0, busy_w=200.0, clock=clock)], clock=clock)
    exact.begin_window("short")
    clock.t = 0.2
    m = exact.end_window("short")
    assert m.joules == pytest.approx(40.0) and m.uncertainty_j == 0.0 and not m.approximate
    # No counter, and a 100 W step inside a 10 ms sample gap: the trapezoid may be off by up to
    # 100 W x 10 ms / 2 = 0.5 J of 4.5 J, and the window says so.
    levels = {0.0: 100.0, 0.01: 100.0, 0.02: 200.0, 0.03: 200.0}
    curve = SimulatedBackend(power_fn=lambda t: levels[round(t, 2)], clock=clock)
    meter = EnergyMeter([curve], clock=clock)
    clock.t = 0.0
    meter.begin_window("step")
    for t in (0.01, 0.02, 0.03):
        clock.t = t
        meter.sample()
    m = meter.end_window("step")
    assert m.joules == pytest.approx(1.0 + 1.5 + 2.0)
    assert m.uncertainty_j == pytest.approx(2 * math.sqrt(0.5**2 / 3))
    assert m.approximate and m.to_row()["uncertainty_j"] == m.uncertainty_j


def test_idle_baseline_is_subtracted():
    clock = FakeClock(0.0)
    meter = EnergyMeter([SimulatedBackend(idle_w=60.0, busy_w=250.0, clock=clock)], clock=clock)
    assert meter.measure_idle(0.2) == {"sim:0": 60.0}  # the model's idle, known without waiting
    meter.begin_window("work")
    clock.t = 0.5
    m = meter.end_window("work")
    assert m.idle_w == 60.0
    assert m.joules == pytest.approx(250.0 * 0.5)
    assert m.idle_free_joules == pytest.approx(190.0 * 0.5)


def test_measure_idle_rejects_a_non_positive_duration():
    with pytest.raises(ValueError):
        EnergyMeter([SimulatedBackend()]).measure_idle(0)


def test_the_background_sampler_fills_a_trace():
    with EnergyMeter([SimulatedBackend(n_devices=2)], interval_s=0.005) as meter:
        with meter.window("w"):
            import time

            time.sleep(0.3)
        times, watts = meter.trace()
    assert watts.shape[1] == 2
    assert len(times) >= 20  # about 60 at 5 ms; loose for a loaded CI machine
    assert np.all(np.diff(times) >= 0)


@pytest.mark.parametrize("sampler", ["thread", "process"])
def test_short_busy_windows_are_exact_while_other_threads_hold_the_gil(sampler):
    # The window starts on a reading taken after its work's power step: a thread switch
    # between the step and the window's start cannot put an idle stretch inside it, nor can a
    # sampling process that saw the step late.
    done = threading.Event()

    def spin():
        while not done.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        model = SimulatedBackend(idle_w=60.0, busy_w=250.0)
        with EnergyMeter([model], interval_s=0.01, sampler=sampler) as meter:
            assert meter.wait_for_sampler() == sampler
            for _ in range(60):
                with meter.window("batch", counter=False) as w:
                    time.sleep(0.002)
                assert w.measurement.joules == pytest.approx(250.0 * w.measurement.seconds, rel=1e-6)
                time.sleep(0.003)
    finally:
        done.set()


def test_a_meter_without_backends_says_none_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING, logger="greenray.energy"):
        meter = EnergyMeter([])
        with meter.window("w") as w:
            pass
    m = w.measurement
    assert m.energy_source == "none" and m.joules is None and m.peak_power_w is None
    assert m.to_row()["energy_j"] is None
    assert len([r for r in caplog.records if "not measured" in r.message]) == 1


def test_energy_of_several_devices_adds_up_and_rows_name_them():
    clock = FakeClock(0.0)
    meter = EnergyMeter([SimulatedBackend(n_devices=3, idle_w=10, busy_w=100, clock=clock)], clock=clock)
    meter.begin_window("w")
    clock.t = 2.0
    m = meter.end_window("w")
    assert m.joules == pytest.approx(sum(d.joules for d in m.devices)) == pytest.approx(600.0)
    assert m.peak_power_w == pytest.approx(300.0)  # of the summed power
    row = m.to_row()
    assert row["device"] == "sim:0,sim:1,sim:2"
    assert row["energy_source"] == "simulated"


def test_memory_stays_bounded_however_long_a_window_is_open():
    clock = FakeClock(0.0)
    meter = EnergyMeter([SimulatedBackend(n_devices=8, clock=clock)], clock=clock, interval_s=0.1)
    held = meter.memory_bytes()
    meter.begin_window("trial", busy=False)
    for i in range(1, 20_000):  # 2000 s, far beyond the trace's tail
        clock.t = i * 0.1
        meter.sample()
    clock.t = 2000.0
    during = meter.read_window("trial")
    times, _ = meter.trace()
    assert meter.memory_bytes() == held  # allocated once
    assert len(times) <= 2 * 1024 and times[0] > 1000.0  # only a recent tail is kept
    m = meter.end_window("trial")
    assert during.joules == pytest.approx(8 * 60.0 * 2000.0) and m.joules == pytest.approx(during.joules)
    assert m.devices[0].samples == 20_001  # counted in running sums, not kept


def test_an_idle_baseline_travels_between_meters_by_uuid():
    from fake_nvml import four_gpus

    from greenray.energy.nvml import NvmlBackend

    first = EnergyMeter([NvmlBackend(nvml=four_gpus(), visible="0,1")], idle_w={"cuda:1": 42.0})
    assert first.baseline() == {"GPU-bbbbbbbb-0000": 42.0}
    # another process sees the same GPU as cuda:0
    second = EnergyMeter([NvmlBackend(nvml=four_gpus(), visible="1")])
    second.use_baseline(first.baseline())
    assert second.idle_w == {"cuda:0": 42.0}
