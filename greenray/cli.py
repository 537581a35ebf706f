"""The `greenray` command line: hpo, mutate, serve-bench, report, run, meter, doctor.

Each command turns its flags into a config (greenray.config: every default and check is
declared there once; a flag is named after the setting it sets), hands it to a pipeline, and
shows the result (greenray.ui). Heavy imports (torch, Ray) happen inside the commands, so
`--help` and bad flags answer at once.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from greenray.config import BenchConfig, MutateConfig, PolicyTuneConfig, ServeConfig, StudyConfig
from greenray.energy import EnergyRequestError
from greenray.errors import UsageError
from greenray.trust import RESUME_HELP, TRUST_HELP
from greenray.ui import err, out, say

app = typer.Typer(
    name="greenray",
    help="Energy as a first-class number in hyperparameter search and batched inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
STUDY, BENCH, MUTATE = StudyConfig.defaults(), BenchConfig.defaults(), MutateConfig.defaults()
SERVE, TUNE = ServeConfig.defaults(), PolicyTuneConfig.defaults()


def user_errors(command):
    """Turn a user's mistake into one sentence on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="greenray: %(message)s")
        try:
            return command(*args, **kwargs)
        except (UsageError, EnergyRequestError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def settings(ctx: typer.Context, config: type) -> dict:
    """The command's flags that are settings of `config`, by flat name."""
    names = config.flat_paths()
    return {name: value for name, value in ctx.params.items() if name in names}


def _results(kind: str) -> Path:
    return Path("greenray-results") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


# Options every command that measures energy takes (their defaults are the hpo study's).
Energy = Annotated[
    str,
    typer.Option(
        help="Energy backend: auto (NVML GPUs, else RAPL), nvml, rapl, simulated (labelled so), none."
    ),
]
RequireEnergy = Annotated[
    bool, typer.Option("--require-energy", help="Exit 2 instead of running unmeasured.")
]
IntervalMs = Annotated[float, typer.Option(help="Power sampling interval in milliseconds.")]
Address = Annotated[str | None, typer.Option(help="A Ray cluster to join (auto or host:port).")]
TrustFolder = Annotated[bool, typer.Option("--trust-folder", help=TRUST_HELP)]


# ---------------------------------------------------------------------------- doctor


@app.command()
@user_errors
def doctor() -> None:
    """What this machine can measure: GPUs, energy counters, RAPL, Ray, torch and CUDA."""
    from greenray.energy import EnergyUnavailable, open_meter
    from greenray.energy.nvml import NvmlBackend
    from greenray.energy.rapl import RaplBackend
    from greenray.results import versions
    from greenray.ui import energy_sources, gpu_table

    try:
        nvml = NvmlBackend()
    except EnergyUnavailable as exc:
        out.print(f"NVML: not available ({exc})")
    else:
        out.print(gpu_table(nvml) if nvml.devices() else "NVML: no GPU visible to this process")
        nvml.close()
    try:
        out.print("RAPL: " + ", ".join(d.key for d in RaplBackend().devices()))
    except EnergyUnavailable as exc:
        out.print(f"RAPL: not available ({exc})")
    with open_meter("auto", quiet=True) as meter:
        out.print(f"energy sources with --energy auto: {energy_sources(meter)}", highlight=False)
    for name, version in (versions() | _cuda()).items():
        out.print(f"{name}: {version or 'not installed'}")


def _cuda() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {}
    return {"CUDA": f"{torch.version.cuda or 'none (CPU build)'}, available: {torch.cuda.is_available()}"}


# ----------------------------------------------------------------------------- meter


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def meter(
    command: Annotated[list[str] | None, typer.Argument(help="The command to measure, after --.")] = None,
    idle: Annotated[
        float | None, typer.Option("--idle", help="Measure idle power for SECONDS first.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the command's stdout goes to stderr).")
    ] = False,
    energy: Energy = STUDY.energy,
    interval_ms: IntervalMs = STUDY.interval_ms,
    require_energy: RequireEnergy = False,
) -> None:
    """Run a command and print its time and energy per device: greenray meter -- CMD ARGS..."""
    from greenray.ui import print_idle, print_measurement

    if idle is not None and idle <= 0:
        raise UsageError(f"--idle needs a positive number of seconds, not {idle:g}")
    if not command and idle is None:
        raise UsageError(
            "give a command to measure after --, e.g. greenray meter -- python train.py, or --idle SECONDS"
        )
    if command and shutil.which(command[0]) is None:
        raise UsageError(f"command not found: {command[0]!r}; give a program on PATH or a path to one")
    config = StudyConfig.from_flat(
        {"energy": energy, "interval_ms": interval_ms, "require_energy": require_energy}
    )
    with config.energy.open_meter() as power:
        idle_w = power.measure_idle(idle) if idle is not None else {}
        if not command:
            print_idle(power, idle_w, as_json)
            return
        with power.window("command") as window:
            code = subprocess.run(command, stdout=sys.stderr if as_json else None).returncode
    print_measurement(window.measurement, command, code, idle_w, as_json)
    if require_energy and window.measurement.energy_source == "none":
        raise UsageError("the energy source stopped answering during the command (see the warning above)")
    raise typer.Exit(code)


# ------------------------------------------------------------------------------- hpo


@app.command()
@user_errors
def hpo(
    ctx: typer.Context,
    strategy: Annotated[
        str, typer.Option(help="grid (the study's partial grid), random, or bayes (GP with PI).")
    ] = (STUDY.strategy),
    net: Annotated[
        str, typer.Option(help="dense-linear, dense-poly or cnn (or the class names).")
    ] = STUDY.net,
    dataset: Annotated[str, typer.Option(help="digits, synthetic, fashionmnist or cifar10.")] = STUDY.dataset,
    data_dir: Annotated[str, typer.Option(help="torchvision's data folder.")] = STUDY.data_dir,
    download: Annotated[
        bool, typer.Option(help="Download fashionmnist/cifar10 into --data-dir.")
    ] = STUDY.download,
    synthetic_shape: Annotated[str, typer.Option(help="CxHxW of --dataset synthetic.")] = "x".join(
        map(str, STUDY.synthetic_shape)
    ),
    params: Annotated[
        str,
        typer.Option(
            help="3 (lr, beta1, beta2) or 5 (+ eps, weight_decay); add +batch, +epochs to search the "
            "batch size and the epoch count too (e.g. 3+batch)."
        ),
    ] = str(STUDY.params),
    uniform_lr: Annotated[
        bool, typer.Option("--uniform", help="Draw lr uniformly as the study did (else log-uniform).")
    ] = STUDY.uniform_lr,
    rounds: Annotated[int, typer.Option(help="Configurations to try (the study: 64).")] = STUDY.rounds,
    repetitions: Annotated[
        int, typer.Option(help="Trainings per configuration (the study: 8).")
    ] = STUDY.repetitions,
    epochs: Annotated[int, typer.Option(help="Epochs per training (the study: 25).")] = STUDY.epochs,
    batch_size: Annotated[int, typer.Option(help="Training batch size (the study's).")] = STUDY.batch_size,
    seed: Annotated[
        int, typer.Option(help="Seeds the searcher and, with round and repetition, each trial.")
    ] = (STUDY.seed),
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(
            help="GPUs per trial, fractions share a GPU (default 1 where the cluster has GPUs, else 0)."
        ),
    ] = STUDY.gpus_per_trial,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial.")] = STUDY.cpus_per_trial,
    max_concurrent: Annotated[int | None, typer.Option(help="At most this many trials at once.")] = (
        STUDY.max_concurrent
    ),
    n_conv: Annotated[int, typer.Option("--conv-layers", help="SimpleCNN's conv layers.")] = STUDY.n_conv,
    n_linear: Annotated[
        int, typer.Option("--linear-layers", help="Linear layers of every net.")
    ] = STUDY.n_linear,
    relu: Annotated[
        bool | None,
        typer.Option(
            "--relu/--no-relu", help="ReLU (default on for cnn, off for the dense nets, as studied)."
        ),
    ] = STUDY.relu,
    idle_seconds: Annotated[float, typer.Option(help="Idle baseline per GPU before the trials; 0 skips.")] = (
        STUDY.idle_seconds
    ),
    energy: Energy = STUDY.energy,
    interval_ms: IntervalMs = STUDY.interval_ms,
    require_energy: RequireEnergy = STUDY.require_energy,
    energy_budget: Annotated[
        float | None,
        typer.Option(
            help="Stop the study once its trials together spent this many Joules (idle-free where known)."
        ),
    ] = STUDY.energy_budget,
    patience: Annotated[
        int | None, typer.Option(help="Stop the study after this many rounds without a better round.")
    ] = STUDY.patience,
    target_accuracy: Annotated[
        float | None, typer.Option(help="Stop the study once a round's mean accuracy reaches this.")
    ] = STUDY.target_accuracy,
    scheduler: Annotated[
        str, typer.Option(help="fifo (every trial to its last epoch), asha or median: stop bad trials early.")
    ] = STUDY.scheduler,
    objective: Annotated[
        str, typer.Option(help="What the searcher optimises: accuracy, accuracy-per-kj or pareto.")
    ] = STUDY.objective,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default greenray-results/hpo-TIME).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help=RESUME_HELP)] = None,
    trust_folder: TrustFolder = False,
    address: Address = None,
) -> None:
    """Search Adam's hyperparameters on Ray Tune, measuring every trial's energy."""
    from greenray.tune.study import resume_study, start_study

    if resume is not None:
        run = resume_study(resume, address=address, say=say, trust=trust_folder)
    else:
        flat = settings(ctx, StudyConfig)
        flat["params"] = int(params) if params.strip().isdigit() else params  # 3, 5 stay numbers
        run = start_study(StudyConfig.from_flat(flat), out_dir or _results("hpo"), address=address, say=say)
    _print_summary(run, "hpo")


