"""A training study on Ray Tune: rounds x repetitions of a searcher's configurations, the idle
baseline measured first, one row per trial written as it ends, and resuming an interrupted run
from its results folder (DIR/study.json, DIR/trials.parquet, Tune's own state in DIR/tune)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import platform
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from ray.tune.search import ConcurrencyLimiter, Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from greenray.errors import UsageError
from greenray.results import ResultStore
from greenray.tune.idle import IdleReading, baseline_by_node, measure_cluster
from greenray.tune.recorder import TrialProgress, TrialRecorder
from greenray.tune.settings import METRIC, MODE, StudySettings, TrialSettings
from greenray.tune.trainable import ROUND_KEY, train_trial

TUNE_DIR = "tune"  # Tune's experiment folder inside the results folder
# Tune's newer console output prints its own tables whatever the verbosity; the legacy one is
# silent at verbose=0, and the study draws its own progress bar (TrialProgress).
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0"}
# Loggers that print a failed trial's traceback and a list of failed trials: the rows (status,
# error) and the progress bar say it in one line each.
# On a resume, Tune also warns of each trial that had not reported yet: the row count says it.
TRIAL_ERROR_LOGGERS = (
    "ray.tune.execution.tune_controller",
    "ray.tune.tune",
    "ray.tune.analysis.experiment_analysis",
)
STUDY_FILE = "study"  # DIR/study.json


class RoundRepeater(Repeater):
    """Ray's Repeater (each configuration `repeat` times, `__trial_index__` = repetition) that
    also numbers rounds (`__round__`), and hands its searcher the mean of the repetitions that
    finished, or an error where none did (Repeater would pass on a NaN mean, which a Gaussian
    process cannot take). With `sequential`, a round starts only once the one before has
    ended, so a searcher that learns (bayes) has heard of every round before it proposes the
    next, as in the study; the repetitions of a round still run side by side."""

    def __init__(self, searcher: Searcher, repeat: int, sequential: bool = False) -> None:
        super().__init__(searcher, repeat=repeat, set_index=True)
        self.sequential = sequential
        self.rounds_started = 0

    def suggest(self, trial_id: str) -> dict | str | None:
        group = self._current_group
        if self.sequential and group is not None and group.full() and not group.finished_reporting():
            return None  # Tune asks again later
        config = super().suggest(trial_id)
        if isinstance(config, dict):  # not None (nothing now) nor Searcher.FINISHED
            if config[TRIAL_INDEX] == 0:
                self.rounds_started += 1
            config[ROUND_KEY] = self.rounds_started - 1
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, **kwargs):
        group = self._trial_id_to_group[trial_id]
        score = (result or {}).get(self.searcher.metric)
        finite = isinstance(score, int | float) and math.isfinite(score) and not error
        group.report(trial_id, float(score) if finite else math.nan)
        if group.finished_reporting():
            scores = [s for s in group.scores() if math.isfinite(s)]
            if scores:
                self.searcher.on_trial_complete(
                    group.primary_trial_id, result={self.searcher.metric: float(np.mean(scores))}
                )
            else:
                self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=True)


@dataclass(frozen=True)
class StudyRun:
    """Where a study's results are and whether it ran to the end of its budget."""

    root: Path
    settings: StudySettings
    recorded: int  # rows in DIR/trials.parquet

    @property
    def complete(self) -> bool:
        return self.recorded >= self.settings.trials


def start_study(
    settings: StudySettings,
    out: Path,
    *,
    address: str | None = None,
    say=print,
    searcher: Searcher | None = None,
) -> StudyRun:
    """Run a new study into the empty results folder `out`; `searcher` (metric and mode set)
    replaces the one settings.strategy names."""
    from greenray.ray_setup import connect

    settings = settings.checked()
    out = out.expanduser().absolute()
    if (out / f"{STUDY_FILE}.json").exists() or (out / TUNE_DIR).exists():
        raise UsageError(
            f"{out} already holds a study: continue it with --resume {out}, or choose another --out"
        )
    if address is None:
        _check_data(settings)
    connect(address)
    settings = _with_resources(settings)
    readings = _idle_baseline(settings, say)
    baseline = baseline_by_node(readings)
    store = ResultStore(out)
    store.write_json(STUDY_FILE, _study_record(settings, readings, baseline, out))
    budget = f"{settings.trials} trials: {settings.rounds} rounds x {settings.repetitions} repetitions"
    say(f"results: {out} ({budget})")
    counter = _share_counter(settings, out)  # held until the trials end: Ray collects it after
    tuner = _new_tuner(settings, baseline, out, searcher, counter)
    with _quiet_trial_errors():
        tuner.fit()
    return StudyRun(out, settings, len(store.read("trials")))


