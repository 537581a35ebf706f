"""The `greenray` command line: hpo, mutate, serve-bench, serve, serve-tune, report, run, meter,
doctor.

A command's settings are not declared here: `takes(Config)` (greenray.options) gives it one
option per setting of the config it takes, with the flag, default and help its field declares
(greenray.config). A command turns them into that config, hands it to a pipeline and shows the
result (greenray.ui); it declares only where to write, what to resume and which cluster to join.
Modules that import pandas, torch or Ray are imported inside the commands that need them, so
that `--help` and a bad flag answer at once.
"""

from __future__ import annotations

import contextlib
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

from greenray import ui
from greenray.config import (
    BenchConfig,
    EnergyConfig,
    MutateConfig,
    PolicyTuneConfig,
    ServeConfig,
    StudyConfig,
)
from greenray.energy import EnergyRequestError, EnergyUnavailable, open_meter
from greenray.energy.nvml import NvmlBackend
from greenray.energy.rapl import RaplBackend
from greenray.errors import UsageError
from greenray.options import takes
from greenray.trust import RESUME_HELP, TRUST_HELP
from greenray.ui import err, out, say

app = typer.Typer(
    name="greenray",
    help="Energy as a first-class number in hyperparameter search and batched inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


def Out(kind: str, time: bool = True):  # noqa: N802 (a type, as typer reads it)
    """The --out option of a command whose results go to greenray-results/KIND-TIME by default."""
    default = f"greenray-results/{kind}" + ("-TIME" if time else "")
    return Annotated[Path | None, typer.Option("--out", help=f"Results folder (default: {default}).")]


def _results(kind: str) -> Path:
    return Path("greenray-results") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


Address = Annotated[str | None, typer.Option(help="A Ray cluster to join (auto or host:port).")]
Resume = Annotated[Path | None, typer.Option(help=RESUME_HELP)]
TrustFolder = Annotated[bool, typer.Option("--trust-folder", help=TRUST_HELP)]


# ------------------------------------------------------------------------ doctor, meter


@app.command()
@user_errors
def doctor() -> None:
    """What this machine can measure: GPUs, energy counters, RAPL, Ray, torch and CUDA."""
    from greenray.results import versions  # pandas

    try:
        nvml = NvmlBackend()
    except EnergyUnavailable as exc:
        out.print(f"NVML: not available ({exc})")
    else:
        out.print(ui.gpu_table(nvml) if nvml.devices() else "NVML: no GPU visible to this process")
        nvml.close()
    try:
        out.print("RAPL: " + ", ".join(d.key for d in RaplBackend().devices()))
    except EnergyUnavailable as exc:
        out.print(f"RAPL: not available ({exc})")
    with open_meter("auto", quiet=True) as meter:
        out.print(f"energy sources with --energy auto: {ui.energy_sources(meter)}", highlight=False)
    for name, version in (versions() | _cuda()).items():
        out.print(f"{name}: {version or 'not installed'}")


def _cuda() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {}
    return {"CUDA": f"{torch.version.cuda or 'none (CPU build)'}, available: {torch.cuda.is_available()}"}


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
@takes(EnergyConfig, leave_out=("idle_seconds",))
def meter(
    settings: dict,
    command: Annotated[list[str] | None, typer.Argument(help="The command to measure, after --.")] = None,
    idle: Annotated[
        float | None, typer.Option("--idle", help="Measure idle power for SECONDS first.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the command's stdout goes to stderr).")
    ] = False,
) -> None:
    """Run a command and print its time and energy per device: greenray meter -- CMD ARGS..."""
    if idle is not None and not 0 < idle < float("inf"):  # NaN and inf too
        raise UsageError(f"--idle needs a positive number of seconds, not {idle:g}")
    if not command and idle is None:
        raise UsageError(
            "give a command to measure after --, e.g. greenray meter -- python train.py, or --idle SECONDS"
        )
    if command and shutil.which(command[0]) is None:
        raise UsageError(f"command not found: {command[0]!r}; give a program on PATH or a path to one")
    config = EnergyConfig.from_flat(settings)
    with config.open_meter() as power:
        idle_w = power.measure_idle(idle) if idle is not None else {}
        if not command:
            ui.print_idle(power, idle_w, as_json)
            return
        with power.window("command") as window:
            code = subprocess.run(command, stdout=sys.stderr if as_json else None).returncode
    ui.print_measurement(window.measurement, command, code, idle_w, as_json)
    if config.require and window.measurement.energy_source == "none":
        raise UsageError("the energy source stopped answering during the command (see the warning above)")
    raise typer.Exit(code)


# ------------------------------------------------------------------------- hpo, mutate


@app.command()
@user_errors
@takes(StudyConfig)
def hpo(
    settings: dict,
    out_dir: Out("hpo") = None,
    resume: Resume = None,
    trust_folder: TrustFolder = False,
    address: Address = None,
) -> None:
    """Search Adam's hyperparameters on Ray Tune, measuring every trial's energy."""
    from greenray.tune.study import resume_study, start_study  # Ray

    if resume is not None:
        run = resume_study(resume, address=address, say=say, trust=trust_folder)
    else:
        config = StudyConfig.from_flat(settings)
        run = start_study(config, out_dir or _results("hpo"), address=address, say=say)
    _print_summary(run, "hpo")


@app.command()
@user_errors
@takes(MutateConfig)
def mutate(
    settings: dict,
    out_dir: Out("mutate") = None,
    resume: Resume = None,
    trust_folder: TrustFolder = False,
    address: Address = None,
) -> None:
    """Train a base configuration and one mutant per hyperparameter and step (one value changed
    at a time), serially or several at once on one GPU: hyperparameters against energy."""
    from greenray.tune.mutate import start_mutation  # Ray
    from greenray.tune.study import resume_study

    if resume is not None:
        run = resume_study(resume, address=address, say=say, trust=trust_folder, kind="mutate")
    else:
        config = MutateConfig.from_flat(settings)
        run = start_mutation(config, out_dir or _results("mutate"), address=address, say=say)
    _print_summary(run, "mutate")
    out.print(f"report: greenray report {run.root}", highlight=False, soft_wrap=True)


def _print_summary(run, command: str) -> None:
    """A study's closing lines; exit 130 where it stopped before its end (Ctrl-C, a crash)."""
    from greenray.analysis.summary import describe, summarize
    from greenray.results import ResultStore
    from greenray.results.store import read_csv
    from greenray.tune.space import as_trained
    from greenray.tune.study import PARETO_FILE

    pareto = run.root / PARETO_FILE
    front = read_csv(pareto) if pareto.exists() else None
    rows, config = ResultStore(run.root).read("trials"), run.config
    summary = summarize(
        rows,
        config.trials,
        levers=config.levers,
        stopped_by=run.stopped_by,
        front=front,
        trained=as_trained,  # Adam's capped betas as trained
        objective=config.levers.objective if command == "hpo" else None,  # mutate searches nothing
    )
    for line in describe(summary):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"results: {run.root}", highlight=False, soft_wrap=True)
    if not run.finished:
        err.print(f"stopped before the budget ran out: continue with greenray {command} --resume {run.root}")
        raise typer.Exit(130)