def _print_summary(run, command: str) -> None:
    """A study's closing lines; exit 130 where it stopped before its end (Ctrl-C, a crash)."""
    from greenray.analysis.summary import describe, summarize
    from greenray.results import ResultStore
    from greenray.tune.study import PARETO_FILE

    store = ResultStore(run.root)
    pareto = run.root / PARETO_FILE
    front = _read_csv(pareto) if pareto.exists() else None
    rows, config = store.read("trials"), run.config
    summary = summarize(rows, config.trials, levers=config.levers, stopped_by=run.stopped_by, front=front)
    for line in describe(summary):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"results: {run.root}", highlight=False, soft_wrap=True)
    if not run.finished:
        err.print(f"stopped before the budget ran out: continue with greenray {command} --resume {run.root}")
        raise typer.Exit(130)


def _read_csv(path: Path):
    import pandas as pd

    return pd.read_csv(path)


# ---------------------------------------------------------------------------- mutate


@app.command()
@user_errors
def mutate(
    ctx: typer.Context,
    mutate: Annotated[
        str, typer.Option(help="Hyperparameters to change, one at a time: epochs, lr, batch_size.")
    ] = ",".join(MUTATE.mutate),
    steps: Annotated[
        str, typer.Option(help="Factors each is multiplied by, one mutant each (e.g. 0.5,2).")
    ] = ",".join(f"{s:g}" for s in MUTATE.steps),
    lr: Annotated[float, typer.Option(help="The base configuration's learning rate (Adam's default).")] = (
        MUTATE.lr
    ),
    repetitions: Annotated[int, typer.Option(help="Trainings of each configuration.")] = MUTATE.repetitions,
    parallel: Annotated[
        int, typer.Option(help="Trials at once (1: serially); on a GPU they share it, 1/N each.")
    ] = MUTATE.parallel,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial.")] = MUTATE.cpus_per_trial,
    net: Annotated[str, typer.Option(help="dense-linear, dense-poly or cnn.")] = MUTATE.net,
    dataset: Annotated[
        str, typer.Option(help="digits, synthetic, fashionmnist or cifar10.")
    ] = MUTATE.dataset,
    data_dir: Annotated[str, typer.Option(help="torchvision's data folder.")] = MUTATE.data_dir,
    download: Annotated[bool, typer.Option(help="Download fashionmnist/cifar10 into --data-dir.")] = (
        MUTATE.download
    ),
    synthetic_shape: Annotated[str, typer.Option(help="CxHxW of --dataset synthetic.")] = "x".join(
        map(str, MUTATE.synthetic_shape)
    ),
    epochs: Annotated[int, typer.Option(help="The base configuration's epochs.")] = MUTATE.epochs,
    batch_size: Annotated[int, typer.Option(help="The base configuration's batch size.")] = MUTATE.batch_size,
    n_conv: Annotated[int, typer.Option("--conv-layers", help="SimpleCNN's conv layers.")] = MUTATE.n_conv,
    n_linear: Annotated[int, typer.Option("--linear-layers", help="Linear layers of every net.")] = (
        MUTATE.n_linear
    ),
    relu: Annotated[
        bool | None, typer.Option("--relu/--no-relu", help="ReLU (default: the net's studied default).")
    ] = MUTATE.relu,
    seed: Annotated[int, typer.Option(help="Seeds each trial with its round and repetition.")] = MUTATE.seed,
    idle_seconds: Annotated[float, typer.Option(help="Idle baseline per GPU before the trials; 0 skips.")] = (
        MUTATE.idle_seconds
    ),
    energy: Energy = MUTATE.energy,
    interval_ms: IntervalMs = MUTATE.interval_ms,
    require_energy: RequireEnergy = MUTATE.require_energy,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default greenray-results/mutate-TIME).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help=RESUME_HELP)] = None,
    trust_folder: TrustFolder = False,
    address: Address = None,
) -> None:
    """Train a base configuration and one mutant per hyperparameter and step (one value changed
    at a time), serially or several at once on one GPU: hyperparameters against energy."""
    from greenray.tune.mutate import start_mutation
    from greenray.tune.study import resume_study

    if resume is not None:
        run = resume_study(resume, address=address, say=say, trust=trust_folder)
    else:
        config = MutateConfig.from_flat(settings(ctx, MutateConfig))
        run = start_mutation(config, out_dir or _results("mutate"), address=address, say=say)
    _print_summary(run, "mutate")
    out.print(f"report: greenray report {run.root}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------- serve-bench


@app.command("serve-bench")
@user_errors
def serve_bench(
    ctx: typer.Context,
    models: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model(s), comma-separated: alexnet, densenet, shufflenet, vit, convnext (the study's), "
            "shufflenet_v2_x0_5 (the study's code), or any torchvision classification model.",
        ),
    ] = ",".join(BENCH.models),
    policies: Annotated[
        str, typer.Option("--policy", help="Batching policies: fixed:N, fixed:N@MS (max wait), greedy[:CAP].")
    ] = ",".join(BENCH.policies),
    frequencies: Annotated[
        str, typer.Option("--frequency", help="Request rates in Hz, comma-separated.")
    ] = ",".join(f"{f:g}" for f in BENCH.frequencies),
    requests: Annotated[
        int, typer.Option(help="A run ends when this many requests are served.")
    ] = BENCH.requests,
    warmup_batches: Annotated[int, typer.Option(help="Warm-up batches before each model.")] = (
        BENCH.warmup_batches
    ),
    warmup_batch_size: Annotated[int, typer.Option(help="Images per warm-up batch (the study: 32).")] = (
        BENCH.warmup_batch_size
    ),
    weights: Annotated[
        str, typer.Option(help="default, none (random) or a state-dict PATH.")
    ] = BENCH.weights,
    precision: Annotated[str, typer.Option(help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU).")] = (
        BENCH.precision
    ),
    device: Annotated[
        str, typer.Option(help="auto (a GPU if the cluster has one), cpu or cuda.")
    ] = BENCH.device,
    arrival: Annotated[
        str, typer.Option(help="constant, jitter (the study's (1/f)*U(0.8,1.2)) or poisson.")
    ] = (BENCH.arrival),
    seed: Annotated[int, typer.Option(help="Seeds the arrivals and the images.")] = BENCH.seed,
    image_size: Annotated[
        int | None, typer.Option(help="Input size in pixels (default: the weights' own, 224).")
    ] = BENCH.image_size,
    idle_seconds: Annotated[float, typer.Option(help="Idle baseline per replica before warm-up.")] = (
        BENCH.idle_seconds
    ),
    preprocess_in_window: Annotated[
        bool, typer.Option(help="Convert and normalise images inside each batch's energy window.")
    ] = BENCH.preprocess_in_window,
    replicas: Annotated[
        int, typer.Option(help="Replicas of the model, one per GPU (with --device cuda), on any node.")
    ] = BENCH.replicas,
    replica_cpus: Annotated[
        float, typer.Option("--cpus-per-replica", help="CPUs Ray reserves for each replica.")
    ] = (BENCH.replica_cpus),
    ingress_replicas: Annotated[
        int,
        typer.Option(
            help="Ingress replicas that check requests and hand them to the model replicas in groups "
            "(0: the load generator calls the model replicas itself, as the study did)."
        ),
    ] = BENCH.ingress_replicas,
    ingress_cpus: Annotated[
        float, typer.Option("--cpus-per-ingress", help="CPUs Ray reserves for each ingress replica.")
    ] = BENCH.ingress_cpus,
    energy: Energy = BENCH.energy,
    interval_ms: IntervalMs = BENCH.interval_ms,
    require_energy: RequireEnergy = BENCH.require_energy,
    resume: Annotated[bool, typer.Option(help="Skip runs already stored in --out.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default: greenray-results/serve-TIME).")
    ] = None,
    address: Address = None,
) -> None:
    """Serve a model on Ray Serve under batching policies and request rates; energy per image and
    response times per run."""
    from greenray.serve.bench import run_bench
    from greenray.ui import bars, runs_table

    config = BenchConfig.from_flat(settings(ctx, BenchConfig))
    folder = out_dir or _results("serve")
    try:
        with bars() as progress:
            rows = run_bench(config, folder, resume=resume, address=address, progress=progress)
    except KeyboardInterrupt:
        err.print(f"interrupted: the runs that ended are in {folder}; continue with --resume")
        raise typer.Exit(130) from None
    if rows:
        out.print(runs_table(rows))
    out.print(f"results: {folder}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------- serve, serve-tune

# The options `serve` and `serve-tune` share (their defaults are the same in both configs).
Model = Annotated[
    str,
    typer.Option(
        "--model", help="The model: any name serve-bench takes (convnext, vit, shufflenet_x0_5, ...)."
    ),
]
Replicas = Annotated[int, typer.Option(help="Model replicas, one per GPU (with --device cuda), on any node.")]
ReplicaCpus = Annotated[
    float, typer.Option("--cpus-per-replica", help="CPUs Ray reserves for each model replica.")
]
IngressReplicas = Annotated[
    int,
    typer.Option(help="Ingress replicas: they take the requests, decode them and group them for the model."),
]
IngressCpus = Annotated[
    float, typer.Option("--cpus-per-ingress", help="CPUs Ray reserves for each ingress replica.")
]
WarmupBatches = Annotated[int, typer.Option(help="Warm-up batches before the first request.")]
WarmupBatchSize = Annotated[int, typer.Option(help="Images per warm-up batch.")]
Weights = Annotated[str, typer.Option(help="default, none (random) or a state-dict PATH.")]
Precision = Annotated[str, typer.Option(help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU).")]
Device = Annotated[str, typer.Option(help="auto (a GPU if the cluster has one), cpu or cuda.")]
ImageSize = Annotated[int | None, typer.Option(help="Input size in pixels (default: the weights' own, 224).")]
PreprocessInWindow = Annotated[
    bool, typer.Option(help="Convert and normalise images inside each batch's energy window.")
]
IdleSeconds = Annotated[float, typer.Option(help="Idle baseline per replica before warm-up; 0 skips it.")]
Frequency = Annotated[float, typer.Option(help="The request rate the policy search runs at, Hz.")]
SloMs = Annotated[float, typer.Option(help="The p99 response time the policy must keep, milliseconds.")]
Runs = Annotated[int, typer.Option(help="Live runs the search may use, Serve's default policy included.")]
TuneRequests = Annotated[int, typer.Option("--requests", help="Served requests per search run.")]
MaxBatchSize = Annotated[int, typer.Option(help="The largest batch cap the search tries.")]
Arrival = Annotated[str, typer.Option(help="Search runs' arrivals: poisson, constant or jitter.")]
Seed = Annotated[int, typer.Option(help="Seeds the searcher, the arrivals and the images.")]


@app.command()
@user_errors
def serve(
    ctx: typer.Context,
    policy: Annotated[
        str,
        typer.Option(
            help="Batching policy: fixed:N, fixed:N@MS, greedy[:CAP], or auto (search one first for "
            "--frequency and --slo-ms, as serve-tune does)."
        ),
    ] = SERVE.policy,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens the server to the network.")
    ] = (SERVE.host),
    port: Annotated[int, typer.Option(help="HTTP port.")] = SERVE.port,
    max_queue: Annotated[
        int, typer.Option(help="Requests admitted and not yet answered, at most; beyond, 503 at once.")
    ] = SERVE.max_queue,
    model: Model = SERVE.model,
    replicas: Replicas = SERVE.replicas,
    replica_cpus: ReplicaCpus = SERVE.replica_cpus,
    ingress_replicas: IngressReplicas = SERVE.ingress_replicas,
    ingress_cpus: IngressCpus = SERVE.ingress_cpus,
    warmup_batches: WarmupBatches = SERVE.warmup_batches,
    warmup_batch_size: WarmupBatchSize = SERVE.warmup_batch_size,
    weights: Weights = SERVE.weights,
    precision: Precision = SERVE.precision,
    device: Device = SERVE.device,
    image_size: ImageSize = SERVE.image_size,
    preprocess_in_window: PreprocessInWindow = SERVE.preprocess_in_window,
    idle_seconds: IdleSeconds = SERVE.idle_seconds,
    energy: Energy = SERVE.energy,
    interval_ms: IntervalMs = SERVE.interval_ms,
    require_energy: RequireEnergy = SERVE.require_energy,
    frequency: Frequency = SERVE.frequency,
    slo_ms: SloMs = SERVE.slo_ms,
    runs: Runs = SERVE.runs,
    requests: TuneRequests = SERVE.requests,
    max_batch_size: MaxBatchSize = SERVE.max_batch_size,
    arrival: Arrival = SERVE.arrival,
    seed: Seed = SERVE.seed,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default: greenray-results/live-TIME).")
    ] = None,
    address: Address = None,
) -> None:
    """Serve a model over HTTP on Ray Serve until Ctrl-C: POST /predict (JPEG/PNG), GET /metrics
    (Prometheus), GET /healthz; every batch is appended to DIR/batches.parquet as it ends."""
    from greenray.serve.server import Server
    from greenray.ui import bars, print_serving, print_stopped, print_tuned

    config = ServeConfig.from_flat(settings(ctx, ServeConfig))
    server = Server(config, out_dir or _results("live"), address=address, say=say)
    try:
        with bars() as progress:
            server.progress = progress
            server.start()
    except KeyboardInterrupt:
        err.print(f"interrupted before serving; what was stored is in {server.out}")
        raise typer.Exit(130) from None
    if server.tuned is not None:
        print_tuned(server.tuned, server.out / "tune")
    print_serving(server)
    print_stopped(server.serve_until_interrupted())


