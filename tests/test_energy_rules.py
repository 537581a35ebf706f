"""Every rule about which Joules count lives in greenray.energy (issue 18 item 5), and the
simulated model's Joules follow the work done, not how busy the machine is (issue 19 item 6)."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from greenray.energy import (
    EnergyMeter,
    PowerSince,
    Tally,
    counted_joules,
    counted_key,
    idle_known,
    nothing_readable,
    rows_key,
)
from greenray.energy.simulated import SimulatedBackend

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "greenray"


@pytest.mark.parametrize("phrase", ["no energy source is readable", "drop --require-energy"])
def test_each_energy_sentence_is_written_once_in_the_energy_package(phrase):
    holders = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if phrase in p.read_text()]
    assert holders == ["energy/rules.py"]


def test_the_idle_free_rule_is_decided_in_one_place():
    holders = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if '"idle_free_energy_j" if' in p.read_text() or 'backend == "simulated"' in p.read_text()
    ]
    assert holders == ["energy/rules.py"]
    assert counted_key(idle_known(False, "simulated")) == "idle_free_energy_j"  # the model's idle is known
    assert counted_key(idle_known(True, "nvml")) == "idle_free_energy_j"
    assert counted_key(idle_known(False, "auto")) == "energy_j"
    assert rows_key([{"idle_free_energy_j": 1.0}, {"idle_free_energy_j": float("nan")}]) == "energy_j"
    assert rows_key([{"idle_free_energy_j": 1.0}]) == "idle_free_energy_j" and rows_key([]) == "energy_j"
    assert counted_joules({"energy_j": 5.0, "idle_free_energy_j": None}) == 5.0
    assert counted_joules({"energy_j": 5.0, "idle_free_energy_j": 2.0}) == 2.0
    assert "--require-energy" in nothing_readable("node-a") and "node-a" in nothing_readable("node-a")


def test_tallies_sum_windows_and_take_power_between_reports():
    clock = [0.0]
    meter = EnergyMeter(
        [SimulatedBackend(idle_w=50.0, busy_w=200.0, clock=lambda: clock[0])], clock=lambda: clock[0]
    )
    tally = Tally()
    for seconds in (1.0, 2.0):
        meter.begin_window("e")
        clock[0] += seconds
        tally.add(meter.end_window("e"))
    assert (tally.seconds, tally.joules) == (pytest.approx(3.0), pytest.approx(600.0))
    assert tally.idle_free_joules == pytest.approx(600.0 - 50.0 * 3.0)  # the model's idle is known
    power = PowerSince()
    assert power.step(1.0, 100.0) is None and power.step(3.0, 500.0) == pytest.approx(200.0)
    assert power.step(4.0, None, advance=False) is None and power.step(5.0, 700.0) == pytest.approx(100.0)


def spin(cpu_s: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < cpu_s:
        pass


def metered_work(cpu_s: float) -> tuple[float, float, float]:
    """(idle-free J, this thread's CPU seconds inside the window, the process's around it) of
    `cpu_s` of work."""
    with EnergyMeter.create("simulated") as meter:
        meter.measure_idle(0.1)
        outer = time.process_time()
        with meter.window("work") as w:
            inner = time.thread_time()
            spin(cpu_s)
            inner = time.thread_time() - inner
        outer = time.process_time() - outer
    return w.measurement.idle_free_joules, inner, outer


def test_simulated_joules_follow_the_cpu_work_not_the_load_beside_it():
    """With two CPU hogs beside the work as without them, its Joules are 190 W above idle for
    each CPU second the work itself used (the meter's own threads left out), not its wall time
    (the wall-time model took 250 W x wall time, so a loaded machine paid more). How many CPU
    seconds the same work takes may itself move with load; the study's trainable counts modelled
    work instead (test_modelled_work.py)."""
    quiet = metered_work(0.3)
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    try:
        loaded = metered_work(0.3)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    for idle_free, inner, outer in (quiet, loaded):
        assert 190.0 * inner <= idle_free <= 190.0 * outer + 1e-6


def test_the_work_model_is_exact_on_a_work_clock_of_its_own():
    t, work = [0.0], [0.0]
    model = SimulatedBackend(idle_w=60.0, busy_w=250.0, clock=lambda: t[0], work=lambda: work[0])
    meter = EnergyMeter([model], clock=lambda: t[0])
    meter.measure_idle(0.1)
    meter.begin_window("w")
    t[0], work[0] = 3.0, 1.0  # one CPU second of work in three seconds of wall time
    m = meter.end_window("w")
    assert m.joules == pytest.approx(60.0 * 3.0 + 190.0 * 1.0)
    assert m.idle_free_joules == pytest.approx(190.0) and m.energy_source == "simulated"
    assert model.spec() is None  # a work clock of the caller's own stays in this process
    assert SimulatedBackend(work_pid=os.getpid()).spec()["options"]["work_pid"] == os.getpid()