# ------------------------------------------------------------ serve-bench, serve, serve-tune


@app.command("serve-bench")
@user_errors
@takes(BenchConfig)
def serve_bench(
    settings: dict,
    resume: Annotated[bool, typer.Option(help="Skip runs already stored in --out.")] = False,
    out_dir: Out("serve") = None,
    address: Address = None,
) -> None:
    """Serve a model on Ray Serve under batching policies and request rates; energy per image and
    response times per run."""
    from greenray.serve.bench import run_bench  # torch, Ray

    config = BenchConfig.from_flat(settings)
    folder = out_dir or _results("serve")
    with (
        _interrupted(f"interrupted: the runs that ended are in {folder}; continue with --resume"),
        ui.bars() as progress,
    ):
        rows = run_bench(config, folder, resume=resume, address=address, progress=progress)
    if rows:
        out.print(ui.runs_table(rows))
    out.print(f"results: {folder}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
@takes(ServeConfig)
def serve(settings: dict, out_dir: Out("live") = None, address: Address = None) -> None:
    """Serve a model over HTTP on Ray Serve until Ctrl-C: POST /predict (JPEG/PNG), GET /metrics
    (Prometheus), GET /healthz; every batch is appended to DIR/batches.parquet as it ends."""
    from greenray.serve.server import Server  # torch, Ray

    config = ServeConfig.from_flat(settings)
    server = Server(config, out_dir or _results("live"), address=address, say=say)
    with (
        _interrupted(f"interrupted before serving; what was stored is in {server.out}"),
        ui.bars() as progress,
    ):
        server.progress = progress
        server.start()
    if server.tuned is not None:
        ui.print_tuned(server.tuned, server.out / "tune")
    ui.print_serving(server)
    ui.print_stopped(server.serve_until_interrupted())


@app.command("serve-tune")
@user_errors
@takes(PolicyTuneConfig)
def serve_tune(settings: dict, out_dir: Out("tune") = None, address: Address = None) -> None:
    """Find the batching policy (cap and max wait) with the least energy per image whose p99 at
    --frequency stays under --slo-ms, by live runs on one deployment; every run is stored."""
    from greenray.serve.server import serve_tune as tune  # torch, Ray

    config = PolicyTuneConfig.from_flat(settings)
    folder = out_dir or _results("tune")
    with _interrupted(f"interrupted: the runs that ended are in {folder}"), ui.bars() as progress:
        result = tune(config, folder, address=address, progress=progress)
    ui.print_tuned(result, folder)
    if result.best is None:
        raise UsageError(
            f"no policy kept p99 under {result.slo_ms:g} ms at {result.frequency_hz:g} Hz: raise --slo-ms or "
            "lower --frequency"
        )


@contextlib.contextmanager
def _interrupted(message: str):
    """Ctrl-C during a long command: say what was kept, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(message)
        raise typer.Exit(130) from None


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
    from greenray.analysis.report import build_report  # pandas, matplotlib

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


def Override(config, flat: str, default: str, kind: type = str):  # noqa: N802 (a type, as typer reads it)
    """An option of `greenray run` that replaces a setting in every cell where it is given."""
    help_text = f"{config.settings()[flat].help} (default: {default})."
    return Annotated[kind | None, typer.Option(help=help_text)]


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
    out_dir: Out("EXPERIMENT", time=False) = None,
    device: Override(BenchConfig, "device", "the file's, else auto") = None,
    data_dir: Override(StudyConfig, "data_dir", "the file's, else ~/.cache/greenray/data") = None,
    download: Annotated[bool, typer.Option(help=StudyConfig.settings()["download"].help)] = False,
    idle_seconds: Override(StudyConfig, "idle_seconds", "the file's, else each command's", float) = None,
    address: Address = None,
    energy: Override(StudyConfig, "energy", "the file's, else auto") = None,
) -> None:
    """Run an experiment file cell by cell (one hpo or serve-bench each) into --out; a re-run
    skips the cells already complete."""
    from greenray import experiments  # pandas

    planned = experiments.prepare(experiment_file, scale, datasets=_listed(dataset), models=_listed(model))
    folder = out_dir or Path("greenray-results") / planned.name
    # serve-bench draws its runs' bars on this Progress; hpo draws its own.
    progress = ui.bars() if planned.kind == "serve-bench" else contextlib.nullcontext()
    with progress as shown:
        options = experiments.RunOptions(
            device, energy, address, data_dir, download, idle_seconds, say=say, progress=shown
        )
        index = experiments.run_experiment(
            planned, folder, options, on_cell=lambda cell, state: err.print(f"[bold]{cell.name}[/]: {state}")
        )
    _print_cells(index, folder, experiments)


def _print_cells(index, folder: Path, experiments) -> None:
    """How many cells are complete; exit 1 where some failed, 130 where the run stopped early."""
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
