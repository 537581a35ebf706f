"""serve-bench: per model, one Serve replica per device, idle baseline, warm-up, then one run per
(frequency, policy) until enough requests are served; energy per image, response times and
batch records stored as each run ends. It drives the deployment through greenray.serve.driver
and its run API (greenray.serve.run), as serve-tune and `greenray serve` do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from greenray.config import BenchConfig, DeployConfig
from greenray.results import OK, ResultStore, run_record
from greenray.serve import zoo
from greenray.serve.driver import check_here, check_out, deploy, record_run, resolve_device, start
from greenray.serve.loop import on_loop
from greenray.serve.run import SETTLE_REQUESTS, RunPlan
from greenray.serve.warmup import say_runs_estimate

BENCH_FILE = "bench"  # DIR/bench.json
NOTES = {
    "served": "a run ends when --requests answers have come back; it counts every request whose batch "
    "ended inside the replica's run window (so served >= requests); requests still queued then are "
    "drained afterwards (fixed:N partial batches filled with extra images) and excluded",
    "clocks": "submitted_s/completed_s/latency_s: the caller (load generator); enqueued_s, batch_*: the "
    "replica, whose handler takes a request arriving during a batch only after that batch",
    "energy": "run energy from the replica's meter over the run window, idle included (energy_j) and with "
    "the idle baseline (measured by the replica before warm-up) factored out (idle_free_energy_j)",
    "settling": f"through ingress replicas, a run of up to {SETTLE_REQUESTS} requests at the first run's "
    "rate and policy goes before the first run and is not kept (the first requests through that path are "
    "far slower)",
}


def run_bench(
    config: BenchConfig, out: Path, *, resume: bool = False, address: str | None = None, progress=None
) -> list[dict]:
    """Run every model x frequency x policy of `config` into `out`; returns the run rows (also
    stored as they end). `resume` skips the runs already stored there."""
    from rich.progress import Progress

    from greenray.ray_setup import connect

    deployment = _deployment(config)
    models = [zoo.resolve(m) for m in config.models]
    progress = progress if progress is not None else Progress(disable=True)
    check_out(out)
    if address is None:  # a local replica sees this machine: say now what it would say later
        check_here(deployment.serving.device, deployment.energy)
    connect(address)
    device = resolve_device(deployment.serving.device, deployment.replicas)
    zoo.check_precision(deployment.serving.precision, device)
    store = ResultStore(out)
    earlier = (store.read_json(BENCH_FILE) or {}).get("models", {}) if resume else {}
    about = run_record("serve-bench", config, device=device, out=str(out), notes=NOTES, models=earlier)
    store.write_json(BENCH_FILE, about)
    done = done_runs(store, config) if resume else set()
    found: list[dict] = []
    for model in models:
        found += bench_model(model, config, device, store, progress, about, done)
    return found


def bench_model(
    model: str, config: BenchConfig, device: str, store: ResultStore, progress, about: dict, done: set
) -> list[dict]:
    """Deploy one model's replicas, measure their idle, warm them up, run what is not done."""
    plans = [
        RunPlan(f, p, config.requests, config.arrival, config.seed)
        for f in config.frequencies
        for p in config.policies
        if (model, str(p), f) not in done
    ]
    if not plans:
        progress.console.print(f"{model}: every run is already in {store.root}, skipped")
        return []
    deployment = _deployment(config)
    replicas = deploy(model, deployment, device)
    try:
        served = on_loop(start(model, replicas, deployment, progress, seed=config.seed))
        about["models"][model] = served.about
        store.write_json(BENCH_FILE, about)
        say_runs_estimate(progress, model, plans, deployment.replicas, served.about["warmup_s_per_image"])
        if deployment.ingress_replicas:  # the warm-up reached the model replicas, not the ingress path
            on_loop(served.settle(plans[0]))
        return [record_run(served, plan, store, progress) for plan in plans]
    finally:
        replicas.delete()


def _deployment(config: BenchConfig) -> DeployConfig:
    """The deployment settings of a bench (model replicas, ingress, warm-up, serving, energy)."""
    return config.deploy


def done_runs(store: ResultStore, config: BenchConfig) -> set[tuple[str, str, float]]:
    """(model, policy, frequency) of the runs already stored with these settings, for --resume."""
    runs = store.read("runs")
    if runs.empty:
        return set()
    deployment = _deployment(config)
    same = (
        (runs["status"] == OK)
        & (runs["precision"] == deployment.serving.precision)
        & (runs["arrival"] == config.arrival)
        & (runs["requests"] == config.requests)
        & (runs["preprocess_in_window"] == deployment.serving.preprocess_in_window)
        # folders from before ingress replicas existed ran without them
        & (
            runs.get("ingress_replicas", pd.Series(0, index=runs.index)).fillna(0)
            == deployment.ingress_replicas
        )
    )
    return {(r.model, r.policy, float(r.frequency_hz)) for r in runs[same].itertuples()}
