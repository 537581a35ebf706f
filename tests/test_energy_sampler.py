"""The power sampler in a process of its own (greenray/energy/sampler.py): it measures what the
thread measured, follows the meter's busy flag, reports its failed reads, and leaves no process
or shared block behind, whoever ends first."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from greenray.energy import EnergyMeter
from greenray.energy.rapl import RaplBackend
from greenray.energy.sampler import OK, SampleRing, child_env
from greenray.energy.simulated import SimulatedBackend

MAX_UJ = 262_143_328_850


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def process_meter():
    meter = EnergyMeter([SimulatedBackend(idle_w=60.0, busy_w=250.0)], sampler="process").start()
    assert wait_for(lambda: meter.sampling == "process"), "the sampling process never became ready"
    yield meter
    meter.close()


def test_a_sampling_process_measures_a_window_exactly(process_meter):
    pid = process_meter._process.pid
    assert os.getsid(pid) == pid  # a session of its own: a Ctrl-C at the terminal is not for it
    with process_meter.window("work") as w:
        time.sleep(0.6)
    m = w.measurement
    assert m.energy_source == "simulated"
    assert m.joules == pytest.approx(250.0 * m.seconds, rel=1e-3)
    # The readings came from the process while this one slept, at the busy cadence (10 ms),
    # not the idle one (0.1 s); a loaded machine may delay some, so the bounds are loose
    assert m.devices[0].samples >= 15
    times, _ = process_meter.trace(m.clock_start, m.clock_start + m.seconds)
    assert np.median(np.diff(times)) < 0.04
    process_meter.close()
    assert wait_for(lambda: gone(pid), 3.0), "the sampling process outlived its meter"


def test_the_process_follows_the_busy_flag(process_meter):
    process_meter.begin_window("idle", busy=False)
    time.sleep(0.3)
    idle = process_meter.end_window("idle")
    with process_meter.window("busy") as w:
        time.sleep(0.3)
    _, idle_w = process_meter.trace(idle.clock_start + 0.05, idle.clock_start + idle.seconds - 0.05)
    _, busy_w = process_meter.trace(w.measurement.clock_start + 0.05, w.measurement.clock_start + 0.25)
    assert len(idle_w) >= 1 and set(idle_w[:, 0]) == {60.0}
    assert len(busy_w) >= 5 and set(busy_w[:, 0]) == {250.0}
    assert idle.joules == pytest.approx(60.0 * idle.seconds, rel=1e-3)


def test_a_killed_process_hands_sampling_back_to_a_thread(process_meter, caplog):
    with process_meter.window("work") as w:
        time.sleep(0.2)
        process_meter._process._process.kill()
        assert wait_for(lambda: process_meter.sampling == "thread", 3.0)
        before = len(process_meter.trace()[0])
        time.sleep(0.5)
        assert len(process_meter.trace()[0]) >= before + 10  # the thread samples again (50 when quiet)
    assert "sampling in a thread" in caplog.text
    assert w.measurement.joules == pytest.approx(250.0 * w.measurement.seconds, rel=1e-3)


def test_backends_another_process_cannot_open_stay_in_a_thread():
    curve = SimulatedBackend(power_fn=lambda t: 100.0, energy_fn=lambda t: 100.0 * t)
    with EnergyMeter([curve], sampler="process") as meter:
        assert meter.sampling == "thread"
        with meter.window("w") as w:
            time.sleep(0.1)
    assert w.measurement.joules == pytest.approx(100.0 * w.measurement.seconds, rel=1e-3)


def test_failed_reads_in_the_process_end_the_device_as_in_a_thread(tmp_path, caplog):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    (zone / "energy_uj").write_text("1000\n")
    caplog.set_level(logging.WARNING, logger="greenray.energy")
    with EnergyMeter([RaplBackend(root=tmp_path)], sampler="process") as meter:
        assert wait_for(lambda: meter.sampling == "process")
        meter.begin_window("w")
        (zone / "energy_uj").unlink()  # the counter becomes unreadable to both processes
        # Between window edges only the process reads: the device ends on its failed reads.
        assert wait_for(lambda: "no longer measured" in caplog.text, 6.0)
        m = meter.end_window("w")
    assert "cpu:package-0 RAPL counter unreadable" in caplog.text
    assert m.devices[0].partial


def shared_blocks() -> set[str]:
    shared = Path("/dev/shm")
    return {p.name for p in shared.glob("greenray-sampler-*")} if shared.is_dir() else set()


def test_the_process_ends_when_its_parent_dies(tmp_path):
    before = shared_blocks()
    script = (
        "import os, sys, time\n"
        "from greenray.energy import EnergyMeter\n"
        "from greenray.energy.simulated import SimulatedBackend\n"
        "m = EnergyMeter([SimulatedBackend()], sampler='process').start()\n"
        "while m.sampling != 'process': time.sleep(0.01)\n"
        "print(m._process.pid, flush=True)\n"
        "os._exit(0)\n"  # no close: as if killed
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.strip())
    assert wait_for(lambda: gone(pid), 3.0), "the sampling process outlived the process it measured for"
    assert shared_blocks() <= before  # its shared block went with the two processes


def test_a_ring_lapped_by_its_writer_says_how_many_rows_were_lost():
    ring = SampleRing(bytearray(SampleRing.nbytes(2, 8)), 2, 8)
    for k in range(20):
        ring.write([float(k), float(k)], [1.0 * k, 2.0 * k], [OK, OK])
    rows, lost, upto = ring.rows(since=0)
    assert upto == 20
    assert lost == 13  # rows 0..12 were overwritten (the slot written next is never read)
    assert rows[:, 0].tolist() == [float(k) for k in range(13, 20)]
    assert rows[:, 3].tolist() == [2.0 * k for k in range(13, 20)]
    assert ring.rows(since=20)[0].shape == (0, 6)


def test_the_process_finds_greenray_where_this_process_imported_it(monkeypatch):
    # A Ray worker given greenray through runtime_env py_modules has it on sys.path only.
    import greenray

    monkeypatch.setenv("PYTHONPATH", "/some/user/path")
    parts = child_env()["PYTHONPATH"].split(os.pathsep)
    assert Path(parts[0]) / "greenray" == Path(greenray.__file__).resolve().parent
    assert parts[1:] == ["/some/user/path"]
    monkeypatch.delenv("PYTHONPATH")
    assert child_env()["PYTHONPATH"] == parts[0]
