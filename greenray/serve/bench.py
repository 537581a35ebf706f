"""serve-bench: per model, one Serve replica per device, idle baseline, warm-up, then one run per
(frequency, policy) until enough requests are served; energy per image, response times and
batch records stored as each run ends."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from greenray import zoo
from greenray.errors import UsageError
from greenray.results import ResultStore
from greenray.serve.loadgen import LoadGenerator, RequestTiming, SendStats, arrival_offsets, error_line
from greenray.serve.policy import BatchPolicy

log = logging.getLogger("greenray.serve")

STUDY_FREQUENCIES = (16.0, 32.0, 64.0, 128.0)
STUDY_POLICIES = "fixed:16,fixed:32,fixed:64,fixed:128,greedy"
IMAGE_POOL = 64  # distinct random images the generator cycles through
DRAIN_TIMEOUT_S = 600.0
NOTES = {
    "served": "a run ends when --requests answers have come back; it counts every request whose batch "
    "ended inside the replica's run window (so served >= requests); requests still queued then are "
    "drained afterwards (fixed:N partial batches filled with extra images) and excluded",
    "clocks": "submitted_s/completed_s/latency_s: the caller (load generator); enqueued_s, batch_*: the "
    "replica, whose handler takes a request arriving during a batch only after that batch",
    "energy": "run energy from the replica's meter over the run window, idle included (energy_j) and with "
    "the idle baseline (measured by the replica before warm-up) factored out (idle_free_energy_j)",
}


@dataclass(frozen=True)
class BenchSettings:
    """One serve-bench invocation; `check()` turns bad values into one-sentence UsageErrors."""

    models: tuple[str, ...]
    policies: tuple[BatchPolicy, ...]
    frequencies: tuple[float, ...] = STUDY_FREQUENCIES
    requests: int = 8192
    warmup_batches: int = 256
    warmup_batch_size: int = 32
    weights: str = "default"
    precision: str = "fp32"
    device: str = "auto"  # auto, cpu or cuda
    arrival: str = "constant"
    seed: int = 0
    image_size: int | None = None
    energy: str = "auto"
    interval_ms: float = 10.0
    require_energy: bool = False
    idle_seconds: float = 5.0
    preprocess_in_window: bool = False
    replicas: int = 1
    replica_cpus: float = 0.5
    resume: bool = False
    out: Path = Path("results/serve")
    address: str | None = None

    def check(self) -> None:
        """Everything that can be checked without Ray (model names need torchvision)."""
        if self.requests < 1:
            raise UsageError(f"--requests must be at least 1, not {self.requests}")
        if self.warmup_batches < 0 or self.warmup_batch_size < 1:
            raise UsageError("--warmup-batches must be 0 or more")
        if not self.frequencies:
            raise UsageError("--frequency names no frequency; give Hz values such as 16,32,64,128")
        for frequency in self.frequencies:
            next(arrival_offsets(self.arrival, frequency))  # raises for f <= 0 or a bad --arrival
        if self.image_size is not None and self.image_size < 16:
            raise UsageError(f"--image-size must be at least 16 pixels, not {self.image_size}")
        if self.idle_seconds < 0:
            raise UsageError(f"--idle-seconds cannot be negative ({self.idle_seconds:g})")
        if self.replicas < 1:
            raise UsageError(f"--replicas must be at least 1, not {self.replicas}")
        if not self.replica_cpus > 0:
            raise UsageError(f"--cpus-per-replica must be a positive number, not {self.replica_cpus:g}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        zoo.check_weights(self.weights)
        if self.device == "cpu":
            zoo.check_precision(self.precision, "cpu")
        elif self.precision not in zoo.PRECISIONS:
            zoo.check_precision(self.precision, "cuda")
        for model in self.models:
            zoo.resolve(model)


def parse_frequencies(text: str) -> tuple[float, ...]:
    """'16,32,64' -> (16.0, 32.0, 64.0), or a UsageError."""
    values = []
    for part in text.split(","):
        if part.strip():
            try:
                values.append(float(part))
            except ValueError:
                raise UsageError(
                    f"--frequency takes numbers of Hz such as 16,32,64, not {part.strip()!r}"
                ) from None
    for value in values:
        if not value > 0 or value == float("inf"):
            raise UsageError(f"--frequency values must be positive numbers of Hz, not {value:g}")
    return tuple(dict.fromkeys(values))


# ------------------------------------------------------------------------------ replicas


class Replicas:
    """The replicas of one model: one Serve application of one replica per device, each
    measuring its own device. Requests go round robin; control calls go to all."""

    def __init__(self, handles: list, app_names: list[str]) -> None:
        self.handles = handles
        self.app_names = app_names

    @classmethod
    def deploy(cls, config, count: int, *, num_cpus: float, num_gpus: float) -> Replicas:
        from ray import serve

        from greenray.serve.deployment import SERVE_LOGGING, server_app

        # Requests come through handles only: no HTTP proxy; Serve logs warnings only (its
        # driver logger is set up when ray.serve is imported, so only now can it be quieted).
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        serve.start(proxy_location="Disabled", logging_config=SERVE_LOGGING)
        tag = uuid.uuid4().hex[:6]
        handles, names = [], []
        for index in range(count):
            name = f"greenray-{tag}-{index}"
            app = server_app(config, name=f"{config.model}-{index}", num_cpus=num_cpus, num_gpus=num_gpus)
            handles.append(serve.run(app, name=name, route_prefix=None))
            names.append(name)
        return cls(handles, names)

    def __len__(self) -> int:
        return len(self.handles)

    def call(self, method: str, *args) -> list:
        responses = [getattr(handle, method).remote(*args) for handle in self.handles]
        return [response.result() for response in responses]

    async def acall(self, method: str, *args) -> list:
        return list(await asyncio.gather(*(getattr(h, method).remote(*args) for h in self.handles)))

    def send(self, request_id: int, image):
        """Request `request_id` to replica request_id mod N; returns Serve's response (awaitable)."""
        return self.handles[request_id % len(self.handles)].remote(image, request_id=request_id)

    def delete(self) -> None:
        from ray import serve

        for name in self.app_names:
            serve.delete(name)


