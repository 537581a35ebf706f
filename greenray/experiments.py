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
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator

from greenray.config import BenchConfig, Config, Source, StudyConfig
from greenray.config.experiment import ABOUT, Kind, is_list
from greenray.config.vocab import problem
from greenray.errors import UsageError
from greenray.results import INDEX, OK, ResultStore, atomic_write, folder_lock
from greenray.serve.zoo import resolve

log = logging.getLogger("greenray.experiments")

COMPLETE, PENDING, RUNNING, FAILED = "complete", "pending", "running", "failed"
# Budgets --scale shrinks, and the least each keeps (two repetitions, so a spread is defined).
SCALE_FLOORS = {"rounds": 2, "repetitions": 2, "epochs": 1, "requests": 1, "warmup_batches": 1}


# ------------------------------------------------------------------------------ kinds


def _model(value: Any) -> str:
    try:
        return resolve(str(value))
    except UsageError as exc:
        raise problem(f"a model ({exc})") from None


Model = Annotated[str, BeforeValidator(_model)]
HPO = Kind(
    "hpo",
    StudyConfig,
    factors={"datasets": "dataset", "nets": "net", "params": "params", "strategies": "strategy"},
    required=("datasets", "nets", "params", "strategies", "rounds", "repetitions", "epochs"),
    prefixes={"params": "p"},
    flags={"datasets": "--dataset"},
)
SERVE = Kind(
    "serve-bench",
    BenchConfig,
    factors={"models": "model", "precisions": "precision"},  # each cell runs every frequency x policy
    required=("models", "frequencies", "policies", "requests"),
    level_types={"models": Model},
    flags={"models": "--model"},
)
KINDS = {kind.name: kind for kind in (HPO, SERVE)}
SCHEMAS: dict[str, type[Config]] = {name: kind.schema() for name, kind in KINDS.items()}
HpoExperiment, ServeExperiment = SCHEMAS["hpo"], SCHEMAS["serve-bench"]


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


# An experiment file names a few dozen settings: more aliases than this is a "billion laughs"
# (9 aliases of 9 aliases ... expand to 9^8 values), and a message quoting such a value is cut.
MAX_ALIASES, MAX_MESSAGE = 32, 400