@app.command("serve-tune")
@user_errors
def serve_tune(
    ctx: typer.Context,
    model: Model = TUNE.model,
    frequency: Frequency = TUNE.frequency,
    slo_ms: SloMs = TUNE.slo_ms,
    runs: Runs = TUNE.runs,
    requests: TuneRequests = TUNE.requests,
    max_batch_size: MaxBatchSize = TUNE.max_batch_size,
    arrival: Arrival = TUNE.arrival,
    seed: Seed = TUNE.seed,
    replicas: Replicas = TUNE.replicas,
    replica_cpus: ReplicaCpus = TUNE.replica_cpus,
    ingress_replicas: IngressReplicas = TUNE.ingress_replicas,
    ingress_cpus: IngressCpus = TUNE.ingress_cpus,
    warmup_batches: WarmupBatches = TUNE.warmup_batches,
    warmup_batch_size: WarmupBatchSize = TUNE.warmup_batch_size,
    weights: Weights = TUNE.weights,
    precision: Precision = TUNE.precision,
    device: Device = TUNE.device,
    image_size: ImageSize = TUNE.image_size,
    preprocess_in_window: PreprocessInWindow = TUNE.preprocess_in_window,
    idle_seconds: IdleSeconds = TUNE.idle_seconds,
    energy: Energy = TUNE.energy,
    interval_ms: IntervalMs = TUNE.interval_ms,
    require_energy: RequireEnergy = TUNE.require_energy,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default: greenray-results/tune-TIME).")
    ] = None,
    address: Address = None,
) -> None:
    """Find the batching policy (cap and max wait) with the least energy per image whose p99 at
    --frequency stays under --slo-ms, by live runs on one deployment; every run is stored."""
    from greenray.serve.server import serve_tune as tune
    from greenray.ui import bars, print_tuned

    config = PolicyTuneConfig.from_flat(settings(ctx, PolicyTuneConfig))
    folder = out_dir or _results("tune")
    try:
        with bars() as progress:
            result = tune(config, folder, address=address, progress=progress)
    except KeyboardInterrupt:
        err.print(f"interrupted: the runs that ended are in {folder}")
        raise typer.Exit(130) from None
    print_tuned(result, folder)
    if result.best is None:
        raise UsageError(
            f"no policy kept p99 under {result.slo_ms:g} ms at {result.frequency_hz:g} Hz: raise --slo-ms or "
            "lower --frequency"
        )


