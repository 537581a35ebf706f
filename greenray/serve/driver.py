"""Deploying a model and making it ready for runs, shared by serve-bench, serve-tune and
`greenray serve`: `deploy` its replicas, `start` them (checks, idle baseline, warm-up) into a
ServedModel whose `run` is the one run API (greenray.serve.run), and `record_run`, a run stored
as serve-bench stores it. Plus the checks said before anything starts.

A deployment's settings (a DeployConfig: model replicas, ingress, warm-up, serving, energy) are
read by `deploy` and `start` only; a run's rows take what they need from the ServedModel."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from greenray.config import BatchPolicy, DeployConfig, EnergyConfig
from greenray.energy import EnergyRequestError
from greenray.errors import UsageError
from greenray.results import ResultStore
from greenray.serve import rows
from greenray.serve.loadgen import error_line
from greenray.serve.loop import on_loop
from greenray.serve.replicas import IngressOptions, Replicas
from greenray.serve.run import RunPlan, ServedModel
from greenray.serve.warmup import warm_up

IMAGE_POOL = 64  # distinct random images the generator cycles through


def deploy(
    model: str,
    deployment: DeployConfig,
    device: str,
    *,
    ingress: IngressOptions | None = None,
    policy: BatchPolicy | None = None,
) -> Replicas:
    """The model's replicas on `device` (cpu or cuda: one GPU each), behind
    deployment.ingress_replicas ingress replicas when there are any (or behind `ingress`)."""
    serving = deployment.serving.model_copy(update={"device": device})
    if ingress is None and deployment.ingress_replicas:
        ingress = IngressOptions(deployment.ingress_replicas, deployment.ingress_cpus)
    return Replicas.deploy(
        model,
        serving,
        deployment.energy,
        deployment.replicas,
        num_cpus=deployment.replica_cpus,
        num_gpus=1 if device == "cuda" else 0,
        ingress=ingress,
        policy=policy,
    )


async def start(
    name: str, replicas: Replicas, deployment: DeployConfig, progress, seed: int = 0
) -> ServedModel:
    """Check the deployed replicas, measure their idle baseline and warm them up; the images
    runs send are drawn with `seed`."""
    status = progress.add_task(f"{name}: starting {deployment.replicas} replica(s)", total=None)
    infos = await replicas.call("info")
    _check_replicas(infos)
    for info in infos:
        if info["notice"]:
            progress.console.print(f"[yellow]notice:[/] {info['notice']}")
    progress.update(status, description=f"{name}: idle baseline ({deployment.energy.idle_seconds:g} s)")
    baselines = await replicas.call("measure_idle", deployment.energy.idle_seconds)
    progress.remove_task(status)
    warmed = await warm_up(name, replicas, deployment, progress)
    images, filler = image_pool(infos[0]["image_size"], seed)
    about = {
        "replicas": infos,
        "idle_baseline_w": baselines,
        "warmup_s": warmed.seconds,
        "warmup_s_per_image": warmed.s_per_image,
        "warmup": f"{deployment.warmup_batches} batches of {deployment.warmup_batch_size}",
        "ingress_replicas": deployment.ingress_replicas,
    }
    return ServedModel(
        name,
        replicas,
        infos,
        images,
        filler,
        about,
        deployment.serving,
        deployment.ingress_replicas,
        deployment.energy.g_per_kwh,
    )


def record_run(
    model: ServedModel,
    plan: RunPlan,
    store: ResultStore,
    progress,
    resume_hint: str = "continue with --resume",
) -> dict:
    """One run, its rows stored as soon as it ends (requests, batches, replica_runs, runs);
    returns its run row. A replica that dies fails the run (stored as failed) and ends the
    command with one sentence."""
    key = rows.RunKey(uuid.uuid4().hex[:12], model.name, plan)
    label = f"{model.name} {plan.policy} @ {plan.frequency_hz:g} Hz"
    task = progress.add_task(label, total=plan.requests)
    try:
        result = on_loop(
            model.run(plan, key.run_id, on_progress=lambda n: progress.update(task, completed=n))
        )
    except Exception as exc:  # Ray raises many types for a replica that died (out of memory, a lost node)
        error = error_line(exc)
        store.append("runs", [rows.failed_row(key, model, error)])
        raise UsageError(
            f"the replica failed during {label} ({error}); the runs before it are in {store.root}: "
            + resume_hint
        ) from None
    progress.update(task, completed=plan.requests)
    requests = rows.request_rows(key, result)
    store.append("requests", requests)
    store.append("batches", rows.batch_rows(key, model, result))
    store.append("replica_runs", rows.replica_rows(key, model, result))
    run = rows.run_row(key, model, result, requests)
    store.append("runs", [run])
    return run


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


def _check_replicas(infos: list[dict]) -> None:
    """What a replica could not set up (its model, or energy --require-energy asks for), said
    in its own sentence."""
    for info in infos:
        if info["setup_error"]:
            raise UsageError(info["setup_error"])
