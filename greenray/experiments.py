"""Experiment files (experiments/*.yaml: one per part of the study) checked field by field, cut
into cells (one `greenray hpo` or `greenray serve-bench` call each), shrunk into a faithful
miniature with --scale, and run cell by cell into DIR/<cell>/ with DIR/index.json, so that an
interrupted run resumes where it stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from greenray.errors import UsageError
from greenray.results import atomic_write

log = logging.getLogger("greenray.experiments")

INDEX = "index.json"  # greenray.analysis.load reads the experiment's name from it
KINDS = ("hpo", "serve-bench")
COMPLETE, PENDING, RUNNING, FAILED = "complete", "pending", "running", "failed"


# ------------------------------------------------------------------------------ fields


def _choices(names: Callable[[], tuple], canonical: Callable[[Any], Any] = lambda v: v):
    """A check that a value is one of names() (looked up only when a file is checked)."""

    def check(value: Any, where: str) -> Any:
        allowed = names()
        with contextlib.suppress(ValueError, TypeError, UsageError):
            value = canonical(value)
        if value not in allowed:
            raise _bad(where, f"{value!r} is not one of {', '.join(str(a) for a in allowed)}")
        return value

    return check


def _whole(minimum: int) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _bad(where, f"{value!r} is not a whole number of at least {minimum}")
        return value

    return check


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise _bad(where, f"{value!r} is not a positive number")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(where, f"{value!r} is not true or false")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, f"{value!r} is not a non-empty text")
    return value.strip()


def _policy(value: Any, where: str) -> str:
    from greenray.serve.policy import parse_policy

    try:
        return str(parse_policy(str(value)))
    except UsageError as exc:
        raise _bad(where, f"{value!r} is not a batching policy ({exc})") from None


def _model(value: Any, where: str) -> str:
    from greenray.zoo import resolve

    try:
        return resolve(str(value))
    except UsageError as exc:
        raise _bad(where, f"{value!r} is not a model ({exc})") from None


def _strategies() -> tuple:
    from greenray.tune.settings import STRATEGIES

    return STRATEGIES


def _nets() -> tuple:
    from greenray.nets import NET_NAMES

    return NET_NAMES


def _canonical_net(name: Any) -> str:
    from greenray.nets import canonical_net

    return canonical_net(str(name))


def _datasets() -> tuple:
    from greenray.data import DATASETS

    return DATASETS


def _precisions() -> tuple:
    from greenray.zoo import PRECISIONS

    return PRECISIONS


REQUIRED = object()


@dataclass(frozen=True)
class Field:
    check: Callable[[Any, str], Any]
    many: bool = False  # a list of values, each checked: a factor of the experiment
    default: Any = REQUIRED
    scale_floor: int | None = None  # shrunk by --scale, never below this (nor above its value)


_LOWER = lambda v: str(v).strip().lower()  # noqa: E731

HPO_FIELDS = {
    "strategies": Field(_choices(_strategies, _LOWER), many=True),
    "nets": Field(_choices(_nets, _canonical_net), many=True),
    "params": Field(_choices(lambda: (3, 5)), many=True),
    "datasets": Field(_choices(_datasets, _LOWER), many=True),
    "rounds": Field(_whole(1), scale_floor=2),
    "repetitions": Field(_whole(1), scale_floor=2),  # two, so that a spread is defined
    "epochs": Field(_whole(1), scale_floor=1),
    # The architecture factors (thesis Table 3.2); absent, each net's default is used.
    "n_linear": Field(_whole(1), many=True, default=()),
    "n_conv": Field(_whole(1), many=True, default=()),
    "relu": Field(_flag, many=True, default=()),
    "batch_size": Field(_whole(1), default=512),
    "seed": Field(_whole(0), default=0),
    "uniform_lr": Field(_flag, default=False),
}
SERVE_FIELDS = {
    "models": Field(_model, many=True),
    "frequencies": Field(_positive, many=True),
    "policies": Field(_policy, many=True),
    "requests": Field(_whole(1), scale_floor=1),
    "warmup_batches": Field(_whole(0), default=256, scale_floor=1),
    "warmup_batch_size": Field(_whole(1), default=32),
    "precisions": Field(_choices(_precisions, _LOWER), many=True, default=("fp32",)),
    "weights": Field(_text, default="default"),
    "arrival": Field(_text, default="constant"),
    "image_size": Field(_whole(16), default=None),  # None: the weights' own (224)
}
FIELDS = {"hpo": HPO_FIELDS, "serve-bench": SERVE_FIELDS}
COMMON = ("experiment", "kind", "description")


class ExperimentError(UsageError):
    """A malformed experiment file; the message names the file and the field."""


def _article(kind: str) -> str:
    return f"an {kind}" if kind == "hpo" else f"a {kind}"


def _bad(where: str, what: str) -> ExperimentError:
    return ExperimentError(f"{where} {what}")


# ------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Experiment:
    """A checked experiment file: its name, kind and every field's value (lists as tuples)."""

    name: str
    kind: str
    file: str
    values: dict[str, Any]
    scale: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)  # factors replaced on the command line


