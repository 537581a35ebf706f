"""`greenray meter` and `greenray doctor` as a user runs them: a real process each."""

import json
import os
import subprocess
import sys

import pytest


def greenray(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "greenray.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_meter_measures_a_real_command_as_json():
    result = greenray(
        "meter",
        "--json",
        "--energy",
        "simulated",
        "--",
        sys.executable,
        "-c",
        "import sys, time\n"
        "while time.process_time() < 0.4: pass\n"
        "time.sleep(0.3); print('done'); print(time.process_time(), file=sys.stderr)",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "done" in result.stderr  # the command's stdout is moved aside in --json mode
    assert data["exit_code"] == 0
    assert 0.7 <= data["seconds"] < 30
    assert data["energy_source"] == "simulated"
    # The model: 60 W for the window's seconds, and 190 W more for each CPU second of work
    # (the command's, counted when it ends, and the meter's own: a few hundredths of a second).
    cpu_s = float(result.stderr.split()[-1])
    above_idle = data["joules"] - 60.0 * data["seconds"]
    assert 190.0 * cpu_s <= above_idle <= 190.0 * (cpu_s + 0.2)


def test_meter_passes_the_command_exit_code_through():
    result = greenray("meter", "--energy", "none", "--", sys.executable, "-c", "raise SystemExit(3)")
    assert result.returncode == 3
    assert "energy not measured" in result.stderr


def test_meter_idle_prints_a_baseline():
    result = greenray("meter", "--json", "--energy", "simulated", "--idle", "0.2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["idle_w"] == {"sim:0": pytest.approx(60.0)}


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["meter"], "give a command"),
        (["meter", "--", "surely-no-such-command-x"], "command not found"),
        (["meter", "--idle", "-1"], "positive number of seconds"),
        (["meter", "--idle", "nan"], "positive number of seconds"),  # NaN passed `<= 0` once
        (["meter", "--idle", "inf"], "positive number of seconds"),
        (["meter", "--energy", "none", "--require-energy", "--", "true"], "no energy source"),
        (["meter", "--energy", "rapl", "--", "true"], "not available"),
        (["meter", "--energy", "bogus", "--", "true"], "bogus"),
    ],
)
def test_bad_input_ends_in_one_sentence_and_exit_2(args, phrase, tmp_path):
    result = greenray(*args, env={"GREENRAY_POWERCAP": str(tmp_path)})
    assert result.returncode == 2
    assert phrase in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if "bogus" not in args:  # typer's own message box for a bad choice
        assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_doctor_reports_what_it_finds():
    result = greenray("doctor")
    assert result.returncode == 0, result.stderr
    for phrase in ("NVML", "RAPL", "ray", "torch", "energy sources with --energy auto"):
        assert phrase in result.stdout


@pytest.mark.parametrize(
    ("address", "phrase"), [("127.0.0.1:1", "cannot reach"), ("nonsense", "not host:port")]
)
def test_an_unreachable_cluster_address_is_one_sentence(address, phrase):
    from greenray.errors import UsageError
    from greenray.ray_setup import _probe

    with pytest.raises(UsageError, match=phrase):
        _probe(address)


def test_hpo_against_an_unreachable_cluster_exits_2_at_once():
    result = greenray("hpo", "--address", "127.0.0.1:1", timeout=60)
    assert result.returncode == 2
    assert "cannot reach a Ray cluster" in result.stderr and "Traceback" not in result.stderr


def test_doctor_says_what_each_gpu_is_measured_from():
    from fake_nvml import FakeGpu, FakeNvml
    from rich.console import Console

    from greenray.energy.nvml import NvmlBackend
    from greenray.ui import gpu_table

    gpus = [FakeGpu("GPU-aaaa", counter=False, instant=False), FakeGpu("GPU-bbbb", instant=False)]
    console = Console(width=400, record=True)
    console.print(gpu_table(NvmlBackend(nvml=FakeNvml(gpus))))
    rows = [line for line in console.export_text().splitlines() if "GPU-" in line]
    assert "nvml-power (no energy counter)" in rows[0] and "nvml-counter" in rows[1]
    assert all("1 s average field: short windows are estimates" in row for row in rows)
