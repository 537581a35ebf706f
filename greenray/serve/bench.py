"""serve-bench: per model, one Serve replica per device, idle baseline, warm-up, then one run per
(frequency, policy) until enough requests are served; energy per image, response times and
batch records stored as each run ends."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from greenray.config import BatchPolicy, BenchConfig, EnergyConfig
from greenray.energy import EnergyRequestError, nothing_readable
from greenray.errors import UsageError
from greenray.results import OK, ResultStore, run_record
from greenray.serve import rows, zoo
from greenray.serve.loadgen import error_line
from greenray.serve.replicas import IngressOptions, Replicas
from greenray.serve.run import serve_run

BENCH_FILE = "bench"  # DIR/bench.json
IMAGE_POOL = 64  # distinct random images the generator cycles through
SETTLE_REQUESTS = 64  # requests of a run whose numbers are dropped (see settle)
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


@dataclass
class ServedModel:
    """One deployed model, ready for runs: what every run of it shares."""

    name: str
    replicas: Replicas
    infos: list[dict]
    images: list
    filler: np.ndarray
    about: dict  # what bench.json (or tune.json, serve.json) says of it


def run_bench(
    config: BenchConfig, out: Path, *, resume: bool = False, address: str | None = None, progress=None
) -> list[dict]:
    """Run every model x frequency x policy of `config` into `out`; returns the run rows (also
    stored as they end). `resume` skips the runs already stored there."""
    from rich.progress import Progress

    from greenray.ray_setup import connect

    models = [zoo.resolve(m) for m in config.models]
    progress = progress if progress is not None else Progress(disable=True)
    check_out(out)
    if address is None:  # a local replica sees this machine: say now what it would say later
        check_here(config.serving.device, config.energy)
    connect(address)
    device = resolve_device(config.serving.device, config.replicas)
    zoo.check_precision(config.serving.precision, device)
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
    combos = [(f, p) for f in config.frequencies for p in config.policies if (model, str(p), f) not in done]
    if not combos:
        progress.console.print(f"{model}: every run is already in {store.root}, skipped")
        return []
    replicas = deploy(model, config, device)
    try:
        target = ready(model, replicas, config, progress)
        about["models"][model] = target.about
        store.write_json(BENCH_FILE, about)
        if config.ingress_replicas:  # the warm-up reached the model replicas, not the ingress path
            settle(target, config, *combos[0])
        return [bench_run(target, config, store, progress, f, p) for f, p in combos]
    finally:
        replicas.delete()


def ready(model: str, replicas: Replicas, config: BenchConfig, progress) -> ServedModel:
    """Check the deployed replicas, measure their idle baseline and warm them up."""
    status = progress.add_task(f"{model}: starting {config.replicas} replica(s)", total=None)
    infos = replicas.call("info")
    _check_replicas(infos, config)
    for info in infos:
        if info["notice"]:
            progress.console.print(f"[yellow]notice:[/] {info['notice']}")
    progress.update(status, description=f"{model}: idle baseline ({config.energy.idle_seconds:g} s)")
    baselines = replicas.call("measure_idle", config.energy.idle_seconds)
    progress.update(status, description=f"{model}: warm-up, {config.warmup_batches} batches")
    warmup_s = replicas.call("warmup", config.warmup_batches, config.warmup_batch_size)
    progress.remove_task(status)
    images, filler = image_pool(infos[0]["image_size"], config.seed)
    about = {
        "replicas": infos,
        "idle_baseline_w": baselines,
        "warmup_s": warmup_s,
        "warmup": f"{config.warmup_batches} batches of {config.warmup_batch_size}",
        "ingress_replicas": config.ingress_replicas,
    }
    return ServedModel(model, replicas, infos, images, filler, about)


def deploy(
    model: str, config: BenchConfig, device: str, *, ingress: IngressOptions | None = None
) -> Replicas:
    """The model's replicas on `device` (cpu or cuda: one GPU each), behind
    config.ingress_replicas ingress replicas when there are any (or behind `ingress`)."""
    serving = config.serving.model_copy(update={"device": device})
    if ingress is None and config.ingress_replicas:
        ingress = IngressOptions(config.ingress_replicas, config.ingress_cpus)
    return Replicas.deploy(
        model,
        serving,
        config.energy,
        config.replicas,
        num_cpus=config.replica_cpus,
        num_gpus=1 if device == "cuda" else 0,
        ingress=ingress,
    )


def bench_run(
    model: ServedModel,
    config: BenchConfig,
    store: ResultStore,
    progress,
    frequency: float,
    policy: BatchPolicy,
    resume_hint: str = "continue with --resume",
) -> dict:
    """One run, its rows stored as soon as it ends; a replica that dies fails the run (stored
    as failed) and ends the bench with one sentence."""
    key = rows.RunKey(uuid.uuid4().hex[:12], model.name, policy, frequency)
    label = f"{model.name} {policy} @ {frequency:g} Hz"
    task = progress.add_task(label, total=config.requests)
    try:
        result = asyncio.run(
            serve_run(
                model.replicas,
                config,
                key.run_id,
                frequency,
                policy,
                model.images,
                model.filler,
                on_progress=lambda served: progress.update(task, completed=served),
            )
        )
    except Exception as exc:  # Ray raises many types for a replica that died (out of memory, a lost node)
        error = error_line(exc)
        store.append("runs", [rows.failed_row(key, config, error)])
        raise UsageError(
            f"the replica failed during {label} ({error}); the runs before it are in {store.root}: "
            + resume_hint
        ) from None
    progress.update(task, completed=config.requests)
    requests = rows.request_rows(key, result)
    store.append("requests", requests)
    store.append("batches", rows.batch_rows(key, config, result))
    store.append("replica_runs", rows.replica_rows(key, config, model.infos, result))
    run = rows.run_row(key, config, model.infos, result, requests)
    store.append("runs", [run])
    return run


def settle(model: ServedModel, config: BenchConfig, frequency: float, policy: BatchPolicy) -> None:
    """A short run at `frequency` whose numbers are dropped. The first requests through a fresh
    deployment's path (handles, the ingress replicas' groups) are far slower than the rest (a
    p99 of 2.9 s against 0.15 s on cpu-vm), and a search's first measured run is the one its
    saving is counted against."""
    quick = config.model_copy(update={"requests": min(config.requests, SETTLE_REQUESTS)})
    run_id = f"settle-{uuid.uuid4().hex[:8]}"
    asyncio.run(serve_run(model.replicas, quick, run_id, frequency, policy, model.images, model.filler))


def resolve_device(device: str, replicas: int) -> str:
    """cpu or cuda: `auto` is cuda where the Ray cluster has a GPU."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    if device == "cuda" and gpus < replicas:
        raise UsageError(
            f"--device cuda needs {replicas} GPU(s) in the Ray cluster, which has {gpus:g}; "
            "use --device cpu or fewer --replicas"
        )
    return device