# ---------------------------------------------------------------------------------- runs


@dataclass
class _RunResult:
    timings: list[RequestTiming]
    ends: list[dict]  # per replica: end_run's answer
    records: list[dict]  # per replica: take_records' answer
    send_stats: SendStats
    still_pending: int
    errors: int = 0
    failure: str | None = None


@dataclass
class _Context:
    """What every run of one model shares."""

    settings: BenchSettings
    model: str
    replicas: Replicas
    infos: list[dict]
    images: list
    filler: object
    store: ResultStore
    progress: object
    rows: list[dict] = field(default_factory=list)


def run_bench(settings: BenchSettings, progress=None, versions: dict | None = None) -> list[dict]:
    """Run every model x frequency x policy of `settings`; returns the run rows (also stored)."""
    from rich.progress import Progress

    from greenray.ray_setup import connect

    settings.check()
    progress = progress if progress is not None else Progress(disable=True)
    if settings.address is None:  # a local replica sees this machine: say now what it would say later
        if settings.device == "cuda" and not _local_cuda():
            raise UsageError("--device cuda needs a GPU, but torch sees none here; use --device cpu or auto")
        _check_local_energy(settings)
    connect(settings.address)
    device = _resolve_device(settings)
    zoo.check_precision(settings.precision, device)
    store = ResultStore(settings.out)
    about = {"settings": _jsonable(settings), "device": device, "versions": versions or {}, "notes": NOTES}
    about["models"] = (store.read_json("bench") or {}).get("models", {}) if settings.resume else {}
    store.write_json("bench", about)
    done = _done_runs(store, settings) if settings.resume else set()
    rows: list[dict] = []
    for model in settings.models:
        rows += _bench_model(zoo.resolve(model), settings, device, store, progress, about, done)
    return rows


