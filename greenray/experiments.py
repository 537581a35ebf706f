"""Experiment files (experiments/*.yaml: one per part of the study), checked with the config's
own types (one sentence naming the file and the field), cut into cells (one `greenray hpo` or
`greenray serve-bench` each: a StudyConfig or a BenchConfig), shrunk into a faithful miniature
with --scale, and run cell by cell into DIR/<cell>/ with DIR/index.json, so that an interrupted
run resumes where it stopped."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator

from greenray.config import BenchConfig, Config, Source, StudyConfig
from greenray.config.jobs import Policy
from greenray.config.vocab import (
    Arrival,
    Count,
    Dataset,
    Flag,
    Frequency,
    MaybePixels,
    Net,
    ParamCount,
    Precision,
    Strategy,
    Text,
    Weights,
    WholeNumber,
    problem,
)
from greenray.errors import UsageError
from greenray.results import INDEX, atomic_write, folder_lock

log = logging.getLogger("greenray.experiments")

KINDS = ("hpo", "serve-bench")
COMPLETE, PENDING, RUNNING, FAILED = "complete", "pending", "running", "failed"
# Budgets --scale shrinks, and the least each keeps (two repetitions, so a spread is defined).
SCALE_FLOORS = {"rounds": 2, "repetitions": 2, "epochs": 1, "requests": 1, "warmup_batches": 1}


# ------------------------------------------------------------------------------ schema


def _factor(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise problem("a list of one value or more, e.g. [a, b]")
    return value


def _distinct(values: tuple) -> tuple:
    if len(set(values)) < len(values):
        raise problem("a list of distinct values")
    return values


def _model(value: Any) -> str:
    from greenray.serve.zoo import resolve

    try:
        return resolve(str(value))
    except UsageError as exc:
        raise problem(f"a model ({exc})") from None


# A factor of the experiment: a list of levels, each checked as the config checks the setting.
T = TypeVar("T")
Factor = Annotated[tuple[T, ...], BeforeValidator(_factor), AfterValidator(_distinct)]
Levels = Annotated[tuple[T, ...], AfterValidator(_distinct)]  # may be empty: not a factor
Model = Annotated[str, BeforeValidator(_model)]


def default(config: type[Config], setting: str):
    """A setting's default as its config declares it (an experiment file may leave it out)."""
    return getattr(config.defaults(), setting)


class _Experiment(Config):
    experiment: Text
    description: str = ""


class HpoExperiment(_Experiment):
    """An experiment of training studies: every combination of its factors is one cell."""

    FLAGS = {"datasets": "--dataset"}

    kind: Literal["hpo"]
    strategies: Factor[Strategy]
    nets: Factor[Net]
    params: Factor[ParamCount]
    datasets: Factor[Dataset]
    rounds: Count
    repetitions: Count
    epochs: Count
    # The architecture factors (thesis Table 3.2); absent, each net's default is used.
    n_linear: Levels[Count] = ()
    n_conv: Levels[Count] = ()
    relu: Levels[Flag] = ()
    batch_size: Count = default(StudyConfig, "batch_size")
    seed: WholeNumber = default(StudyConfig, "seed")
    uniform_lr: Flag = default(StudyConfig, "uniform_lr")


class ServeExperiment(_Experiment):
    """An experiment of serving benches: one cell per model and precision, each running every
    frequency x policy."""

    FLAGS = {"models": "--model"}

    kind: Literal["serve-bench"]
    models: Factor[Model]
    frequencies: Factor[Frequency]
    policies: Factor[Policy]
    requests: Count
    warmup_batches: WholeNumber = default(BenchConfig, "warmup_batches")
    warmup_batch_size: Count = default(BenchConfig, "warmup_batch_size")
    precisions: Factor[Precision] = (default(BenchConfig, "precision"),)
    weights: Weights = default(BenchConfig, "weights")
    arrival: Arrival = default(BenchConfig, "arrival")
    image_size: MaybePixels = default(BenchConfig, "image_size")  # None: the weights' own (224)