@dataclass(frozen=True)
class Cell:
    """One call of `greenray hpo` or `greenray serve-bench`; its results go to DIR/<name>/."""

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
    name = _text(data.get("experiment"), f"{path}: experiment")
    fields = FIELDS[kind]
    for key in data:
        if key not in fields and key not in COMMON:
            known = ", ".join([*COMMON, *fields])
            raise ExperimentError(
                f"{path}: {key!r} is not a field of {_article(kind)} experiment (fields: {known})"
            )
    values = {key: _value(path, key, spec, data) for key, spec in fields.items()}
    return Experiment(name, kind, str(path), values)


def _value(path: Path, key: str, spec: Field, data: dict) -> Any:
    if key not in data:
        if spec.default is REQUIRED:
            raise ExperimentError(f"{path}: {key!r} is missing; {_article(data['kind'])} experiment needs it")
        return spec.default
    value = data[key]
    if not spec.many:
        return spec.check(value, f"{path}: {key}")
    if not isinstance(value, list) or not value:
        raise ExperimentError(f"{path}: {key} must be a list of one value or more, e.g. {key}: [a, b]")
    checked = tuple(spec.check(v, f"{path}: {key}[{i}]") for i, v in enumerate(value))
    if len(set(checked)) < len(checked):
        raise ExperimentError(f"{path}: {key} names a value twice")
    return checked


def scaled(experiment: Experiment, scale: float) -> Experiment:
    """A faithful miniature: budgets (rounds, repetitions, epochs, requests, warm-up) times
    `scale`, rounded up and kept above their floors; every factor level stays, so that the
    statistics still have every group."""
    if not 0 < scale <= 1:
        raise UsageError(f"--scale takes a number in (0, 1], not {scale:g}")
    values = dict(experiment.values)
    for key, spec in FIELDS[experiment.kind].items():
        if spec.scale_floor is not None and values[key]:
            values[key] = min(values[key], max(spec.scale_floor, math.ceil(values[key] * scale)))
    if experiment.kind == "serve-bench":
        from greenray.serve.policy import parse_policy

        # Every fixed batch must fill at least once.
        policies = [parse_policy(p) for p in values["policies"]]
        largest = max((p.size for p in policies if p.kind == "fixed"), default=1)
        values["requests"] = max(values["requests"], min(largest, experiment.values["requests"]))
    return dataclasses.replace(experiment, values=values, scale=scale)


def with_overrides(experiment: Experiment, **overrides: tuple | None) -> Experiment:
    """The experiment with some factors replaced (e.g. datasets=("digits",)), checked as the
    file's own values are."""
    values = dict(experiment.values)
    fields = FIELDS[experiment.kind]
    applied = dict(experiment.overrides)
    for key, given in overrides.items():
        if given is None:
            continue
        if key not in fields:
            raise UsageError(f"--{key.rstrip('s')} does not apply to {_article(experiment.kind)} experiment")
        values[key] = tuple(fields[key].check(v, f"--{key.rstrip('s')}") for v in given)
        applied[key] = list(values[key])
    return dataclasses.replace(experiment, values=values, overrides=applied)


def prepare(
    path: str | Path, scale: float = 1.0, *, datasets: tuple | None = None, models: tuple | None = None
) -> Experiment:
    """An experiment file checked, with the data sets or models replaced, at `scale`."""
    experiment = load_experiment(path)
    experiment = with_overrides(experiment, datasets=datasets, models=models)
    return scaled(experiment, scale)


def cells(experiment: Experiment) -> list[Cell]:
    """Every cell of the experiment, in a stable order."""
    return _hpo_cells(experiment) if experiment.kind == "hpo" else _serve_cells(experiment)