def resume_study(out: Path, *, address: str | None = None, say=print) -> StudyRun:
    """Go on with the study in `out` where it stopped: finished trials keep their rows, the
    rest of the budget runs (Tune's own state, DIR/tune, restored with Tuner.restore)."""
    from ray import tune

    from greenray.ray_setup import connect

    out = out.expanduser().absolute()
    record = ResultStore(out).read_json(STUDY_FILE) if out.is_dir() else None
    if record is None or "settings" not in record:
        raise UsageError(
            f"--resume {out}: that folder holds no study.json; give the --out folder of an earlier hpo run"
        )
    settings = StudySettings.from_json(record["settings"])
    baseline = record.get("baseline", {})
    connect(address)
    _check_gpus(settings.gpus_per_trial or 0.0, settings.cpus_per_trial)
    store = ResultStore(out)
    done = len(store.read("trials"))
    say(f"resuming {out}: {done} of {settings.trials} trials recorded")
    if done >= settings.trials:
        return StudyRun(out, settings, done)
    _quiet_tune()
    counter = _share_counter(settings, out)
    with _quiet_trial_errors():
        if tune.Tuner.can_restore(str(out / TUNE_DIR)):
            trainable = _trainable(settings, baseline, counter)
            tuner = tune.Tuner.restore(str(out / TUNE_DIR), trainable=trainable, resume_unfinished=True)
        else:  # stopped before Tune saved any state: start over; recorded slots keep their rows
            tuner = _new_tuner(settings, baseline, out, counter=counter)
        tuner.fit()
    return StudyRun(out, settings, len(store.read("trials")))


