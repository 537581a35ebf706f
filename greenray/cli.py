"""The `greenray` command line: hpo, serve-bench, report, run, meter, doctor.

Commands parse and check flags, then hand over to the package; heavy imports (torch, Ray)
happen inside the commands so `--help` and bad flags answer at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from greenray.energy import EnergyMeter, EnergyUnavailable, Measurement
from greenray.errors import UsageError

app = typer.Typer(
    name="greenray",
    help="Energy as a first-class number in hyperparameter search and batched inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output gets a wide console so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def user_errors(command):
    """Turn a UsageError into one sentence on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="greenray: %(message)s")
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


# Options shared by every command that measures energy.
EnergyOpt = Annotated[
    Literal["auto", "nvml", "rapl", "simulated", "none"],
    typer.Option(
        "--energy",
        help="Energy backend: auto (NVML GPUs, else RAPL), nvml, rapl, simulated (labelled so), none.",
    ),
]
RequireEnergyOpt = Annotated[
    bool, typer.Option("--require-energy", help="Exit 2 instead of running unmeasured.")
]
IntervalOpt = Annotated[
    float, typer.Option("--interval-ms", min=1.0, help="Power sampling interval in milliseconds.")
]


def open_meter(energy: str, interval_ms: float = 10.0, require_energy: bool = False) -> EnergyMeter:
    """The meter a command asked for, or a UsageError saying why it cannot be had."""
    try:
        meter = EnergyMeter.create(energy, interval_s=interval_ms / 1000.0)
    except EnergyUnavailable as exc:
        raise UsageError(f"--energy {energy} is not available here ({exc}); use --energy auto") from None
    if require_energy and not meter.devices:
        meter.close()
        raise UsageError(
            "no energy source is readable here (no NVML GPU, no readable RAPL counter); "
            "drop --require-energy or run where one is"
        )
    return meter


# ---------------------------------------------------------------------------- doctor


@app.command()
@user_errors
def doctor() -> None:
    """What this machine can measure: GPUs, energy counters, RAPL, Ray, torch and CUDA."""
    from greenray.energy.nvml import NvmlBackend
    from greenray.energy.rapl import RaplBackend

    try:
        nvml = NvmlBackend()
    except EnergyUnavailable as exc:
        out.print(f"NVML: not available ({exc})")
        nvml = None
    if nvml is not None:
        table = Table(title=f"NVIDIA GPUs (driver {nvml.driver_version()})")
        for column in (
            "device",
            "name",
            "NVML index",
            "UUID",
            "energy counter",
            "power field",
            "power limit W",
            "power W",
        ):
            table.add_column(column)
        for device in nvml.devices():
            limit = nvml.power_limit_w(device)
            table.add_row(
                device.key,
                device.name,
                str(device.index),
                device.uuid or "",
                "yes" if nvml.has_counter(device) else "no (power samples instead)",
                nvml.power_field,
                f"{limit:.0f}" if limit else "?",
                f"{nvml.read_power_w(device):.1f}",
            )
        out.print(table if nvml.devices() else "NVML: no GPU visible to this process")
        nvml.close()
    try:
        rapl = RaplBackend()
        out.print("RAPL: " + ", ".join(d.key for d in rapl.devices()))
    except EnergyUnavailable as exc:
        out.print(f"RAPL: not available ({exc})")
    out.print(f"energy source with --energy auto: {_auto_source()}")
    for name, version in _versions().items():
        out.print(f"{name}: {version}")