# -------------------------------------------------------------------- report and run


@app.command()
@user_errors
def report(
    folders: Annotated[
        list[Path],
        typer.Argument(help="Results folders of greenray hpo or serve-bench, or the --out of greenray run."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="The report's folder.")] = Path("greenray-report"),
    target: Annotated[
        float | None,
        typer.Option(help="Target accuracy for the energy-until-target table (default: 0.95 x the best)."),
    ] = None,
) -> None:
    """Tables (Markdown, CSV), figures (PNG) and report.md from stored results; runs no model."""
    from greenray.analysis.report import build_report

    if target is not None and not 0 < target <= 1:
        raise UsageError(f"--target is an accuracy in (0, 1], not {target:g}")
    written = build_report(folders, out_dir, target)
    for line in written.cannot:
        err.print(f"note: {line}", highlight=False, soft_wrap=True)
    out.print(
        f"report: {out_dir / 'report.md'} ({len(written.tables)} table files, {len(written.figures)} figures)"
        + (" [bold red]SIMULATED energy[/]" if written.simulated else ""),
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@user_errors
def run(
    experiment_file: Annotated[
        Path, typer.Argument(help="An experiment file, e.g. experiments/architecture.yaml.")
    ],
    scale: Annotated[
        float,
        typer.Option(
            help="A miniature: rounds, repetitions, epochs, requests and warm-up times F (0 < F <= 1)."
        ),
    ] = 1.0,
    dataset: Annotated[
        str | None, typer.Option(help="Replace the experiment's data sets, e.g. digits (comma-separated).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Replace an inference experiment's models (comma-separated).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default: greenray-results/EXPERIMENT).")
    ] = None,
    device: Annotated[str, typer.Option(help="Where models run: auto, cpu or cuda.")] = BENCH.device,
    data_dir: Annotated[str | None, typer.Option(help="torchvision's data folder.")] = None,
    download: Annotated[bool, typer.Option(help="Download fashionmnist/cifar10 into --data-dir.")] = False,
    idle_seconds: Annotated[
        float | None, typer.Option(help="Idle baseline seconds per cell (default: each command's own).")
    ] = None,
    address: Address = None,
    energy: Energy = STUDY.energy,
) -> None:
    """Run an experiment file cell by cell (one hpo or serve-bench each) into --out; a re-run
    skips the cells already complete."""
    import contextlib

    from greenray import experiments
    from greenray.ui import bars

    planned = experiments.prepare(experiment_file, scale, datasets=_listed(dataset), models=_listed(model))
    folder = out_dir or Path("greenray-results") / planned.name
    # serve-bench draws its runs' bars on this Progress; hpo draws its own.
    progress = bars() if planned.kind == "serve-bench" else contextlib.nullcontext()
    with progress as shown:
        options = experiments.RunOptions(
            device=device,
            energy=energy,
            address=address,
            data_dir=data_dir,
            download=download,
            idle_seconds=idle_seconds,
            say=say,
            progress=shown,
        )
        index = experiments.run_experiment(
            planned, folder, options, on_cell=lambda cell, state: err.print(f"[bold]{cell.name}[/]: {state}")
        )
    states = [c["status"] for c in index.cells]
    done = states.count(experiments.COMPLETE)
    out.print(f"{done} of {len(states)} cells complete in {folder}; report: greenray report {folder}")
    if experiments.FAILED in states:
        err.print("some cells failed (their errors are in index.json): re-run the same command to retry them")
        raise typer.Exit(1)
    if done < len(states):
        err.print("stopped before the end: re-run the same command to go on where it stopped")
        raise typer.Exit(130)


def _listed(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def main() -> None:
    """The console script: a flag that is not even of the right type (typer's own checks) is
    one sentence and exit 2 too, like every other bad input."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # typer's own usage errors (a flag's type, an unknown flag)
        context = getattr(exc, "ctx", None)
        hint = f" (see greenray {context.info_name} --help)" if context and context.parent else ""
        lines = (exc.format_message() if hasattr(exc, "format_message") else str(exc)).splitlines()
        if lines:  # (none where the command's help was shown instead)
            err.print(f"[bold red]error:[/] {lines[0]}{hint}", highlight=False, soft_wrap=True)
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:
        err.print("interrupted")
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