SCHEMAS: dict[str, type[Config]] = {"hpo": HpoExperiment, "serve-bench": ServeExperiment}


class ExperimentError(UsageError):
    """A malformed experiment file; the message names the file and the field."""


def _article(kind: str) -> str:
    return f"an {kind}" if kind == "hpo" else f"a {kind}"


# ------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Experiment:
    """A checked experiment file: its name, kind and schema, at a scale, with the factors the
    command line replaced."""

    file: str
    spec: HpoExperiment | ServeExperiment
    scale: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.experiment

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def values(self) -> dict[str, Any]:
        return self.spec.model_dump()


@dataclass(frozen=True)
class Cell:
    """One call of `greenray hpo` or `greenray serve-bench`; its results go to DIR/<name>/.
    `settings` are flat config names (those of index.json's plan)."""

    name: str
    kind: str
    settings: dict[str, Any]


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; an ExperimentError names the first bad field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ExperimentError(f"{path} cannot be read ({exc.strerror}); give an experiment file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ExperimentError(f"{path}: not valid YAML{line}; fix the file") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: an experiment file is a mapping of fields (experiment, kind, ...)")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ExperimentError(f"{path}: kind {kind!r} is not one of {', '.join(KINDS)}")
    source = Source(prefix=f"{path}: ", flags=False, subject=f"{_article(kind)} experiment")
    try:
        return Experiment(str(path), SCHEMAS[kind].checked(data, source))
    except UsageError as exc:
        raise ExperimentError(str(exc)) from None


def scaled(experiment: Experiment, scale: float) -> Experiment:
    """A faithful miniature: budgets (rounds, repetitions, epochs, requests, warm-up) times
    `scale`, rounded up and kept above their floors; every factor level stays, so that the
    statistics still have every group."""
    if not 0 < scale <= 1:
        raise UsageError(f"--scale takes a number in (0, 1], not {scale:g}")
    spec = experiment.spec
    budgets = {k: getattr(spec, k) for k in SCALE_FLOORS if k in type(spec).model_fields}
    update = {k: min(v, max(SCALE_FLOORS[k], math.ceil(v * scale))) for k, v in budgets.items() if v}
    if isinstance(spec, ServeExperiment):  # every fixed batch must fill at least once
        largest = max((p.size for p in spec.policies if p.kind == "fixed"), default=1)
        update["requests"] = max(update["requests"], min(largest, spec.requests))
    return dataclasses.replace(experiment, spec=spec.model_copy(update=update), scale=scale)


def with_overrides(experiment: Experiment, **overrides: tuple | None) -> Experiment:
    """The experiment with some factors replaced (e.g. datasets=("digits",)), checked as the
    file's own values are."""
    schema = type(experiment.spec)
    given = {key: list(values) for key, values in overrides.items() if values is not None}
    for key in given:
        if key not in schema.model_fields:
            raise UsageError(f"{schema.flag(key)} does not apply to {_article(experiment.kind)} experiment")
    spec = schema.checked(experiment.spec.model_dump() | given)
    applied = dict(experiment.overrides) | {k: list(getattr(spec, k)) for k in given}
    return dataclasses.replace(experiment, spec=spec, overrides=applied)


def prepare(
    path: str | Path, scale: float = 1.0, *, datasets: tuple | None = None, models: tuple | None = None
) -> Experiment:
    """An experiment file checked, with the data sets or models replaced, at `scale`."""
    experiment = load_experiment(path)
    experiment = with_overrides(experiment, datasets=datasets, models=models)
    return scaled(experiment, scale)


def cells(experiment: Experiment) -> list[Cell]:
    """Every cell of the experiment, in a stable order."""
    spec = experiment.spec
    return _hpo_cells(spec) if isinstance(spec, HpoExperiment) else _serve_cells(spec)


