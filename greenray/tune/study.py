"""A training study on Ray Tune: rounds x repetitions of a searcher's configurations, the idle
baseline measured first, one row per trial written as it ends, the green levers (stoppers, an
early-stopping scheduler, an energy-aware objective) where asked for, and resuming an
interrupted run from its results folder (DIR/study.json, DIR/trials.parquet, Tune's own state
in DIR/tune)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray.tune.search import ConcurrencyLimiter, Searcher

from greenray.config import DOWNLOADABLE, StudyConfig
from greenray.energy import counted_key, idle_known, nothing_to_count, rows_key
from greenray.errors import UsageError
from greenray.results import STOPPED, ResultStore, atomic_write, folder_lock, run_record
from greenray.trust import check_trusted
from greenray.tune import cluster, tunestate
from greenray.tune.callbacks import TrialProgress, TrialRecorder
from greenray.tune.fitting import fit as _fit
from greenray.tune.fitting import quiet_tune as _quiet_tune
from greenray.tune.ledger import Stop, stop_reached
from greenray.tune.measure import with_energy
from greenray.tune.mutation import KIND as MUTATE_KIND
from greenray.tune.mutation import mutation_parts
from greenray.tune.objectives import (
    ACCURACY,
    METRIC,
    MODE,
    PARETO,
    PER_KJ,
    front,
    searcher_metric,
    searcher_options,
)
from greenray.tune.replay import replaying, stored_slots
from greenray.tune.rounds import RoundRepeater

TUNE_DIR = "tune"  # Tune's experiment folder inside the results folder
STUDY_FILE = "study"  # DIR/study.json
PARETO_FILE = "pareto.csv"  # the accuracy / energy front of a --objective pareto study


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
    (columns, replacing config.row_fields()'s) to every row. The folder is locked while the
    study runs: a second process on it is refused at once."""
    out = _results_folder(out)
    with folder_lock(out):
        if (out / f"{STUDY_FILE}.json").exists() or (out / TUNE_DIR).exists():
            raise UsageError(
                f"{out} already holds a study: continue it with --resume {out}, or choose another --out"
            )
        return _start(config, out, address, say, searcher, row_fields, kind=kind, extra=record_extra or {})


def _start(config, out, address, say, searcher, row_fields, *, kind: str, extra: dict) -> StudyRun:
    from greenray.ray_setup import connect

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
        out=str(out),  # a resume of a moved or copied folder does not restore Tune's state
        **extra,
    )
    store.write_json(STUDY_FILE, record)
    search = config.search
    say(f"results: {out} ({config.trials} trials: {search.rounds} rounds x {search.repetitions} repetitions)")
    counter = cluster.share_counter(config, out)  # held until the trials end: Ray collects it after
    _fit(_new_tuner(config, baseline, out, searcher, counter, row_fields))
    return _finish(store, record, config)


def resume_study(
    out: Path,
    *,
    address: str | None = None,
    say: Callable[[str], None] = print,
    trust: bool = False,
    kind: str | None = None,
) -> StudyRun:
    """Go on with the study in `out` where it stopped: finished trials keep their rows, the
    rest of the budget runs. Tune's own state (DIR/tune) is restored with Tuner.restore where
    it is whole and was written in this folder, and only from a folder no other user could
    write unless `trust` (it is pickled: greenray.trust); else the study goes on from its
    stored rows in a fresh Tune experiment (greenray.tune.replay). The folder is locked.
    `kind` (hpo, mutate): the command that asked, which must match the folder's (None: any)."""
    out = out.expanduser().absolute()
    if not (out / f"{STUDY_FILE}.json").is_file():
        raise UsageError(
            f"--resume {out}: that folder holds no study.json; give the --out folder of an earlier hpo run"
        )
    with folder_lock(out):
        return _resume(out, address, say, trust, kind)