def _auto_source() -> str:
    with EnergyMeter.create("auto") as meter:
        sources = sorted(meter.sources)
    return ", ".join(sources) if sources else "none (energy is not measured)"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("greenray", "ray", "torch", "torchvision", "bayesian-optimization", "nvidia-ml-py"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import torch

        cuda = torch.version.cuda or "none (CPU build)"
        versions["CUDA"] = f"{cuda}, available: {torch.cuda.is_available()}"
    except ImportError:
        pass
    return versions


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
    energy: EnergyOpt = "auto",
    interval_ms: IntervalOpt = 10.0,
    require_energy: RequireEnergyOpt = False,
) -> None:
    """Run a command and print its time and energy per device: greenray meter -- CMD ARGS..."""
    if idle is not None and idle <= 0:
        raise UsageError(f"--idle needs a positive number of seconds, not {idle:g}")
    if not command and idle is None:
        raise UsageError(
            "give a command to measure after --, e.g. greenray meter -- python train.py, or --idle SECONDS"
        )
    if command and shutil.which(command[0]) is None:
        raise UsageError(f"command not found: {command[0]!r}; give a program on PATH or a path to one")
    with open_meter(energy, interval_ms, require_energy) as power:
        idle_w = power.measure_idle(idle) if idle is not None else {}
        if not command:
            _print_idle(idle_w, power, as_json)
            return
        with power.window("command") as window:
            code = subprocess.run(command, stdout=sys.stderr if as_json else None).returncode
    _print_measurement(window.measurement, command, code, idle_w, as_json)
    if require_energy and window.measurement.energy_source == "none":
        raise UsageError("the energy source stopped answering during the command (see the warning above)")
    raise typer.Exit(code)


def _print_idle(idle_w: dict[str, float], power: EnergyMeter, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"idle_w": idle_w, "energy_sources": sorted(power.sources)}))
        return
    if not idle_w:
        out.print("idle power: nothing measurable here (energy source: none)")
    for key, watts in idle_w.items():
        out.print(f"idle power {key}: {watts:.1f} W")


