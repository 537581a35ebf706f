"""`greenray serve-bench`: a real run on CPU with a tiny model (its rows checked against each
other), and bad input ending in one sentence and exit code 2."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import run_main
from typer.testing import CliRunner

from greenray.cli import app
from greenray.results import PARQUET_ONLY, TABLES

# A tiny model on the CPU at 100 Hz, 40 requests a run; each test adds its policies and folder.
TINY_BENCH = [
    "serve-bench",
    "--model", "shufflenet_x0_5",
    "--weights", "none",
    "--image-size", "32",
    "--device", "cpu",
    "--frequency", "100",
    "--requests", "40",
    "--warmup-batches", "2",
    "--energy", "simulated",
    "--idle-seconds", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench_dir(ray_local, tmp_path_factory):
    from ray import serve

    out = tmp_path_factory.mktemp("serve-bench")
    result = CliRunner().invoke(app, [*TINY_BENCH, "--policy", "fixed:4,greedy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    yield out
    serve.shutdown()


def test_a_run_per_policy_with_every_table_written(bench_dir):
    runs = pd.read_parquet(bench_dir / "runs.parquet")
    assert list(runs["policy"]) == ["fixed:4", "greedy"]
    for table in ("runs", "requests", "batches", "replica_runs"):
        frame = pd.read_parquet(bench_dir / f"{table}.parquet")
        assert set(TABLES[table]) <= set(frame.columns), table
        assert (bench_dir / f"{table}.csv").exists() == (table not in PARQUET_ONLY)
    assert (runs["status"] == "ok").all() and (runs["request_path"] == "handle").all()
    assert (runs["served"] >= 40).all()
    assert (runs["energy_source"] == "simulated").all()
    assert (runs["model"] == "shufflenet_v2_x0_5").all() and (runs["weights"] == "random").all()
    assert runs.set_index("policy").loc["fixed:4", "mean_batch_size"] == 4.0
    assert (runs["achieved_rate_hz"].between(90, 110)).all()


def test_through_an_ingress_replica_a_policy_keeps_its_meaning_and_only_measured_runs_are_kept(
    bench_dir, tmp_path
):
    args = [*TINY_BENCH, "--policy", "fixed:4", "--ingress-replicas", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(runs) == 1 and runs["status"].iloc[0] == "ok"  # the settling run is not kept
    assert runs["served"].iloc[0] >= 40 and runs["mean_batch_size"].iloc[0] == 4.0
    batches = pd.read_parquet(tmp_path / "batches.parquet")
    assert batches["run_id"].nunique() == 1
    assert (batches[batches["in_run"]]["size"] == 4).all()  # the drain after the run may leave less
    assert "settling" in json.loads((tmp_path / "bench.json").read_text())["notes"]


def test_the_http_path_times_what_a_client_sees_and_every_row_says_so(ray_local, tmp_path):
    from ray import serve

    serve.shutdown()  # runs before may have started Serve without its HTTP proxy: this one needs it
    args = [*TINY_BENCH, "--policy", "fixed:4", "--request-path", "http", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(runs) == 1 and runs["status"].iloc[0] == "ok", runs["failure"].iloc[0]
    assert runs["failed"].iloc[0] == 0
    assert runs["request_path"].iloc[0] == "http" and runs["ingress_replicas"].iloc[0] == 1
    assert runs["served"].iloc[0] >= 40 and runs["mean_batch_size"].iloc[0] == 4.0
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert (requests["request_path"] == "http").all()
    served = requests[requests["served"]]
    # each numbered HTTP request joined its batch in the replica, inside the client's time
    assert len(served) == runs["served"].iloc[0] and served["batch_id"].notna().all()
    assert (served["batch_ended_s"] - served["enqueued_s"] <= served["latency_s"] + 0.005).all()
    assert (pd.read_parquet(tmp_path / "replica_runs.parquet")["request_path"] == "http").all()
    about = json.loads((tmp_path / "bench.json").read_text())
    assert about["models"]["shufflenet_v2_x0_5"]["request_url"].startswith("http://127.0.0.1:")
    serve.shutdown()


def test_energy_per_image_is_run_energy_over_served_images(bench_dir):
    runs = pd.read_parquet(bench_dir / "runs.parquet")
    replicas = pd.read_parquet(bench_dir / "replica_runs.parquet")
    assert np.allclose(runs["energy_per_image_j"], runs["energy_j"] / runs["served"])
    assert np.allclose(runs["idle_free_energy_per_image_j"], runs["idle_free_energy_j"] / runs["served"])
    assert np.allclose(runs["energy_j"] - runs["idle_free_energy_j"], 60.0 * runs["seconds"])
    merged = runs.merge(replicas, on="run_id", suffixes=("", "_replica"))
    assert np.allclose(merged["energy_j"], merged["energy_j_replica"])  # one replica: the sum is its own


def test_latencies_and_batches_match_the_request_rows(bench_dir):
    runs = pd.read_parquet(bench_dir / "runs.parquet").set_index("run_id")
    requests = pd.read_parquet(bench_dir / "requests.parquet")
    batches = pd.read_parquet(bench_dir / "batches.parquet")
    for run_id, rows in requests.groupby("run_id"):
        served = rows[rows["served"]]
        run = runs.loc[run_id]
        in_run = batches[(batches.run_id == run_id) & batches.in_run]
        assert len(served) == run["served"] == in_run["size"].sum()
        assert run["max_latency_s"] == pytest.approx(served["latency_s"].max())
        assert run["p99_latency_s"] == pytest.approx(np.percentile(served["latency_s"], 99))
        assert np.allclose(served["latency_s"], served["completed_s"] - served["submitted_s"])
        # the replica's part of a response time fits inside the caller's
        inside = served["batch_ended_s"] - served["enqueued_s"]
        assert (inside <= served["latency_s"] + 0.005).all()
        assert (served["queue_wait_s"] >= 0).all()
        assert run["excluded"] == len(rows) - len(served)


def test_bench_json_keeps_settings_versions_and_the_idle_baseline(bench_dir):
    about = json.loads((bench_dir / "bench.json").read_text())
    assert about["config"]["policies"] == ["fixed:4", "greedy"]
    assert about["config"]["deploy"]["serving"]["image_size"] == 32 and about["device"] == "cpu"
    assert about["versions"]["torch"]
    model = about["models"]["shufflenet_v2_x0_5"]
    assert model["idle_baseline_w"] == [{"SIM-0": 60.0}]
    assert model["replicas"][0]["weights_source"] == "random"
    assert "served" in about["notes"]


BAD_INPUT = [
    (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
    (["--policy", "fixed:0"], "fixed:0 needs a batch size"),
    (["--frequency", "16,0"], "--frequency '0' is not a positive number"),
    (["--requests", "0"], "--requests 0 is not a whole number of at least 1"),
    (["--requests", "many"], "Invalid value for '--requests'"),
    (["--weights", "missing.pt"], "--weights 'missing.pt' is not default"),
    (["--energy", "nvml"], "--energy nvml is not available"),
    (["--device", "cuda"], "--device cuda needs a GPU"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
]


def one_error_line(text: str, message: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], text


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_sentence_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    """The console script's own entry point in this process, on a machine without a GPU."""
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # NVML sees no device, as torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = run_main(monkeypatch, "serve-bench", *args, "--out", str(tmp_path))
    assert code == 2
    one_error_line(capsys.readouterr().err, message)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_the_installed_command_says_one_sentence_too(tmp_path):
    """The same through `python -m greenray.cli` in a process of its own: no traceback anywhere
    (a flag of the wrong type: typer's own check, turned into one sentence by main())."""
    result = subprocess.run(
        [sys.executable, "-m", "greenray.cli", "serve-bench", "--requests", "many", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    one_error_line(result.stderr, "Invalid value for '--requests'")
    assert not list(tmp_path.iterdir())