def _hpo_cells(spec: HpoExperiment) -> list[Cell]:
    architecture = [k for k in ("n_linear", "n_conv", "relu") if getattr(spec, k)]
    factors = [
        spec.datasets,
        spec.nets,
        spec.params,
        spec.strategies,
        *(getattr(spec, k) for k in architecture),
    ]
    keys = ("rounds", "repetitions", "epochs", "batch_size", "seed", "uniform_lr")
    shared = {k: getattr(spec, k) for k in keys}
    found = []
    for dataset, net, params, strategy, *levels in itertools.product(*factors):
        arch = dict(zip(architecture, levels, strict=True))
        tags = [_tag(k, val) for k, val in arch.items()]
        name = "-".join([dataset, net, f"p{params}", strategy, *tags])
        settings = {"dataset": dataset, "net": net, "params": params, "strategy": strategy, **arch, **shared}
        found.append(Cell(name, "hpo", settings))
    return found


def _tag(factor: str, level: Any) -> str:
    """linear3, conv4, relu-on: an architecture level in a cell's name."""
    if isinstance(level, bool):
        return f"{factor}-{'on' if level else 'off'}"
    return f"{factor.removeprefix('n_')}{level}"


def _serve_cells(spec: ServeExperiment) -> list[Cell]:
    keys = ("requests", "warmup_batches", "warmup_batch_size", "weights", "arrival", "image_size")
    shared = {k: getattr(spec, k) for k in keys}
    shared |= {"frequencies": list(spec.frequencies), "policies": [str(p) for p in spec.policies]}
    return [
        Cell(f"{model}-{precision}", "serve-bench", {"model": model, "precision": precision, **shared})
        for model, precision in itertools.product(spec.models, spec.precisions)
    ]


# -------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunOptions:
    """What `greenray run` passes to every cell beside the experiment's own settings."""

    device: str = "auto"  # auto, cpu or cuda
    energy: str = "auto"
    address: str | None = None
    data_dir: str | None = None
    download: bool = False
    idle_seconds: float | None = None  # None: each command's default
    say: Callable[[str], None] = print
    progress: Any = None  # a rich Progress for serve-bench's runs (None: no bars)


@dataclass
class Index:
    """DIR/index.json: the plan (experiment, scale, cells with settings) and each cell's state."""

    experiment: str
    file: str
    kind: str
    scale: float
    overrides: dict[str, Any]
    cells: list[dict[str, Any]] = field(default_factory=list)

    def plan(self) -> list[tuple[str, dict]]:
        return [(c["name"], c["settings"]) for c in self.cells]


def run_experiment(
    experiment: Experiment,
    out: Path,
    options: RunOptions,
    runners: dict[str, Callable[[Cell, Path, RunOptions], bool]] | None = None,
    on_cell: Callable[[Cell, str], None] = lambda cell, state: None,
) -> Index:
    """Run every cell not yet complete into out/<cell>/, keeping out/index.json up to date; a
    cell that crashes is recorded as failed and the next one runs, a cell that stops before the
    end of its budget (interrupted) ends the run there."""
    planned = cells(experiment)
    if runners is None:
        check_cells(planned, options)
        runners = {"hpo": run_hpo_cell, "serve-bench": run_serve_cell}
    with folder_lock(out):  # one run at a time in a folder: a second is refused at once
        return _run_cells(planned, out, options, runners, on_cell, _open_index(out, experiment, planned))