def _print_measurement(m: Measurement, command: list[str], code: int, idle_w: dict, as_json: bool) -> None:
    if as_json:
        data = m.to_dict() | {"command": command, "exit_code": code, "idle_w": idle_w}
        print(json.dumps(data, default=str))
        return
    label = " (simulated, not a measurement)" if m.energy_source == "simulated" else ""
    table = Table(title=f"{' '.join(command)}: {m.seconds:.3f} s, exit code {code}{label}")
    for column in ("device", "name", "J", "idle-free J", "avg W", "peak W", "samples", "source"):
        table.add_column(column)
    for d in m.devices:
        table.add_row(
            d.device.key,
            d.device.name,
            _fmt(d.joules),
            _fmt(d.idle_free_joules),
            _fmt(d.avg_power_w),
            _fmt(d.peak_power_w),
            str(d.samples),
            d.source,
        )
    err.print(
        table if m.devices else f"{' '.join(command)}: {m.seconds:.3f} s; energy not measured (source: none)"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ------------------------------------------------------------------------------- hpo


@app.command()
@user_errors
def hpo(
    strategy: Annotated[
        str, typer.Option(help="grid (the study's partial grid), random, or bayes (GP with PI).")
    ] = "bayes",
    net: Annotated[
        str, typer.Option(help="dense-linear, dense-poly or cnn (or the class names).")
    ] = "dense-poly",
    dataset: Annotated[str, typer.Option(help="digits, synthetic, fashionmnist or cifar10.")] = "digits",
    data_dir: Annotated[
        str | None, typer.Option(help="torchvision's data folder (default ~/.cache/greenray/data).")
    ] = None,
    download: Annotated[bool, typer.Option(help="Download fashionmnist/cifar10 into --data-dir.")] = False,
    synthetic_shape: Annotated[str, typer.Option(help="CxHxW of --dataset synthetic.")] = "1x28x28",
    params: Annotated[int, typer.Option(help="3 (lr, beta1, beta2) or 5 (+ eps, weight_decay).")] = 3,
    uniform: Annotated[
        bool, typer.Option(help="Draw lr uniformly as the study did (else log-uniform).")
    ] = False,
    rounds: Annotated[int, typer.Option(help="Configurations to try (the study: 64).")] = 8,
    repetitions: Annotated[int, typer.Option(help="Trainings per configuration (the study: 8).")] = 2,
    epochs: Annotated[int, typer.Option(help="Epochs per training (the study: 25).")] = 10,
    batch_size: Annotated[int, typer.Option(help="Training batch size (the study's).")] = 512,
    seed: Annotated[
        int, typer.Option(help="Seeds the searcher and, with round and repetition, each trial.")
    ] = 0,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(
            help="GPUs per trial, fractions share a GPU (default 1 where the cluster has GPUs, else 0)."
        ),
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial.")] = 1.0,
    max_concurrent: Annotated[int | None, typer.Option(help="At most this many trials at once.")] = None,
    conv_layers: Annotated[int, typer.Option(help="SimpleCNN's conv layers.")] = 2,
    linear_layers: Annotated[int, typer.Option(help="Linear layers of every net.")] = 3,
    relu: Annotated[
        bool | None,
        typer.Option(
            "--relu/--no-relu", help="ReLU (default on for cnn, off for the dense nets, as studied)."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default greenray-results/hpo-TIME).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the interrupted study in this results folder.")
    ] = None,
    address: Annotated[str | None, typer.Option(help="A Ray cluster to join (auto or host:port).")] = None,
    idle_seconds: Annotated[
        float, typer.Option(help="Idle baseline per GPU before the trials; 0 skips.")
    ] = 3.0,
    energy: EnergyOpt = "auto",
    interval_ms: IntervalOpt = 10.0,
    require_energy: RequireEnergyOpt = False,
) -> None:
    """Search Adam's hyperparameters on Ray Tune, measuring every trial's energy."""
    import time

    from greenray.results import ResultStore
    from greenray.tune.settings import StudySettings
    from greenray.tune.study import resume_study, start_study
    from greenray.tune.summary import describe, summarize

    if resume is not None:
        run = resume_study(resume, address=address, say=err.print)
    else:
        settings = StudySettings(
            strategy=strategy,
            net=net,
            dataset=dataset,
            data_dir=data_dir or StudySettings.data_dir,
            download=download,
            synthetic_shape=_shape(synthetic_shape),
            params=params,
            uniform_lr=uniform,
            rounds=rounds,
            repetitions=repetitions,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
            max_concurrent=max_concurrent,
            energy=energy,
            interval_ms=interval_ms,
            require_energy=require_energy,
            idle_seconds=idle_seconds,
            n_conv=conv_layers,
            n_linear=linear_layers,
            relu=relu,
        ).checked()
        folder = out_dir or Path("greenray-results") / f"hpo-{time.strftime('%Y%m%d-%H%M%S')}"
        run = start_study(settings, folder, address=address, say=err.print)
    for line in describe(summarize(ResultStore(run.root).read("trials"), run.settings.trials)):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"results: {run.root}", highlight=False, soft_wrap=True)
    if not run.complete:
        err.print(f"stopped before the budget ran out: continue with greenray hpo --resume {run.root}")
        raise typer.Exit(130)


def _shape(text: str) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--synthetic-shape takes CxHxW such as 3x32x32, not {text!r}") from None
    return channels, height, width


# ----------------------------------------------------------------------- serve-bench


