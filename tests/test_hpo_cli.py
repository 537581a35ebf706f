"""`greenray hpo` as a user runs it, a real process each: a Bayesian search stopped after a few
trials (Ctrl-C), resumed and stopped again (the driver killed), then finished with --resume."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

# Three driver processes, each with a Ray of its own: minutes on two cores, so CI leaves this
# module out (README: pytest -m slow).
pytestmark = pytest.mark.slow


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
    # One read of the bytes: the driver replaces the file (atomically) while this test polls it,
    # and a reader that opens the path twice could meet two versions.
    return pd.read_parquet(io.BytesIO(path.read_bytes())) if path.exists() else pd.DataFrame()


def stop_after(args: list[str], rows_at_least: int, stop: signal.Signals, out) -> pd.DataFrame:
    """Start `greenray ARGS`, send `stop` once `out` holds that many trial rows; the rows kept."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "greenray.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 150
    while len(rows(out)) < rows_at_least and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(stop)
    driver.communicate(timeout=120)
    if stop == signal.SIGINT:
        assert driver.returncode == 130  # it said how to resume
    return rows(out)


def test_a_search_stopped_twice_keeps_every_trial_and_resumes_to_its_summary(tmp_path):
    """A Bayesian search of 5 rounds x 2 repetitions: Ctrl-C, resumed and then killed (SIGKILL:
    no chance to tidy up), resumed again to the end. One search, so three processes, not six."""
    out = tmp_path / "study"
    args = ["hpo", "--strategy", "bayes", "--rounds", "5", "--repetitions", "2", "--epochs", "2"]
    args += ["--energy", "simulated", "--idle-seconds", "0.1", "--max-concurrent", "1", "--out", str(out)]
    interrupted = stop_after(args, 2, signal.SIGINT, out)
    assert 2 <= len(interrupted) < 10, "the driver was not stopped before the budget ran out"
    killed = stop_after(["hpo", "--resume", str(out)], len(interrupted) + 2, signal.SIGKILL, out)
    assert len(interrupted) + 2 <= len(killed) < 10, "the resumed driver was not killed in time"

    result = greenray("hpo", "--resume", str(out))
    assert result.returncode == 0, result.stderr
    trials = rows(out)
    assert len(trials) == 10 and trials["trial_id"].is_unique and (trials["status"] == "ok").all()
    assert sorted(zip(trials["round"], trials["repetition"], strict=True)) == [
        (r, k) for r in range(5) for k in range(2)
    ]
    # every row written before each interruption is still there, unchanged
    for kept in (interrupted, killed):
        head = trials.iloc[: len(kept)].reset_index(drop=True)
        pd.testing.assert_frame_equal(head, kept, check_dtype=False)
    assert set(trials["strategy"]) == {"bayes"}
    assert "best accuracy: " in result.stdout and "[simulated, not a measurement]" in result.stdout
    assert f"round {trials.groupby('round')['accuracy'].mean().idxmax()}" in result.stdout
    # The driver prints no traceback. (Lines from Ray workers start "(name pid=...)": a worker
    # Ray stops with SIGTERM at exit now and then prints one of its own, which is Ray's.)
    assert "Traceback" not in "\n".join(driver_lines(result.stderr))
    record = json.loads((out / "study.json").read_text())
    assert record["config"]["search"]["strategy"] == "bayes" and record["trials"] == 10
