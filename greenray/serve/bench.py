"""serve-bench: per model, one Serve replica per device, idle baseline, warm-up, then one run per
(frequency, policy) until enough requests are served; energy per image, response times and
batch records stored as each run ends. It drives the deployment through greenray.serve.driver
and its run API (greenray.serve.run), as serve-tune and `greenray serve` do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from greenray.config import BenchConfig, DeployConfig
from greenray.results import OK, ResultStore, run_record
from greenray.serve import fast_path, zoo
from greenray.serve.driver import check_here, check_out, deploy, record_run, resolve_device, start
from greenray.serve.http_client import HttpPath, jpeg_bodies
from greenray.serve.loop import on_loop
from greenray.serve.replicas import IngressOptions, Replicas
from greenray.serve.run import SETTLE_REQUESTS, RunPlan, ServedModel
from greenray.serve.warmup import say_runs_estimate

LOOPBACK = "127.0.0.1"  # where the HTTP path's server listens (only this machine's load generator)

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
    "request_path": "handle: decoded images through Serve handles, latency_s is the replica path's; http: "
    "JPEG bodies in POST /predict to an ingress replica (its own port on Serve's fast path, else Serve's "
    "proxy), latency_s is what an HTTP client sees (HTTP, decode and the ingress hop included)",
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
    http = config.request_path == "http"
    connect(address, env=fast_path.env() if deployment.fast_path else None)
    proxy_port = fast_path.free_port(LOOPBACK) if http else None
    device = resolve_device(deployment.serving.device, deployment.replicas)
    zoo.check_precision(deployment.serving.precision, device)
    store = ResultStore(out)
    earlier = (store.read_json(BENCH_FILE) or {}).get("models", {}) if resume else {}
    about = run_record("serve-bench", config, device=device, out=str(out), notes=NOTES, models=earlier)
    store.write_json(BENCH_FILE, about)
    done = done_runs(store, config) if resume else set()
    found: list[dict] = []
    for model in models:
        found += bench_model(model, config, device, store, progress, about, done, proxy_port)
    return found


def bench_model(
    model: str,
    config: BenchConfig,
    device: str,
    store: ResultStore,
    progress,
    about: dict,
    done: set,
    proxy_port: int | None = None,
) -> list[dict]:
    """Deploy one model's replicas, measure their idle, warm them up, run what is not done; with
    `proxy_port`, requests go over HTTP (Serve's proxy listens there)."""
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
    ingress = None
    if proxy_port is not None:
        http = {"host": LOOPBACK, "port": proxy_port}
        ingress = IngressOptions(deployment.ingress_replicas, deployment.ingress_cpus, http=http)
    replicas = deploy(model, deployment, device, ingress=ingress)
    try:
        served = on_loop(start(model, replicas, deployment, progress, seed=config.seed))
        if proxy_port is not None:
            served.http = _open_http(served, replicas, proxy_port)
            served.about["request_url"] = served.http.url
        about["models"][model] = served.about
        store.write_json(BENCH_FILE, about)
        say_runs_estimate(progress, model, plans, deployment.replicas, served.about["warmup_s_per_image"])
        if deployment.ingress_replicas:  # the warm-up reached the model replicas, not the ingress path
            on_loop(served.settle(plans[0]))
        return [record_run(served, plan, store, progress) for plan in plans]
    finally:
        replicas.delete()


def _open_http(served: ServedModel, replicas: Replicas, proxy_port: int) -> HttpPath:
    """The HTTP path to `served`, opened to requests: the ingress replica's own port on Serve's
    fast path, else Serve's proxy (a Ray started without the fast path)."""
    urls = fast_path.direct_urls(replicas.app_names[0], LOOPBACK, proxy_port)
    on_loop(_open(replicas))
    url = urls[0] if urls else f"http://{LOOPBACK}:{proxy_port}"
    return HttpPath(url, jpeg_bodies(served.images), fast_path=bool(urls))


async def _open(replicas: Replicas) -> None:
    await replicas.hub.open.remote()  # an ingress answers 503 "starting" until it is opened


def _deployment(config: BenchConfig) -> DeployConfig:
    """The deployment settings of a bench (model replicas, ingress, warm-up, serving, energy)."""
    return config.deployment


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
        & (_column(runs, "request_path", "handle") == config.request_path)
        # folders from before ingress replicas existed ran without them
        & (
            runs.get("ingress_replicas", pd.Series(0, index=runs.index)).fillna(0)
            == deployment.ingress_replicas
        )
    )
    return {(r.model, r.policy, float(r.frequency_hz)) for r in runs[same].itertuples()}


def _column(runs: pd.DataFrame, name: str, default) -> pd.Series:
    """A column of stored runs; folders from before it existed hold `default` throughout."""
    return runs.get(name, pd.Series(default, index=runs.index)).fillna(default)