def _new_tuner(
    settings: StudySettings,
    baseline: dict,
    out: Path,
    searcher: Searcher | None = None,
    counter: _Counter | None = None,
):
    """A Tuner for a new study; `searcher` replaces the one --strategy names (tests script one)."""
    from ray import tune

    from greenray.tune.searchers import make_searcher
    from greenray.tune.space import adam_space

    _quiet_tune()
    if searcher is None:
        space = adam_space(settings.params, uniform_lr=settings.uniform_lr)
        searcher = make_searcher(settings.strategy, space, metric=METRIC, mode=MODE, seed=settings.seed)
    # Bayes learns from every round before the next; grid and random need not wait.
    sequential = settings.strategy == "bayes"
    search_alg: Searcher = RoundRepeater(searcher, repeat=settings.repetitions, sequential=sequential)
    # Tune keeps only one trial pending for a custom searcher unless a ConcurrencyLimiter says
    # how many may run: without it, short trials run one after another on one node.
    limit = settings.max_concurrent or _trial_slots(settings)
    search_alg = ConcurrencyLimiter(search_alg, max_concurrent=limit)
    recorder = TrialRecorder(_row_fields(settings))
    return tune.Tuner(
        _trainable(settings, baseline, counter),
        # No param_space: the searcher holds the space, metric and mode (Tune would otherwise
        # call set_search_properties, which these searchers do not take).
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=settings.trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(out),
            callbacks=[recorder, TrialProgress(settings.trials, METRIC)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


@contextmanager
def _quiet_trial_errors() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in TRIAL_ERROR_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _quiet_tune() -> None:
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class _Counter:
    """The study's ShareCounter: its name (trials look it up) and the handle that keeps it alive."""

    name: str
    handle: object


def _share_counter(settings: StudySettings, out: Path) -> _Counter | None:
    """The actor that counts trials per GPU, on this node (None when trials hold no GPU)."""
    from greenray.tune.sharing import start_counter

    if not (settings.gpus_per_trial or 0) > 0:
        return None
    name = f"greenray-gpu-shares-{hashlib.sha1(str(out).encode()).hexdigest()[:12]}"
    return _Counter(name, start_counter(name))


def _trainable(settings: StudySettings, baseline: dict, counter: _Counter | None = None):
    """The trial function with its settings and resources (the same on a resume, as Tune asks);
    `counter` is the study's ShareCounter, when trials hold GPUs."""
    from ray import tune

    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial or 0.0}
    name = counter.name if counter is not None else None
    trial: TrialSettings = settings.trial(baseline, name)
    return tune.with_resources(tune.with_parameters(train_trial, settings=trial), resources)


def _trial_slots(settings: StudySettings) -> int:
    """How many trials the cluster's alive nodes can run at once with the trial's resources."""
    import ray

    cpus, gpus = settings.cpus_per_trial, settings.gpus_per_trial or 0.0
    slots = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        fits = math.floor(resources.get("CPU", 0) / cpus + 1e-9)
        if gpus > 0:
            fits = min(fits, math.floor(resources.get("GPU", 0) / gpus + 1e-9))
        slots += fits
    return max(slots, 1)


def _row_fields(settings: StudySettings) -> dict:
    """The columns every trial row of this study carries besides its own results."""
    return {
        "strategy": settings.strategy,
        "net": settings.net,
        "dataset": settings.dataset,
        "params": settings.params,
        "uniform_lr": settings.uniform_lr,
        "n_conv": settings.n_conv if settings.net == "cnn" else 0,
        "n_linear": settings.n_linear,
        "relu": bool(settings.relu),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "gpus_per_trial": settings.gpus_per_trial,
        "cpus_per_trial": settings.cpus_per_trial,
    }


def _check_data(settings: StudySettings) -> None:
    """Load (or --download) a torchvision data set once here, before any trial: missing offline
    it is one sentence and exit 2, not a failed trial each; trials on this machine then find
    it. (On a cluster, --address, each node's trials load their own copy.)"""
    from greenray.data import load

    if settings.dataset in ("fashionmnist", "cifar10"):
        load(settings.dataset, data_dir=settings.data_dir, download=settings.download)


def _with_resources(settings: StudySettings) -> StudySettings:
    """Settings with --gpus-per-trial decided (1 where the cluster has GPUs, else 0) and
    checked against the cluster."""
    import ray

    gpus = settings.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    _check_gpus(gpus, settings.cpus_per_trial)
    return dataclasses.replace(settings, gpus_per_trial=gpus)


def _check_gpus(gpus: float, cpus: float) -> None:
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    if gpus > 0 and most_gpus == 0:
        raise UsageError(f"--gpus-per-trial {gpus:g} asks for a GPU, but this Ray cluster has none: use 0")
    if gpus > most_gpus:
        raise UsageError(
            f"--gpus-per-trial {gpus:g} is more than any node has ({most_gpus:g}): use at most that"
        )
    if cpus > most_cpus:
        raise UsageError(
            f"--cpus-per-trial {cpus:g} is more than any node has ({most_cpus:g}): use at most that"
        )


def _idle_baseline(settings: StudySettings, say) -> list[IdleReading]:
    """Each GPU's (or node's) idle power where trials will run, before any trial starts."""
    readings = measure_cluster(
        settings.energy,
        settings.idle_seconds,
        settings.interval_ms,
        use_gpus=(settings.gpus_per_trial or 0) > 0,
    )
    unavailable = [r.problem for r in readings if not r.available]
    if unavailable and settings.energy != "auto":
        raise UsageError(f"{unavailable[0]}; use --energy auto")
    measured = [r for r in readings if r.sources]
    if settings.require_energy and not measured:
        raise UsageError(
            "no energy source is readable where the trials run; drop --require-energy or run where one is"
        )
    if not measured:
        say("idle baseline: skipped, nothing is measurable where the trials run (energy source: none)")
    elif settings.idle_seconds == 0:
        say("idle baseline: skipped (--idle-seconds 0), so idle-free energy is not reported")
    for r in measured:
        label = " (simulated, not a measurement)" if "simulated" in r.sources else ""
        watts = ", ".join(f"{uuid} {w:.1f} W" for uuid, w in r.watts.items())
        if watts:
            say(f"idle baseline on {r.node}: {watts}{label}")
    return readings


def _study_record(settings: StudySettings, readings: list[IdleReading], baseline: dict, out: Path) -> dict:
    versions = {"python": platform.python_version()}
    for package in ("greenray", "ray", "torch", "torchvision", "bayesian-optimization", "nvidia-ml-py"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "kind": "hpo",
        "settings": settings.to_json(),
        "trials": settings.trials,
        "baseline": baseline,  # {node: {device UUID: idle W}}
        "idle_readings": [dataclasses.asdict(r) for r in readings],
        "versions": versions,
        "driver": socket.gethostname(),
        "out": str(out),
        "started_at": time.time(),
    }