def _hpo_cells(experiment: Experiment) -> list[Cell]:
    v = experiment.values
    architecture = [k for k in ("n_linear", "n_conv", "relu") if v[k]]
    factors = [v["datasets"], v["nets"], v["params"], v["strategies"], *(v[k] for k in architecture)]
    shared = {k: v[k] for k in ("rounds", "repetitions", "epochs", "batch_size", "seed", "uniform_lr")}
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


def _serve_cells(experiment: Experiment) -> list[Cell]:
    v = experiment.values
    keys = ("requests", "warmup_batches", "warmup_batch_size", "weights", "arrival", "image_size")
    shared = {k: v[k] for k in keys}
    shared |= {"frequencies": list(v["frequencies"]), "policies": list(v["policies"])}
    return [
        Cell(f"{model}-{precision}", "serve-bench", {"model": model, "precision": precision, **shared})
        for model, precision in itertools.product(v["models"], v["precisions"])
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
        check_cells(planned, out, options)
        runners = {"hpo": run_hpo_cell, "serve-bench": run_serve_cell}
    index = _open_index(out, experiment, planned)
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


def hpo_settings(cell: Cell, options: RunOptions):
    """The StudySettings of an hpo cell (checked: a bad cell fails before anything runs)."""
    from greenray.tune.settings import StudySettings

    # A cell's settings are StudySettings fields by name; the run's options add the rest.
    extra = {"data_dir": options.data_dir} if options.data_dir else {}
    if options.idle_seconds is not None:
        extra["idle_seconds"] = options.idle_seconds
    return StudySettings(
        **cell.settings,
        download=options.download,
        gpus_per_trial={"cpu": 0.0, "cuda": 1.0}.get(options.device),
        energy=options.energy,
        **extra,
    ).checked()


def bench_settings(cell: Cell, folder: Path, options: RunOptions):
    """The BenchSettings of a serve-bench cell; resume=True skips the runs already stored."""
    from greenray.serve.bench import BenchSettings
    from greenray.serve.policy import parse_policy

    # A cell's settings are BenchSettings fields by name, but for one model and the policies as text.
    s = dict(cell.settings)
    extra = {} if options.idle_seconds is None else {"idle_seconds": options.idle_seconds}
    settings = BenchSettings(
        models=(s.pop("model"),),
        policies=tuple(parse_policy(p) for p in s.pop("policies")),
        frequencies=tuple(float(f) for f in s.pop("frequencies")),
        **s,
        device=options.device,
        energy=options.energy,
        resume=True,
        out=folder,
        address=options.address,
        **extra,
    )
    settings.check()
    return settings


def check_cells(planned: list[Cell], out: Path, options: RunOptions) -> None:
    """Every cell's settings checked by its command's own rules, before any cell runs."""
    for cell in planned:
        if cell.kind == "hpo":
            hpo_settings(cell, options)
        else:
            bench_settings(cell, out / cell.name, options)


def run_hpo_cell(cell: Cell, folder: Path, options: RunOptions) -> bool:
    """One `greenray hpo` through its Python entry point; a folder that holds the cell's
    interrupted study is resumed. True when the study ran to the end of its budget."""
    from greenray.tune.study import STUDY_FILE, resume_study, start_study

    if (folder / f"{STUDY_FILE}.json").exists():
        run = resume_study(folder, address=options.address, say=options.say)
    else:
        run = start_study(hpo_settings(cell, options), folder, address=options.address, say=options.say)
    return run.complete


def run_serve_cell(cell: Cell, folder: Path, options: RunOptions) -> bool:
    """One `greenray serve-bench` through its Python entry point (runs already stored are
    skipped). True when every (frequency, policy) run of the cell is stored."""
    from greenray.serve.bench import run_bench

    settings = bench_settings(cell, folder, options)
    run_bench(settings, options.progress)
    stored = stored_runs(folder)
    wanted = {(str(p), float(f)) for p in settings.policies for f in settings.frequencies}
    return wanted <= stored


def stored_runs(folder: Path) -> set[tuple[str, float]]:
    """(policy, frequency) of the ok runs stored in a serve-bench folder."""
    from greenray.results import ResultStore

    runs = ResultStore(folder).read("runs")
    if runs.empty or "status" not in runs:
        return set()
    return {(r.policy, float(r.frequency_hz)) for r in runs[runs["status"] == "ok"].itertuples()}
