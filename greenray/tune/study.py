"""A training study on Ray Tune: rounds x repetitions of a searcher's configurations, the idle
baseline measured first, one row per trial written as it ends, the green levers (stoppers, an
early-stopping scheduler, an energy-aware objective) where asked for, and resuming an
interrupted run from its results folder (DIR/study.json, DIR/trials.parquet, Tune's own state
in DIR/tune)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray.tune.search import ConcurrencyLimiter, Searcher

from greenray.config import DOWNLOADABLE, StudyConfig
from greenray.energy import counted_key, idle_known, nothing_to_count, rows_key
from greenray.errors import UsageError
from greenray.results import STOPPED, ResultStore, atomic_write, run_record
from greenray.tune import cluster
from greenray.tune.callbacks import TrialProgress, TrialRecorder
from greenray.tune.ledger import Stop, stop_reached
from greenray.tune.measure import with_energy
from greenray.tune.mutation import KIND as MUTATE_KIND
from greenray.tune.mutation import mutation_parts
from greenray.tune.objectives import ACCURACY, METRIC, MODE, PARETO, PER_KJ, front, searcher_metric
from greenray.tune.rounds import RoundRepeater

TUNE_DIR = "tune"  # Tune's experiment folder inside the results folder
STUDY_FILE = "study"  # DIR/study.json
PARETO_FILE = "pareto.csv"  # the accuracy / energy front of a --objective pareto study
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
    """Where a study's results are, whether it ran to the end of its budget, and which green
    lever stopped it before (a stopped study is finished, though not complete)."""

    root: Path
    config: StudyConfig
    recorded: int  # rows in DIR/trials.parquet
    stopped_by: Stop | None = None

    @property
    def complete(self) -> bool:
        return self.recorded >= self.config.trials and self.stopped_by is None

    @property
    def finished(self) -> bool:
        """Complete, or stopped by a lever: nothing is left for a resume to do."""
        return self.complete or self.stopped_by is not None


def start_study(
    config: StudyConfig,
    out: Path,
    *,
    address: str | None = None,
    say: Callable[[str], None] = print,
    searcher: Searcher | None = None,
    kind: str = "hpo",
    row_fields: dict | None = None,
    record_extra: dict | None = None,
) -> StudyRun:
    """Run a new study into the empty results folder `out`; `searcher` (metric and mode set)
    replaces the one config.search.strategy names. A study built on this one (greenray
    mutate) names its `kind` in study.json, adds `record_extra` there and `row_fields`
    (columns, replacing config.row_fields()'s) to every row."""
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
    _check_lever_energy(config, readings)
    baseline = cluster.baseline_by_node(readings)
    store = ResultStore(out)
    record = run_record(
        kind,
        config,
        trials=config.trials,
        baseline=baseline,  # {node: {device UUID: idle W}}
        idle_readings=[dataclasses.asdict(r) for r in readings],
        out=str(out),
        **(record_extra or {}),
    )
    store.write_json(STUDY_FILE, record)
    search = config.search
    say(f"results: {out} ({config.trials} trials: {search.rounds} rounds x {search.repetitions} repetitions)")
    counter = cluster.share_counter(config, out)  # held until the trials end: Ray collects it after
    tuner = _new_tuner(config, baseline, out, searcher, counter, row_fields)
    with _quiet_trial_errors():
        tuner.fit()
    return _finish(store, record, config)


def resume_study(
    out: Path, *, address: str | None = None, say: Callable[[str], None] = print, kind: str | None = None
) -> StudyRun:
    """Go on with the study in `out` where it stopped: finished trials keep their rows, the
    rest of the budget runs (Tune's own state, DIR/tune, restored with Tuner.restore). `kind`
    (hpo, mutate): the command that asked, which must match the folder's (None: any)."""
    from ray import tune

    from greenray.ray_setup import connect

    out = out.expanduser().absolute()
    record = ResultStore(out).read_json(STUDY_FILE) if out.is_dir() else None
    if record is None:
        raise UsageError(
            f"--resume {out}: that folder holds no study.json; give the --out folder of an earlier hpo run"
        )
    stored_kind = record.get("kind", "hpo")
    if kind is not None and stored_kind != kind:
        raise UsageError(
            f"--resume {out} holds a greenray {stored_kind} study: resume it with greenray {stored_kind}"
        )
    config = stored_config(record, out)
    baseline = record.get("baseline", {})
    connect(address)
    cluster.check_resources(config.resources)
    store = ResultStore(out)
    rows = store.read("trials")
    done = len(rows)
    say(f"resuming {out}: {done} of {config.trials} trials recorded")
    # A lever that stopped the study stops it again at once: the stored rows meet its condition.
    stop = study_stop(config, rows, baseline)
    if stop is not None:
        say(f"stopped by {stop.lever} ({stop.detail}): nothing to resume")
        return StudyRun(out, config, done, stop)
    if done >= config.trials:
        return StudyRun(out, config, done)
    _quiet_tune()
    counter = cluster.share_counter(config, out)
    with _quiet_trial_errors():
        if tune.Tuner.can_restore(str(out / TUNE_DIR)):
            trainable = study_trainable(config, baseline, counter)
            tuner = tune.Tuner.restore(str(out / TUNE_DIR), trainable=trainable, resume_unfinished=True)
        else:  # stopped before Tune saved any state: start over; recorded slots keep their rows
            searcher, row_fields = _variant(record, config)
            tuner = _new_tuner(config, baseline, out, searcher, counter, row_fields)
        tuner.fit()
    return _finish(store, record, config)


def _variant(record: dict, config: StudyConfig) -> tuple[Searcher | None, dict | None]:
    """The searcher and row columns of a study built on this one, from its study.json."""
    if record.get("kind") == MUTATE_KIND:
        return mutation_parts(record, config)
    return None, None


def study_energy(config: StudyConfig, baseline: dict) -> str:
    """The energy the study's levers count (--energy-budget, the objectives): idle-free where
    the trials know the idle baseline (as the study reported training energy, and as the
    summary counts it), else the total."""
    return counted_key(idle_known(bool(baseline), config.energy.backend))


def lever_stop(config: StudyConfig, rows: pd.DataFrame, baseline: dict) -> Stop | None:
    """The lever whose condition a study's stored rows meet (None: none is, or none is on);
    the rule the study's stoppers apply live (greenray.tune.ledger.stop_reached)."""
    levers = config.levers
    if not levers.stopping or rows.empty:
        return None
    return stop_reached(
        rows.to_dict("records"),
        repetitions=config.search.repetitions,
        energy_budget=levers.energy_budget,
        patience=levers.patience,
        target_accuracy=levers.target_accuracy,
        energy=study_energy(config, baseline),
    )


def study_stop(config: StudyConfig, rows: pd.DataFrame, baseline: dict) -> Stop | None:
    """The lever that stopped a study: its condition met by the stored rows while trials were
    left unstarted or were cut short. A budget that only the last trial's own end reached
    stopped nothing; one reached while the last trials ran stopped them, though each has a row."""
    cut_short = len(rows) < config.trials or (rows["status"] == STOPPED).any()
    return lever_stop(config, rows, baseline) if cut_short else None


def _finish(store: ResultStore, record: dict, config: StudyConfig) -> StudyRun:
    """After Tune: which lever stopped the study (kept in study.json as `stop`) and, for a
    pareto study, its front in DIR/pareto.csv."""
    rows = store.read("trials")
    stop = study_stop(config, rows, record.get("baseline", {}))
    if stop is not None or "stop" in record:
        store.write_json(STUDY_FILE, record | {"stop": stop.as_dict() if stop else None})
    if config.levers.objective == PARETO:
        write_front(store.root, rows)
    return StudyRun(store.root, config, len(rows), stop)


def study_front(rows: pd.DataFrame) -> pd.DataFrame:
    """The accuracy / energy front of a study's ok trials (every epoch trained), with the
    energy its summary uses (idle-free where every ok trial has it)."""
    ok = rows[rows["status"] == "ok"] if len(rows) else rows
    column = rows_key(ok.to_dict("records"))
    kept = ["trial_id", "round", "repetition", "accuracy", column, "config"]
    if ok.empty:
        return pd.DataFrame(columns=kept)
    return front(ok, column)[[c for c in kept if c in ok]]


def write_front(root: Path, rows: pd.DataFrame) -> Path:
    """DIR/pareto.csv, rewritten atomically."""
    table = study_front(rows)
    path = root / PARETO_FILE
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    return path


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
        trial,
        energy=energy.backend,
        interval_ms=energy.interval_ms,
        baseline=baseline,
        busy=False,
        per_kj=METRIC if config.levers.objective == PER_KJ else (),
        carbon_intensity=energy.g_per_kwh,
        modelled_work=True,  # train_trial reports its work: simulated Joules follow it
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
    row_fields: dict | None = None,
):
    """A Tuner for a new study; `searcher` replaces the one the strategy names (tests script
    one, greenray mutate lists its configurations); `row_fields` replaces config.row_fields()."""
    from ray import tune
    from ray.tune.stopper import CombinedStopper

    from greenray.tune.searchers import make_searcher
    from greenray.tune.space import search_space

    _quiet_tune()
    search = config.search
    if searcher is None:
        space = search_space(search.params, uniform_lr=search.uniform_lr, max_epochs=config.trial.epochs)
        metric, mode = searcher_metric(config.levers.objective, study_energy(config, baseline))
        searcher = make_searcher(search.strategy, space, metric=metric, mode=mode, seed=config.seed)
    # Bayes learns from every round before the next; grid and random need not wait.
    # An early-stopped round's accuracy is a lower bound the searcher may learn from; its energy
    # (for the energy-aware objectives) would only flatter it.
    partial = config.levers.objective == ACCURACY
    repeater = RoundRepeater(
        searcher, repeat=search.repetitions, sequential=search.strategy == "bayes", partial=partial
    )
    # Tune keeps only one trial pending for a custom searcher unless a ConcurrencyLimiter says
    # how many may run: without it, short trials run one after another on one node.
    limit = config.resources.max_concurrent or cluster.trial_slots(config.resources)
    levers = study_levers(config, baseline)
    return tune.Tuner(
        study_trainable(config, baseline, counter),
        # No param_space: the searcher holds the space, metric and mode.
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(repeater, max_concurrent=limit),
            scheduler=study_scheduler(config),
            num_samples=config.trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(out),
            # The stoppers are callbacks too (they hear of trials that fail or are stopped);
            # Tune pickles the run config whole, so each is one object in both places.
            stop=CombinedStopper(*levers) if levers else None,
            callbacks=[
                *levers,
                TrialRecorder(config.row_fields() if row_fields is None else row_fields, levers),
                TrialProgress(config.trials, METRIC),
            ],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


def study_levers(config: StudyConfig, baseline: dict) -> list:
    """The stoppers the study's levers ask for (greenray.tune.stoppers)."""
    from greenray.tune.stoppers import EnergyBudgetStopper, PatienceStopper, TargetAccuracyStopper

    levers, repetitions = config.levers, config.search.repetitions
    stoppers = []
    if levers.energy_budget is not None:
        stoppers.append(EnergyBudgetStopper(levers.energy_budget, metric=study_energy(config, baseline)))
    if levers.target_accuracy is not None:
        stoppers.append(TargetAccuracyStopper(levers.target_accuracy, METRIC, MODE, repetitions))
    if levers.patience is not None:
        stoppers.append(PatienceStopper(levers.patience, METRIC, MODE, repetitions))
    return stoppers


# Early stopping of bad trials on the accuracy each epoch reports: Ray Tune's own schedulers.
# ASHA: rungs at 1, 3, 9, ... epochs, the top third of each rung goes on; median: a trial
# whose best accuracy so far is below the median of the others' at the same epoch stops.
ASHA_REDUCTION, MEDIAN_MIN_SAMPLES = 3, 3


def study_scheduler(config: StudyConfig):
    """Tune's scheduler for --scheduler (None: FIFO, every trial to its last epoch)."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    name = config.levers.scheduler
    common = {"time_attr": "training_iteration", "metric": METRIC, "mode": MODE}
    if name == "asha":
        return ASHAScheduler(
            **common, max_t=config.trial.epochs, grace_period=1, reduction_factor=ASHA_REDUCTION
        )
    if name == "median":
        return MedianStoppingRule(**common, grace_period=1, min_samples_required=MEDIAN_MIN_SAMPLES)
    return None


def _check_lever_energy(config: StudyConfig, readings: list) -> None:
    """A lever that counts energy where nothing is measurable is one sentence, not a study
    whose budget never fills or whose objective is empty."""
    needs = config.levers.needs_energy
    if needs and not any(reading.sources for reading in readings):
        raise UsageError(nothing_to_count(needs[0], "on the trials' nodes"))


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
