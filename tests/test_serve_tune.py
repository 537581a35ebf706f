"""The policy search of `greenray serve-tune` against the simulated backend, on the session's local
Ray and one deployment (a tiny model behind an ingress replica): a small exhaustive sweep of
policies run as serve-bench runs them, then the search on the same running deployment. The
chosen policy meets the p99 target in its own run, no policy of the sweep that meets it has less
energy per image by more than 5%, and the search used fewer live runs than the sweep. The command
itself is checked on what it refuses before it deploys anything."""

import json

import pandas as pd
import pytest
from helpers_http import TINY_SERVER

from greenray.config import PolicyTuneConfig, parse_policy

# Eleven live serving runs: minutes on two cores, so CI leaves this module out (README: pytest -m slow).
pytestmark = pytest.mark.slow

# The machine's load moves compute times; at this rate idle power is most of an image's Joules,
# which keeps a run's noise well under the 5% the comparison allows.
RATE_HZ, SLO_MS, CAP, REQUESTS = 20, 1200.0, 16, 32
SWEEP = [f"greedy:{c}" if w == 0 else f"fixed:{c}@{w}" for c in (4, CAP) for w in (0, 250, 900)]
SETTINGS = TINY_SERVER | {
    "warmup_batches": 2,
    "arrival": "constant",
    "frequency": RATE_HZ,
    "requests": REQUESTS,
    "slo_ms": SLO_MS,
    "runs": 5,
    "max_batch_size": CAP,
}


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    from ray import serve

    from greenray.results import ResultStore
    from greenray.serve.driver import deploy, record_run, start
    from greenray.serve.loop import on_loop
    from greenray.serve.replicas import IngressOptions
    from greenray.serve.run import RunPlan
    from greenray.serve.server import search_policy

    config = PolicyTuneConfig.from_flat(SETTINGS)
    deployment, target = config.deploy, config.target
    replicas = deploy("shufflenet_v2_x0_5", deployment, "cpu", ingress=IngressOptions(1))
    sweep_dir, tune_dir = tmp_path_factory.mktemp("sweep"), tmp_path_factory.mktemp("tuned")
    try:
        model = on_loop(start("shufflenet_v2_x0_5", replicas, deployment, _silent(), seed=target.seed))
        store = ResultStore(sweep_dir)
        plans = [
            RunPlan(RATE_HZ, parse_policy(p), target.requests, target.arrival, target.seed) for p in SWEEP
        ]
        sweep = pd.DataFrame([record_run(model, plan, store, _silent()) for plan in plans])
        result = search_policy(model, target, tune_dir, _silent(), {"kind": "test"})
    finally:
        replicas.delete()
        serve.shutdown()
    return sweep, result, tune_dir


def _silent():
    from rich.progress import Progress

    return Progress(disable=True)


def test_the_chosen_policy_meets_the_target_in_its_own_run(searched):
    _, result, tune_dir = searched
    runs = pd.read_parquet(tune_dir / "runs.parquet").set_index("run_id")
    own = runs.loc[result.best.run_id]
    assert own["policy"] == result.best.policy and own["status"] == "ok"
    assert own["p99_latency_s"] * 1000 <= SLO_MS and own["ingress_replicas"] == 1
    assert result.best.energy_per_image_j == pytest.approx(own["energy_per_image_j"])
    baseline = runs.loc[result.baseline.run_id]
    assert baseline["policy"] == f"greedy:{CAP}"  # Serve's default: what is queued, no wait
    assert result.saving == pytest.approx(1 - own["energy_per_image_j"] / baseline["energy_per_image_j"])
    stored = json.loads((tune_dir / "tune.json").read_text())["search"]
    assert stored["best"]["policy"] == result.best.policy and stored["saving"] == pytest.approx(result.saving)


def test_no_policy_of_the_sweep_that_meets_the_target_costs_5_percent_less(searched):
    sweep, result, _ = searched
    assert sorted(sweep["policy"]) == sorted(SWEEP) and (sweep["status"] == "ok").all()
    assert (sweep["energy_source"] == "simulated").all()
    feasible = sweep[sweep["p99_latency_s"] * 1000 <= SLO_MS]
    assert len(feasible) >= 3  # the target leaves the sweep something to compare with
    assert feasible["energy_per_image_j"].min() >= 0.95 * result.best.energy_per_image_j


def test_the_search_used_fewer_live_runs_than_the_sweep_and_stored_each(searched):
    _, result, tune_dir = searched
    runs = pd.read_parquet(tune_dir / "runs.parquet")
    assert len(runs) == result.live_runs == 5 < len(SWEEP)
    assert runs["policy"].is_unique and (runs["frequency_hz"] == RATE_HZ).all()
    for table in ("requests", "batches", "replica_runs"):
        assert set(pd.read_parquet(tune_dir / f"{table}.parquet")["run_id"]) == set(runs["run_id"])
    from greenray.ui import out, print_tuned

    with out.capture() as shown:
        print_tuned(result, tune_dir)
    text = shown.get()
    assert f"chosen: {result.best.policy}" in text and "saves" in text and "simulated" in text


def test_serve_tune_refuses_to_search_where_nothing_measures_energy(tmp_path):
    from typer.testing import CliRunner

    from greenray.cli import app

    result = CliRunner().invoke(
        app,
        [
            "serve-tune",
            "--model",
            "shufflenet_x0_5",
            "--device",
            "cpu",
            "--energy",
            "none",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing here measures energy" in lines[0], result.output
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