def _bench_model(
    model: str, settings: BenchSettings, device: str, store: ResultStore, progress, about: dict, done: set
) -> list[dict]:
    from greenray.serve.deployment import ServerConfig

    combos = [
        (f, p) for f in settings.frequencies for p in settings.policies if (model, str(p), f) not in done
    ]
    if not combos:
        progress.console.print(f"{model}: every run is already in {settings.out}, skipped")
        return []
    config = ServerConfig(
        model=model,
        weights=settings.weights,
        precision=settings.precision,
        device=device,
        image_size=settings.image_size,
        energy=settings.energy,
        interval_ms=settings.interval_ms,
        preprocess_in_window=settings.preprocess_in_window,
    )
    status = progress.add_task(f"{model}: starting {settings.replicas} replica(s)", total=None)
    num_gpus = 1 if device == "cuda" else 0
    replicas = Replicas.deploy(config, settings.replicas, num_cpus=settings.replica_cpus, num_gpus=num_gpus)
    try:
        infos = replicas.call("info")
        _check_replicas(infos, settings)
        for info in infos:
            if info["notice"]:
                progress.console.print(f"[yellow]notice:[/] {info['notice']}")
        progress.update(status, description=f"{model}: idle baseline ({settings.idle_seconds:g} s)")
        baselines = replicas.call("measure_idle", settings.idle_seconds)
        progress.update(status, description=f"{model}: warm-up, {settings.warmup_batches} batches")
        warmup_s = replicas.call("warmup", settings.warmup_batches, settings.warmup_batch_size)
        about["models"][model] = {
            "replicas": infos,
            "idle_baseline_w": baselines,
            "warmup_s": warmup_s,
            "warmup": f"{settings.warmup_batches} batches of {settings.warmup_batch_size}",
        }
        store.write_json("bench", about)
        progress.remove_task(status)
        images, filler = _image_pool(infos[0]["image_size"], settings.seed)
        ctx = _Context(settings, model, replicas, infos, images, filler, store, progress)
        for frequency, policy in combos:
            ctx.rows.append(_bench_run(ctx, frequency, policy))
        return ctx.rows
    finally:
        replicas.delete()


def _bench_run(ctx: _Context, frequency: float, policy: BatchPolicy) -> dict:
    settings = ctx.settings
    run_id = uuid.uuid4().hex[:12]
    task = ctx.progress.add_task(f"{ctx.model} {policy} @ {frequency:g} Hz", total=settings.requests)
    try:
        result = asyncio.run(_serve_run(ctx, run_id, frequency, policy, task))
    except Exception as exc:  # Ray raises many types for a replica that died (out of memory, a lost node)
        error = error_line(exc)
        ctx.store.append("runs", [_failed_row(ctx, run_id, frequency, policy, error)])
        raise UsageError(
            f"the replica failed during {ctx.model} {policy} at {frequency:g} Hz ({error}); the runs before "
            f"it are in {settings.out}: continue with --resume"
        ) from None
    ctx.progress.update(
        task, completed=settings.requests, description=f"{ctx.model} {policy} @ {frequency:g} Hz"
    )
    rows = _rows(ctx, run_id, frequency, policy, result)
    for table in ("requests", "batches", "replica_runs"):
        ctx.store.append(table, rows[table])
    ctx.store.append("runs", [rows["run"]])
    return rows["run"]