@app.command("serve-bench")
@user_errors
def serve_bench(
    model: Annotated[
        str,
        typer.Option(
            help="Model(s), comma-separated: alexnet, densenet, shufflenet, vit, convnext (the study's), "
            "shufflenet_v2_x0_5 (the study's code), or any torchvision classification model."
        ),
    ] = "convnext",
    policy: Annotated[
        str, typer.Option(help="Batching policies: fixed:N, fixed:N@MS (max wait), greedy[:CAP].")
    ] = "fixed:16,fixed:32,fixed:64,fixed:128,greedy",
    frequency: Annotated[str, typer.Option(help="Request rates in Hz, comma-separated.")] = "16,32,64,128",
    requests: Annotated[int, typer.Option(help="A run ends when this many requests are served.")] = 8192,
    warmup_batches: Annotated[int, typer.Option(help="Warm-up batches of 32 before each model.")] = 256,
    weights: Annotated[str, typer.Option(help="default, none (random) or a state-dict PATH.")] = "default",
    precision: Annotated[str, typer.Option(help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU).")] = "fp32",
    device: Annotated[str, typer.Option(help="auto (a GPU if the cluster has one), cpu or cuda.")] = "auto",
    arrival: Annotated[
        str, typer.Option(help="constant, jitter (the study's (1/f)*U(0.8,1.2)) or poisson.")
    ] = "constant",
    seed: Annotated[int, typer.Option(help="Seeds the arrivals and the images.")] = 0,
    image_size: Annotated[
        int | None, typer.Option(help="Input size in pixels (default: the weights' own, 224).")
    ] = None,
    idle_seconds: Annotated[float, typer.Option(help="Idle baseline per replica before warm-up.")] = 5.0,
    preprocess_in_window: Annotated[
        bool, typer.Option(help="Convert and normalise images inside each batch's energy window.")
    ] = False,
    replicas: Annotated[
        int, typer.Option(help="Replicas of the model, one per GPU (with --device cuda), on any node.")
    ] = 1,
    cpus_per_replica: Annotated[float, typer.Option(help="CPUs Ray reserves for each replica.")] = 0.5,
    resume: Annotated[bool, typer.Option(help="Skip runs already stored in --out.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Results folder (default: greenray-results/serve-TIME).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="A Ray cluster to join (auto or host:port).")] = None,
    energy: EnergyOpt = "auto",
    interval_ms: IntervalOpt = 10.0,
    require_energy: RequireEnergyOpt = False,
) -> None:
    """Serve a model on Ray Serve under batching policies and request rates; energy per image and
    response times per run."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from greenray.serve.bench import BenchSettings, parse_frequencies, run_bench, summary_table
    from greenray.serve.policy import parse_policies

    settings = BenchSettings(
        models=tuple(m for m in model.split(",") if m.strip()),
        policies=tuple(parse_policies(policy)),
        frequencies=parse_frequencies(frequency),
        requests=requests,
        warmup_batches=warmup_batches,
        weights=weights,
        precision=precision,
        device=device,
        arrival=arrival,
        seed=seed,
        image_size=image_size,
        energy=energy,
        interval_ms=interval_ms,
        require_energy=require_energy,
        idle_seconds=idle_seconds,
        preprocess_in_window=preprocess_in_window,
        replicas=replicas,
        replica_cpus=cpus_per_replica,
        resume=resume,
        out=out_dir or Path("greenray-results") / f"serve-{time.strftime('%Y%m%d-%H%M%S')}",
        address=address,
    )
    settings.check()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err) as progress:
            rows = run_bench(settings, progress, versions=_versions())
    except KeyboardInterrupt:
        err.print(f"interrupted: the runs that ended are in {settings.out}; continue with --resume")
        raise typer.Exit(130) from None
    if rows:
        out.print(summary_table(rows))
    out.print(f"results: {settings.out}", highlight=False, soft_wrap=True)


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
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option(help="Where models run.")] = "auto",
    data_dir: Annotated[str | None, typer.Option(help="torchvision's data folder.")] = None,
    download: Annotated[bool, typer.Option(help="Download fashionmnist/cifar10 into --data-dir.")] = False,
    idle_seconds: Annotated[
        float | None, typer.Option(help="Idle baseline seconds per cell (default: each command's own).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="A Ray cluster to join (auto or host:port).")] = None,
    energy: EnergyOpt = "auto",
) -> None:
    """Run an experiment file cell by cell (one hpo or serve-bench each) into --out; a re-run
    skips the cells already complete."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from greenray import experiments

    planned = experiments.prepare(experiment_file, scale, datasets=_listed(dataset), models=_listed(model))
    folder = out_dir or Path("greenray-results") / planned.name
    # serve-bench draws its runs' bars on this Progress; hpo draws its own.
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bars = Progress(*columns, console=err) if planned.kind == "serve-bench" else contextlib.nullcontext()
    with bars as progress:
        options = experiments.RunOptions(
            device=device,
            energy=energy,
            address=address,
            data_dir=data_dir,
            download=download,
            idle_seconds=idle_seconds,
            say=lambda line: err.print(line, highlight=False, soft_wrap=True),
            progress=progress,
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
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    app()


if __name__ == "__main__":
    main()