def _resume(
    out: Path, address: str | None, say: Callable[[str], None], trust: bool, kind: str | None
) -> StudyRun:
    from greenray.ray_setup import connect

    store = ResultStore(out)
    record = store.read_json(STUDY_FILE)
    stored_kind = (record or {}).get("kind", "hpo")
    if kind is not None and stored_kind != kind:
        raise UsageError(
            f"--resume {out} holds a greenray {stored_kind} study: resume it with greenray {stored_kind}"
        )
    config = stored_config(record, out)
    baseline = record.get("baseline", {})
    tune_dir = out / TUNE_DIR
    rows = store.read("trials")
    problem = tunestate.state_problem(tune_dir, record.get("out"), out, len(rows))
    if problem is None:
        check_trusted(out, tunestate.trusted_paths(tune_dir), trust=trust)
    connect(address)
    cluster.check_resources(config.resources)
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
    if problem is None:
        from ray import tune

        trainable = study_trainable(config, baseline, counter)
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True)
    else:
        if tune_dir.exists():
            say(f"Ray Tune's saved state is not used ({problem}): the study goes on from its {done} rows")
        tunestate.set_aside(tune_dir)
        record = record | {"out": str(out)}
        store.write_json(STUDY_FILE, record)
        searcher, row_fields = _variant(record, config)
        slots = stored_slots(rows)
        tuner = _new_tuner(config, baseline, out, searcher, counter, row_fields, slots)
    _fit(tuner)
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
        target_accuracy=levers.stop_accuracy,
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


def study_trainable(
    config: StudyConfig,
    baseline: dict,
    counter: cluster.ShareCounter | None = None,
    slots: dict | None = None,
):
    """The study's trial function with its settings, energy and resources (the same on a
    resume, as Tune asks); `counter` is the study's ShareCounter, when trials hold GPUs;
    `slots` are stored rows a study resumed from its rows replays (greenray.tune.replay)."""
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
    if slots:
        measured = replaying(measured, slots)
    resources = config.resources
    return tune.with_resources(
        measured, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial or 0}
    )


def study_searcher(config: StudyConfig, baseline: dict) -> Searcher:
    """The searcher the study's strategy names, on its space, for its objective."""
    from greenray.tune.searchers import make_searcher
    from greenray.tune.space import search_space

    search, levers = config.search, config.levers
    space = search_space(search.params, uniform_lr=search.uniform_lr, max_epochs=config.trial.epochs)
    metric, mode = searcher_metric(levers.objective, study_energy(config, baseline))
    options = searcher_options(levers.objective, search.strategy, levers.target_accuracy)
    return make_searcher(search.strategy, space, metric=metric, mode=mode, seed=config.seed, **options)


def _new_tuner(
    config: StudyConfig,
    baseline: dict,
    out: Path,
    searcher: Searcher | None = None,
    counter: cluster.ShareCounter | None = None,
    row_fields: dict | None = None,
    slots: dict | None = None,
):
    """A Tuner for a new study; `searcher` replaces the one the strategy names (tests script
    one, greenray mutate lists its configurations); `row_fields` replaces config.row_fields();
    `slots`: stored rows to replay (a study resumed from its rows)."""
    from ray import tune
    from ray.tune.stopper import CombinedStopper

    _quiet_tune()
    search = config.search
    if searcher is None:
        searcher = study_searcher(config, baseline)
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
        study_trainable(config, baseline, counter, slots),
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
    if levers.stop_accuracy is not None:
        stoppers.append(TargetAccuracyStopper(levers.stop_accuracy, METRIC, MODE, repetitions))
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


def _check_data(config: StudyConfig) -> None:
    """Load (or --download) a torchvision data set once here, before any trial: missing offline
    it is one sentence and exit 2, not a failed trial each; trials on this machine then find
    it. (On a cluster, --address, each node's trials load their own copy.)"""
    from greenray.tune.data import load

    trial = config.trial
    if trial.dataset in DOWNLOADABLE:
        load(trial.dataset, data_dir=trial.data_dir, download=trial.download)