async def _serve_run(ctx: _Context, run_id: str, frequency: float, policy: BatchPolicy, task) -> _RunResult:
    settings, replicas = ctx.settings, ctx.replicas
    await replicas.acall("set_policy", policy.max_batch_size, policy.batch_wait_timeout_s)
    await replicas.acall("begin_run", run_id)
    stop = asyncio.Event()
    answered = {"ok": 0, "failed": 0}
    failure_limit = max(10, settings.requests // 10)

    def on_answer(timing: RequestTiming, ok: bool) -> None:
        answered["ok" if ok else "failed"] += 1
        ctx.progress.update(task, completed=min(answered["ok"], settings.requests))
        if answered["ok"] >= settings.requests or answered["failed"] >= failure_limit:
            stop.set()

    images = ctx.images
    generator = LoadGenerator(
        lambda i: replicas.send(i, images[i % len(images)]),
        arrival_offsets(settings.arrival, frequency, settings.seed),
        on_answer=on_answer,
    )
    await generator.run(stop)
    ends = await replicas.acall("end_run", run_id)
    ctx.progress.update(task, description=f"{ctx.model} {policy} @ {frequency:g} Hz: draining")
    still_pending = await _drain(replicas, generator, policy, ctx.filler)
    await replicas.acall("set_policy", policy.max_batch_size, policy.batch_wait_timeout_s)
    records = await replicas.acall("take_records")
    failure = None
    if answered["failed"] >= failure_limit:
        errors = [t.error for t in generator.timings if t.error]
        failure = f"{answered['failed']} requests failed, e.g. {errors[0]}"
    return _RunResult(
        timings=generator.timings,
        ends=ends,
        records=records,
        send_stats=generator.stats(),
        still_pending=still_pending,
        errors=answered["failed"],
        failure=failure,
    )


async def _drain(replicas: Replicas, generator: LoadGenerator, policy: BatchPolicy, filler) -> int:
    """Let every request still queued be answered (outside the run). Serve reads a batch's
    timeout when its first request arrives, so a fixed:N partial batch already waiting stays
    until full whatever the new timeout: it is filled with extra images."""
    if not generator.pending:
        return 0
    await replicas.acall("set_policy", policy.max_batch_size, 0.0)
    fillers = []
    if policy.waits_forever:
        fillers = [h.remote(filler) for h in replicas.handles for _ in range(policy.size - 1)]
    missing = await generator.drain(DRAIN_TIMEOUT_S)
    await asyncio.gather(*fillers, return_exceptions=True)
    return missing


# ---------------------------------------------------------------------------------- rows


def _rows(ctx: _Context, run_id: str, frequency: float, policy: BatchPolicy, result: _RunResult) -> dict:
    settings = ctx.settings
    n = len(ctx.replicas)
    batches = {
        (replica, b["batch_id"]): b | {"replica": replica}
        for replica, records in enumerate(result.records)
        for b in records["batches"]
    }
    requests = []
    for timing in result.timings:
        replica = timing.request_id % n
        enqueued, batch_id = result.records[replica]["requests"].get(timing.request_id, (None, None))
        batch = batches.get((replica, batch_id), {})
        requests.append(
            {
                "run_id": run_id,
                "request_id": timing.request_id,
                "replica": replica,
                "scheduled_s": timing.scheduled_s,
                "submitted_s": timing.submitted_s,
                "completed_s": timing.completed_s,
                "latency_s": timing.latency_s,
                "enqueued_s": enqueued,
                "batch_id": batch_id,
                "batch_started_s": batch.get("started_s"),
                "batch_ended_s": batch.get("ended_s"),
                "queue_wait_s": batch["started_s"] - enqueued if batch else None,
                "served": bool(batch.get("in_run")) and timing.error is None,
                "error": timing.error,
            }
        )
    served = [r for r in requests if r["served"]]
    latencies = np.array([r["latency_s"] for r in served if r["latency_s"] is not None])
    counted = [b for b in batches.values() if b["in_run"]]
    common = {
        "run_id": run_id,
        "model": ctx.model,
        "precision": settings.precision,
        "weights": ctx.infos[0]["weights_source"],
        "image_size": ctx.infos[0]["image_size"],
        "policy": str(policy),
        "frequency_hz": frequency,
        "arrival": settings.arrival,
        "preprocess_in_window": settings.preprocess_in_window,
    }
    replica_rows = [
        common
        | {
            "replica": i,
            "node_id": ctx.infos[i]["node_id"],
            "model_device": ctx.infos[i]["model_device"],
            "served": end["served"],
            "batches": end["batches"],
            "idle_w": end["idle_w"],
        }
        | end["energy"]
        for i, end in enumerate(result.ends)
    ]
    energy = _combine([end["energy"] for end in result.ends])
    total_served = sum(end["served"] for end in result.ends)
    if total_served != len(served):
        log.warning("run %s: replicas counted %d served, the caller %d", run_id, total_served, len(served))
    run = (
        common
        | {
            "status": "failed" if result.failure else "ok",
            "failure": result.failure,
            "started_at": min(end["started_at"] for end in result.ends),
            "seed": settings.seed,
            "requests": settings.requests,
            "served": total_served,
            "submitted": len(result.timings),
            "excluded": len(result.timings) - len(served),
            "failed": result.errors,
            "never_answered": result.still_pending,
            "replicas": n,
            "node_id": ",".join(sorted({str(info["node_id"]) for info in ctx.infos})),
            "model_device": ",".join(info["model_device"] for info in ctx.infos),
            "max_batch_size": policy.max_batch_size,
            "max_wait_ms": policy.max_wait_ms,
            "energy_per_image_j": _per(energy["energy_j"], total_served),
            "idle_free_energy_per_image_j": _per(energy["idle_free_energy_j"], total_served),
            "max_latency_s": float(latencies.max()) if latencies.size else None,
            "p50_latency_s": float(np.percentile(latencies, 50)) if latencies.size else None,
            "p99_latency_s": float(np.percentile(latencies, 99)) if latencies.size else None,
            "mean_queue_wait_s": _mean([r["queue_wait_s"] for r in served]),
            "achieved_rate_hz": result.send_stats.achieved_rate_hz,
            "scheduled_rate_hz": result.send_stats.scheduled_rate_hz,  # a Poisson draw has its own
            "p99_send_lateness_s": result.send_stats.p99_lateness_s,
            "images_per_s": _per(total_served, energy["seconds"]),
            "batches": len(counted),
            "mean_batch_size": _mean([b["size"] for b in counted]),
            "idle_w": _sum_or_none(end["idle_w"] for end in result.ends),
        }
        | energy
    )
    batch_rows = [
        {"run_id": run_id, "model": ctx.model, "policy": str(policy), "frequency_hz": frequency}
        | {k: v for k, v in b.items()}
        | {"preprocess_in_window": settings.preprocess_in_window}
        for b in batches.values()
    ]
    return {"run": run, "requests": requests, "batches": batch_rows, "replica_runs": replica_rows}


def _failed_row(ctx: _Context, run_id: str, frequency: float, policy: BatchPolicy, error: str) -> dict:
    """A run that broke off: stored, so the results say it happened, and never counted."""
    from greenray.results import TABLES

    return dict.fromkeys(TABLES["runs"]) | {
        "run_id": run_id,
        "status": "failed",
        "failure": error,
        "model": ctx.model,
        "precision": ctx.settings.precision,
        "policy": str(policy),
        "frequency_hz": frequency,
        "arrival": ctx.settings.arrival,
        "requests": ctx.settings.requests,
        "energy_source": "none",
    }


def _combine(rows: list[dict]) -> dict:
    """One run's energy columns from its replicas' rows: Joules add up, the run lasts as long
    as the longest window, peak power is the highest replica's (samples are not aligned)."""
    if len(rows) == 1:
        return dict(rows[0])
    seconds = max(r["seconds"] for r in rows)
    joules = _sum_or_none(r["energy_j"] for r in rows)
    sources = {r["energy_source"] for r in rows}
    source = "none" if "none" in sources else sources.pop() if len(sources) == 1 else "nvml-power"
    return {
        "seconds": seconds,
        "energy_j": joules,
        "idle_free_energy_j": _sum_or_none(r["idle_free_energy_j"] for r in rows),
        "cpu_energy_j": _sum_or_none(r["cpu_energy_j"] for r in rows),
        "avg_power_w": joules / seconds if joules is not None and seconds > 0 else None,
        "peak_power_w": max((r["peak_power_w"] for r in rows if r["peak_power_w"] is not None), default=None),
        "energy_source": source,
        "power_field": ",".join(sorted({str(r["power_field"]) for r in rows})),
        "energy_approximate": any(r["energy_approximate"] for r in rows),
        **{key: ",".join(str(r[key]) for r in rows) for key in ("device", "device_name", "device_uuid")},
        "node": ",".join(sorted({r["node"] for r in rows})),
    }


# ------------------------------------------------------------------------------- helpers


def _check_replicas(infos: list[dict], settings: BenchSettings) -> None:
    for info in infos:
        if info["setup_error"]:
            raise UsageError(info["setup_error"])
        if settings.require_energy and not info["energy_devices"]:
            raise UsageError(
                f"the replica on {info['node']} can read no energy source (no NVML GPU, no readable RAPL "
                "counter); drop --require-energy or run where one is"
            )


def _image_pool(size: int, seed: int) -> tuple[list, object]:
    """Random uint8 CHW images as numpy arrays, which Ray moves more cheaply than tensors (the
    model's time and energy do not depend on what the images show)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (3, size, size), dtype=np.uint8) for _ in range(IMAGE_POOL)]
    return images, np.zeros((3, size, size), dtype=np.uint8)


def _resolve_device(settings: BenchSettings) -> str:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if settings.device == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    if settings.device == "cuda" and gpus < settings.replicas:
        raise UsageError(
            f"--device cuda needs {settings.replicas} GPU(s) in the Ray cluster, which has {gpus:g}; "
            "use --device cpu or fewer --replicas"
        )
    return settings.device


def _check_local_energy(settings: BenchSettings) -> None:
    from greenray.energy import EnergyMeter, EnergyUnavailable

    try:
        meter = EnergyMeter.create(settings.energy)
    except EnergyUnavailable as exc:
        raise UsageError(f"--energy {settings.energy} is not available here ({exc}); use auto") from None
    readable = bool(meter.devices)
    meter.close()
    if settings.require_energy and not readable:
        raise UsageError(
            "no energy source is readable here (no NVML GPU, no readable RAPL counter); "
            "drop --require-energy or run where one is"
        )


def _local_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _done_runs(store: ResultStore, settings: BenchSettings) -> set[tuple[str, str, float]]:
    """(model, policy, frequency) of the runs already stored with these settings, for --resume."""
    runs = store.read("runs")
    if runs.empty:
        return set()
    same = (
        (runs["status"] == "ok")
        & (runs["precision"] == settings.precision)
        & (runs["arrival"] == settings.arrival)
        & (runs["requests"] == settings.requests)
        & (runs["preprocess_in_window"] == settings.preprocess_in_window)
    )
    return {(r.model, r.policy, float(r.frequency_hz)) for r in runs[same].itertuples()}


def _jsonable(settings: BenchSettings) -> dict:
    data = asdict(replace(settings, out=str(settings.out)))
    data["policies"] = [str(p) for p in settings.policies]
    return data


def _per(value: float | None, count: float | None) -> float | None:
    return value / count if value is not None and count else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _sum_or_none(values) -> float | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else float(sum(values))


def summary_table(rows: list[dict]):
    """The runs as a rich table, for the terminal."""
    from rich.table import Table

    simulated = any(row["energy_source"] == "simulated" for row in rows)
    table = Table(title="serve-bench" + (" (energy simulated, not measured)" if simulated else ""))
    columns = {
        "model": "model",
        "policy": "policy",
        "frequency_hz": "Hz",
        "served": "served",
        "energy_per_image_j": "J/image",
        "idle_free_energy_per_image_j": "idle-free J/image",
        "p50_latency_s": "p50 s",
        "p99_latency_s": "p99 s",
        "max_latency_s": "max s",
        "achieved_rate_hz": "sent Hz",
        "mean_batch_size": "mean batch",
        "peak_power_w": "peak W",
        "energy_source": "source",
    }
    for title in columns.values():
        table.add_column(title)
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key in columns))
    return table


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