def done_runs(store: ResultStore, config: BenchConfig) -> set[tuple[str, str, float]]:
    """(model, policy, frequency) of the runs already stored with these settings, for --resume."""
    runs = store.read("runs")
    if runs.empty:
        return set()
    same = (
        (runs["status"] == OK)
        & (runs["precision"] == config.serving.precision)
        & (runs["arrival"] == config.arrival)
        & (runs["requests"] == config.requests)
        & (runs["preprocess_in_window"] == config.serving.preprocess_in_window)
        # folders from before ingress replicas existed ran without them
        & (runs.get("ingress_replicas", pd.Series(0, index=runs.index)).fillna(0) == config.ingress_replicas)
    )
    return {(r.model, r.policy, float(r.frequency_hz)) for r in runs[same].itertuples()}


def image_pool(size: int, seed: int) -> tuple[list, np.ndarray]:
    """Random uint8 CHW images as numpy arrays, which Ray moves more cheaply than tensors (the
    model's time and energy do not depend on what the images show)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (3, size, size), dtype=np.uint8) for _ in range(IMAGE_POOL)]
    return images, np.zeros((3, size, size), dtype=np.uint8)


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: give a folder for the results")


def check_here(device: str, energy: EnergyConfig) -> None:
    """What a local replica would refuse, said before anything starts."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda needs a GPU, but torch sees none here; use --device cpu or auto")
    try:
        energy.open_meter(quiet=True).close()
    except EnergyRequestError as exc:
        raise UsageError(str(exc)) from None


def _check_replicas(infos: list[dict], config: BenchConfig) -> None:
    for info in infos:
        if info["setup_error"]:
            raise UsageError(info["setup_error"])
        if config.energy.require and not info["energy_devices"]:
            raise UsageError(nothing_readable(info["node"]))