class _TooManyAliases(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, with a cap on aliases."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooManyAliases
        return super().compose_node(parent, index)


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; an ExperimentError names the first bad field."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise ExperimentError(f"{path} cannot be read ({exc.strerror}); give an experiment file") from None
    except UnicodeDecodeError:
        raise ExperimentError(f"{path} is not a text file (UTF-8 YAML); give an experiment file") from None
    except _TooManyAliases:
        raise ExperimentError(
            f"{path}: more than {MAX_ALIASES} YAML aliases (*name); write the settings out instead"
        ) from None
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
        raise ExperimentError(textwrap.shorten(str(exc), MAX_MESSAGE, placeholder=" ...")) from None


def scaled(experiment: Experiment, scale: float) -> Experiment:
    """A faithful miniature: budgets (rounds, repetitions, epochs, requests, warm-up) times
    `scale`, rounded up and kept above their floors; every factor level stays, so that the
    statistics still have every group."""
    if not 0 < scale <= 1:
        raise UsageError(f"--scale takes a number in (0, 1], not {scale:g}")
    spec = experiment.spec

    def shrunk(budget: str, value: int) -> int:
        return min(value, max(SCALE_FLOORS[budget], math.ceil(value * scale))) if value else value

    update = {}
    for budget in SCALE_FLOORS.keys() & type(spec).model_fields.keys():
        value = getattr(spec, budget)
        update[budget] = (
            tuple(shrunk(budget, v) for v in value) if isinstance(value, tuple) else shrunk(budget, value)
        )
    if spec.kind == SERVE.name and isinstance(spec.requests, int):  # every fixed batch must fill once
        largest = max((p.size for p in spec.policies if p.kind == "fixed"), default=1)
        update["requests"] = max(update["requests"], min(largest, spec.requests))
    return dataclasses.replace(experiment, spec=spec.model_copy(update=update), scale=scale)


def with_overrides(experiment: Experiment, **overrides: tuple | None) -> Experiment:
    """The experiment with some factors replaced (e.g. datasets=("digits",)), checked as the
    file's own values are."""
    schema = type(experiment.spec)
    given = {key: list(values) for key, values in overrides.items() if values is not None}
    for key in given:
        if key not in KINDS[experiment.kind].factors:
            raise UsageError(f"{schema.flag(key)} does not apply to {_article(experiment.kind)} experiment")
    spec = schema.checked(experiment.spec.model_dump(exclude_unset=True) | given)
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
    """Every cell of the experiment, in a stable order: the product of its factors (those of
    its kind, then any setting the file gives as a list, in the config's order), each cell with
    the settings the file gives (and --scale or the command line changed)."""
    spec, kind = experiment.spec, KINDS[experiment.kind]
    given = spec.model_dump(exclude_unset=True, mode="json")
    varied = {name: spec.model_dump(mode="json")[name] for name in kind.factors}
    varied |= {flat: given[flat] for flat in given if _is_factor(spec, flat)}
    given = {k: v for k, v in given.items() if k not in varied and k not in ABOUT}
    found = []
    for levels in itertools.product(*varied.values()):
        chosen = dict(zip(varied, levels, strict=True))
        name = "-".join(_tag(kind, factor, level) for factor, level in chosen.items())
        settings = {kind.factors.get(factor, factor): level for factor, level in chosen.items()}
        found.append(Cell(name, kind.name, settings | given))
    return found


def _is_factor(spec: Config, flat: str) -> bool:
    """A setting the file gives as a list of levels (not a setting whose value is a list)."""
    return isinstance(getattr(spec, flat), tuple) and not is_list(type(spec).settings()[flat])


def _tag(kind: Kind, factor: str, level: Any) -> str:
    """A level in a cell's name: a factor of its kind by value (p3 for params 3), another as
    linear3, conv4, relu-on."""
    if factor in kind.factors:
        return f"{kind.prefixes.get(factor, '')}{level}"
    if isinstance(level, bool):
        return f"{factor}-{'on' if level else 'off'}"
    return (
        f"{factor.removeprefix('n_')}{level:g}"
        if isinstance(level, float)
        else f"{factor.removeprefix('n_')}{level}"
    )


# -------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunOptions:
    """What `greenray run` passes to every cell beside the experiment's own settings: each one
    given (not None) replaces the file's value in every cell whose config has that setting."""

    device: str | None = None  # auto, cpu or cuda (an hpo cell's trials: 1 GPU or none)
    energy: str | None = None
    address: str | None = None
    data_dir: str | None = None
    download: bool = False
    idle_seconds: float | None = None
    say: Callable[[str], None] = print
    progress: Any = None  # a rich Progress for serve-bench's runs (None: no bars)

    def settings(self) -> dict[str, Any]:
        """The settings given, by flat name."""
        given = {"device": self.device, "energy": self.energy, "data_dir": self.data_dir}
        given |= {"idle_seconds": self.idle_seconds, "download": self.download or None}
        return {k: v for k, v in given.items() if v is not None}


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
    if not _same_plan(stored, fresh):
        raise UsageError(
            f"{out} holds a run of another plan (experiment {stored.experiment}, scale {stored.scale:g}, "
            f"{len(stored.cells)} cells); give another --out to start this one"
        )
    return stored


def _same_plan(stored: Index, fresh: Index) -> bool:
    """The same experiment and cells, each cell compared by the config it runs (a plan written
    when cells listed every setting means the same as one that leaves the defaults out)."""
    if stored.experiment != fresh.experiment or len(stored.cells) != len(fresh.cells):
        return False
    return all(
        old["name"] == new["name"]
        and _resolved(fresh.kind, old["settings"]) == _resolved(fresh.kind, new["settings"])
        for old, new in zip(stored.cells, fresh.cells, strict=True)
    )


def _resolved(kind: str, settings: dict[str, Any]) -> Any:
    cell = Cell("", kind, dict(settings))
    try:
        return (hpo_config if kind == "hpo" else bench_config)(cell, RunOptions()).flat()
    except UsageError:
        return settings


def _write_index(out: Path, index: Index) -> None:
    text = json.dumps(dataclasses.asdict(index), indent=2, sort_keys=True, default=str)
    atomic_write(out / INDEX, lambda p: p.write_text(text + "\n"))


# -------------------------------------------------------------- the commands' entry points


def hpo_config(cell: Cell, options: RunOptions) -> StudyConfig:
    """The StudyConfig of an hpo cell (checked: a bad cell fails before anything runs)."""
    given = options.settings()
    gpus = {"cpu": 0.0, "cuda": 1.0}.get(given.pop("device", None))
    flat = dict(cell.settings) | ({} if gpus is None else {"gpus_per_trial": gpus})
    return StudyConfig.from_flat(flat | _of(StudyConfig, given))


def bench_config(cell: Cell, options: RunOptions) -> BenchConfig:
    """The BenchConfig of a serve-bench cell (one model, every frequency x policy)."""
    flat = dict(cell.settings)
    flat["models"] = [flat.pop("model")]
    return BenchConfig.from_flat(flat | _of(BenchConfig, options.settings()))


def _of(config: type[Config], settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k in config.settings()}


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
    runs = ResultStore(folder).read("runs")
    if runs.empty or "status" not in runs:
        return set()
    return {(r.policy, float(r.frequency_hz)) for r in runs[runs["status"] == OK].itertuples()}