def _run_cells(planned, out, options, runners, on_cell, index: Index) -> Index:
    for cell, entry in zip(planned, index.cells, strict=True):
        if entry["status"] == COMPLETE:
            on_cell(cell, "skipped (complete)")
            continue
        on_cell(cell, "running")
        entry.update(status=RUNNING, started_at=time.time())
        _write_index(out, index)
        try:
            complete = runners[cell.kind](cell, out / cell.name, options)
        except UsageError:
            entry.update(status=PENDING)
            _write_index(out, index)
            raise
        except Exception as exc:  # one cell's crash is recorded and the experiment goes on
            log.exception("cell %s failed", cell.name)
            entry.update(status=FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            state = COMPLETE if complete else PENDING
            entry.update(status=state, error=None, seconds=time.time() - entry["started_at"])
        _write_index(out, index)
        on_cell(cell, entry["status"])
        if entry["status"] == PENDING:  # stopped early (Ctrl-C in Tune): a re-run goes on from here
            break
    return index


def _open_index(out: Path, experiment: Experiment, planned: list[Cell]) -> Index:
    fresh = Index(
        experiment=experiment.name,
        file=experiment.file,
        kind=experiment.kind,
        scale=experiment.scale,
        overrides=experiment.overrides,
        cells=[{"name": c.name, "settings": c.settings, "status": PENDING} for c in planned],
    )
    path = out / INDEX
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        _write_index(out, fresh)
        return fresh
    try:
        stored = Index(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{path} cannot be read ({exc.__class__.__name__}); give another --out") from None
    if stored.experiment != fresh.experiment or _jsonable(stored.plan()) != _jsonable(fresh.plan()):
        raise UsageError(
            f"{out} holds a run of another plan (experiment {stored.experiment}, scale {stored.scale:g}, "
            f"{len(stored.cells)} cells); give another --out to start this one"
        )
    return stored


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _write_index(out: Path, index: Index) -> None:
    text = json.dumps(dataclasses.asdict(index), indent=2, sort_keys=True, default=str)
    atomic_write(out / INDEX, lambda p: p.write_text(text + "\n"))


# -------------------------------------------------------------- the commands' entry points


def hpo_config(cell: Cell, options: RunOptions) -> StudyConfig:
    """The StudyConfig of an hpo cell (checked: a bad cell fails before anything runs)."""
    flat = dict(cell.settings) | {"download": options.download, "energy": options.energy}
    flat["gpus_per_trial"] = {"cpu": 0.0, "cuda": 1.0}.get(options.device)
    if options.data_dir:
        flat["data_dir"] = options.data_dir
    if options.idle_seconds is not None:
        flat["idle_seconds"] = options.idle_seconds
    return StudyConfig.from_flat(flat)


def bench_config(cell: Cell, options: RunOptions) -> BenchConfig:
    """The BenchConfig of a serve-bench cell (one model, every frequency x policy)."""
    flat = dict(cell.settings)
    flat["models"] = [flat.pop("model")]
    flat |= {"device": options.device, "energy": options.energy}
    if options.idle_seconds is not None:
        flat["idle_seconds"] = options.idle_seconds
    return BenchConfig.from_flat(flat)


def check_cells(planned: list[Cell], options: RunOptions) -> None:
    """Every cell's config built and checked, before any cell runs."""
    for cell in planned:
        hpo_config(cell, options) if cell.kind == "hpo" else bench_config(cell, options)


def run_hpo_cell(cell: Cell, folder: Path, options: RunOptions) -> bool:
    """One `greenray hpo` through its Python entry point; a folder that holds the cell's
    interrupted study is resumed. True when nothing is left for a resume to do: the study ran
    to the end of its budget, or a green lever stopped it."""
    from greenray.tune.study import STUDY_FILE, resume_study, start_study

    if (folder / f"{STUDY_FILE}.json").exists():
        run = resume_study(folder, address=options.address, say=options.say)
    else:
        run = start_study(hpo_config(cell, options), folder, address=options.address, say=options.say)
    return run.finished


def run_serve_cell(cell: Cell, folder: Path, options: RunOptions) -> bool:
    """One `greenray serve-bench` through its Python entry point (runs already stored are
    skipped). True when every (frequency, policy) run of the cell is stored."""
    from greenray.serve.bench import run_bench

    config = bench_config(cell, options)
    run_bench(config, folder, resume=True, address=options.address, progress=options.progress)
    wanted = {(str(p), float(f)) for p in config.policies for f in config.frequencies}
    return wanted <= stored_runs(folder)


def stored_runs(folder: Path) -> set[tuple[str, float]]:
    """(policy, frequency) of the ok runs stored in a serve-bench folder."""
    from greenray.results import OK, ResultStore

    runs = ResultStore(folder).read("runs")
    if runs.empty or "status" not in runs:
        return set()
    return {(r.policy, float(r.frequency_hz)) for r in runs[runs["status"] == OK].itertuples()}
