"""A training study on Ray Tune: rounds x repetitions of a searcher's configurations, the idle
baseline measured first, one row per trial written as it ends, and resuming an interrupted run
from its results folder (DIR/study.json, DIR/trials.parquet, Tune's own state in DIR/tune)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ray.tune.search import ConcurrencyLimiter, Searcher

from greenray.config import DOWNLOADABLE, StudyConfig
from greenray.errors import UsageError
from greenray.results import ResultStore, run_record
from greenray.tune import cluster
from greenray.tune.callbacks import TrialProgress, TrialRecorder
from greenray.tune.measure import with_energy
from greenray.tune.rounds import RoundRepeater

METRIC, MODE = "accuracy", "max"
TUNE_DIR = "tune"  # Tune's experiment folder inside the results folder
STUDY_FILE = "study"  # DIR/study.json
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


@dataclass(frozen=True)
class StudyRun:
    """Where a study's results are and whether it ran to the end of its budget."""

    root: Path
    config: StudyConfig
    recorded: int  # rows in DIR/trials.parquet

    @property
    def complete(self) -> bool:
        return self.recorded >= self.config.trials


def start_study(
    config: StudyConfig,
    out: Path,
    *,
    address: str | None = None,
    say: Callable[[str], None] = print,
    searcher: Searcher | None = None,
) -> StudyRun:
    """Run a new study into the empty results folder `out`; `searcher` (metric and mode set)
    replaces the one config.search.strategy names."""
    from greenray.ray_setup import connect

    out = _results_folder(out)
    if (out / f"{STUDY_FILE}.json").exists() or (out / TUNE_DIR).exists():
        raise UsageError(
            f"{out} already holds a study: continue it with --resume {out}, or choose another --out"
        )
    if address is None:
        _check_data(config)
    connect(address)
    config = cluster.with_resources(config)
    readings = cluster.idle_baseline(config, say)
    baseline = cluster.baseline_by_node(readings)
    store = ResultStore(out)
    record = run_record(
        "hpo",
        config,
        trials=config.trials,
        baseline=baseline,  # {node: {device UUID: idle W}}
        idle_readings=[dataclasses.asdict(r) for r in readings],
        out=str(out),
    )
    store.write_json(STUDY_FILE, record)
    search = config.search
    say(f"results: {out} ({config.trials} trials: {search.rounds} rounds x {search.repetitions} repetitions)")
    counter = cluster.share_counter(config, out)  # held until the trials end: Ray collects it after
    tuner = _new_tuner(config, baseline, out, searcher, counter)
    with _quiet_trial_errors():
        tuner.fit()
    return StudyRun(out, config, len(store.read("trials")))


def resume_study(out: Path, *, address: str | None = None, say: Callable[[str], None] = print) -> StudyRun:
    """Go on with the study in `out` where it stopped: finished trials keep their rows, the
    rest of the budget runs (Tune's own state, DIR/tune, restored with Tuner.restore)."""
    from ray import tune

    from greenray.ray_setup import connect

    out = out.expanduser().absolute()
    record = ResultStore(out).read_json(STUDY_FILE) if out.is_dir() else None
    if record is None:
        raise UsageError(
            f"--resume {out}: that folder holds no study.json; give the --out folder of an earlier hpo run"
        )
    config = stored_config(record, out)
    baseline = record.get("baseline", {})
    connect(address)
    cluster.check_resources(config.resources)
    store = ResultStore(out)
    done = len(store.read("trials"))
    say(f"resuming {out}: {done} of {config.trials} trials recorded")
    if done >= config.trials:
        return StudyRun(out, config, done)
    _quiet_tune()
    counter = cluster.share_counter(config, out)
    with _quiet_trial_errors():
        if tune.Tuner.can_restore(str(out / TUNE_DIR)):
            trainable = study_trainable(config, baseline, counter)
            tuner = tune.Tuner.restore(str(out / TUNE_DIR), trainable=trainable, resume_unfinished=True)
        else:  # stopped before Tune saved any state: start over; recorded slots keep their rows
            tuner = _new_tuner(config, baseline, out, counter=counter)
        tuner.fit()
    return StudyRun(out, config, len(store.read("trials")))


def stored_config(record: dict, out: Path) -> StudyConfig:
    """The config a study.json holds: `config` (nested) or, in folders written before the
    config spine, `settings` (flat names, the same as the CLI's)."""
    if "config" in record:
        return StudyConfig.checked(record["config"])
    if "settings" in record:
        return StudyConfig.from_flat(record["settings"])
    raise UsageError(f"--resume {out}: its study.json holds no settings; give the --out folder of an hpo run")


def study_trainable(config: StudyConfig, baseline: dict, counter: cluster.ShareCounter | None = None):
    """The study's trial function with its settings, energy and resources (the same on a
    resume, as Tune asks); `counter` is the study's ShareCounter, when trials hold GPUs."""
    from ray import tune

    from greenray.tune.trainable import train_trial

    name = counter.name if counter is not None else None
    trial = tune.with_parameters(train_trial, trial=config.trial, seed=config.seed, counter=name)
    energy = config.energy
    # busy=False: the trial's work is in its epoch and test windows; the waits for Tune between
    # reports are idle (the simulated backend draws idle W then, as a GPU would).
    measured = with_energy(
        trial, energy=energy.backend, interval_ms=energy.interval_ms, baseline=baseline, busy=False
    )
    resources = config.resources
    return tune.with_resources(
        measured, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial or 0}
    )


def _new_tuner(
    config: StudyConfig,
    baseline: dict,
    out: Path,
    searcher: Searcher | None = None,
    counter: cluster.ShareCounter | None = None,
):
    """A Tuner for a new study; `searcher` replaces the one the strategy names (tests script one)."""
    from ray import tune

    from greenray.tune.searchers import make_searcher
    from greenray.tune.space import adam_space

    _quiet_tune()
    search = config.search
    if searcher is None:
        space = adam_space(search.params, uniform_lr=search.uniform_lr)
        searcher = make_searcher(search.strategy, space, metric=METRIC, mode=MODE, seed=config.seed)
    # Bayes learns from every round before the next; grid and random need not wait.
    repeater = RoundRepeater(searcher, repeat=search.repetitions, sequential=search.strategy == "bayes")
    # Tune keeps only one trial pending for a custom searcher unless a ConcurrencyLimiter says
    # how many may run: without it, short trials run one after another on one node.
    limit = config.resources.max_concurrent or cluster.trial_slots(config.resources)
    return tune.Tuner(
        study_trainable(config, baseline, counter),
        # No param_space: the searcher holds the space, metric and mode.
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(repeater, max_concurrent=limit),
            num_samples=config.trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(out),
            callbacks=[TrialRecorder(config.row_fields()), TrialProgress(config.trials, METRIC)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


def _results_folder(out: Path) -> Path:
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: give a folder for the results")
    return out


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


def _check_data(config: StudyConfig) -> None:
    """Load (or --download) a torchvision data set once here, before any trial: missing offline
    it is one sentence and exit 2, not a failed trial each; trials on this machine then find
    it. (On a cluster, --address, each node's trials load their own copy.)"""
    from greenray.tune.data import load

    trial = config.trial
    if trial.dataset in DOWNLOADABLE:
        load(trial.dataset, data_dir=trial.data_dir, download=trial.download)
