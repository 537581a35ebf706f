"""`greenray hpo` as a user runs it, a real process each: a Bayesian search to the end, and a
search stopped after a few trials (Ctrl-C, or the driver killed) then finished with --resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

SMALL = [
    "--rounds",
    "3",
    "--repetitions",
    "2",
    "--epochs",
    "2",
    "--energy",
    "simulated",
    "--idle-seconds",
    "0.1",
]


def greenray(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "greenray.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"RAY_DEDUP_LOGS": "0"},
    )


def driver_lines(text: str) -> list[str]:
    """The lines the driver printed itself, without those Ray forwards from its workers."""
    return [line for line in text.splitlines() if not re.sub(r"\x1b\[[0-9;]*m", "", line).startswith("(")]


def rows(folder) -> pd.DataFrame:
    path = folder / "trials.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def test_a_bayesian_search_runs_to_the_end_and_summarises(tmp_path):
    result = greenray("hpo", "--strategy", "bayes", *SMALL, "--out", str(tmp_path / "bayes"))
    assert result.returncode == 0, result.stderr
    trials = rows(tmp_path / "bayes")
    assert len(trials) == 6 and (trials["status"] == "ok").all() and set(trials["strategy"]) == {"bayes"}
    assert "best accuracy: " in result.stdout and "[simulated, not a measurement]" in result.stdout
    assert f"round {trials.groupby('round')['accuracy'].mean().idxmax()}" in result.stdout
    # The driver prints no traceback. (Lines from Ray workers start "(name pid=...)": a worker
    # Ray stops with SIGTERM at exit now and then prints one of its own, which is Ray's.)
    assert "Traceback" not in "\n".join(driver_lines(result.stderr))
    record = json.loads((tmp_path / "bayes" / "study.json").read_text())
    assert record["config"]["search"]["strategy"] == "bayes" and record["trials"] == 6


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_an_interrupted_search_keeps_its_trials_and_resumes_the_rest(tmp_path, stop):
    out = tmp_path / "study"
    args = ["hpo", "--strategy", "random", "--rounds", "4", "--repetitions", "2", "--epochs", "2"]
    args += ["--energy", "simulated", "--idle-seconds", "0.1", "--out", str(out)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "greenray.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 150
    while len(rows(out)) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(stop)
    driver.communicate(timeout=120)
    kept = rows(out)
    assert 2 <= len(kept) < 8, "the driver was not stopped before the budget ran out"
    if stop == signal.SIGINT:
        assert driver.returncode == 130  # it said how to resume
    result = greenray("hpo", "--resume", str(out))
    assert result.returncode == 0, result.stderr
    trials = rows(out)
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert sorted(zip(trials["round"], trials["repetition"], strict=True)) == [
        (r, k) for r in range(4) for k in range(2)
    ]
    # every row written before the interruption is still there, unchanged
    pd.testing.assert_frame_equal(trials.iloc[: len(kept)].reset_index(drop=True), kept, check_dtype=False)
