"""Ray Tune callbacks of the study's driver: one row per trial written to the results folder as
each trial ends (ok, failed, or stopped early by a scheduler or a lever), and a rich progress
bar in place of Tune's console reporter.

Tune pickles callbacks into its own state (and unpickles them on `Tuner.restore`), so these
hold only plain values; the results folder is found from the trial's own path (Tune's state
names the folder it ran in, so a resume restores it only in that very folder, and a moved or
copied one starts a fresh Tune experiment there: greenray.tune.tunestate), and rows are keyed
by (round, repetition) so a re-run never adds a row twice.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ray import cloudpickle
from ray.tune import Callback

from greenray.results import ENERGY_COLUMNS, FAILED, OK, STOPPED, ResultStore
from greenray.results.schema import EPOCH_COLUMNS, RESULT_COLUMNS
from greenray.tune.keys import TrialFailed, hyperparameters, labels, slot
from greenray.tune.ledger import ran_to_end
from greenray.tune.space import trained_with


def study_root(trial) -> Path:
    """The results folder DIR of a trial stored at DIR/tune/<trial>."""
    return Path(trial.path).parents[1]


def trial_error(trial) -> BaseException | None:
    """The exception a trial failed with. Tune writes it on the driver first (trial.local_path)
    and syncs it to storage later, so it is read from there (get_pickled_error reads storage)."""
    path = trial.pickled_error_file
    if not path or not Path(path).exists():
        return None
    try:
        return cloudpickle.loads(Path(path).read_bytes())
    except Exception:  # an error class this process cannot import; error.txt keeps its text
        return None


def one_line(exc: BaseException | None) -> str:
    """The root cause of a trial's error, as one line."""
    cause = getattr(exc, "cause", None) or exc
    if cause is None:
        return "the trial failed (no error was kept)"
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}".strip()


class TrialRecorder(Callback):
    """Appends DIR/trials.{parquet,csv} (one row per trial) and DIR/epochs.{parquet,csv}
    through ResultStore as each trial completes, fails or is stopped. A trial that ended
    before its last epoch (a scheduler stopped it) is `stopped`, with what it spent and the
    accuracy of its last epoch; so are the trials still running when one of `levers` (the
    study's stoppers) stopped the whole study, which Tune ends without a callback."""

    def __init__(self, study: dict, levers: tuple = ()) -> None:
        self.study = dict(study)  # columns every row carries: strategy, net, dataset, ...
        self.levers = tuple(levers)  # Stoppers with stop_all(): the study's green levers
        self._epochs: dict[str, list[dict]] = {}
        self._stores: dict[Path, tuple[ResultStore, set]] = {}

    def __getstate__(self) -> dict:
        return {"study": self.study, "levers": self.levers, "_epochs": {}, "_stores": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"levers": ()} | state)  # (a state pickled before levers existed)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._epochs.setdefault(trial.trial_id, []).append({k: result.get(k) for k in EPOCH_COLUMNS})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write_ended(trial)

    def on_experiment_end(self, trials, **info) -> None:
        # Tune ends the trials a stopper's stop_all() stopped without on_trial_complete; on
        # Ctrl-C it ends the running ones the same way, and those must run again on a resume,
        # so only a lever's stop records them.
        if not any(lever.stop_all() for lever in self.levers):
            return
        for trial in trials:
            if trial.status == "TERMINATED" and trial.last_result and "energy_j" in trial.last_result:
                self._write_ended(trial)

    def _write_ended(self, trial) -> None:
        result = trial.last_result or {}
        measured = {k: result.get(k) for k in (*ENERGY_COLUMNS, *RESULT_COLUMNS)}
        status = OK if ran_to_end(result) else STOPPED
        self._write(trial, _trial_power(measured) | {"status": status, "error": None})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        exc = trial_error(trial)
        cause = getattr(exc, "cause", None) or exc
        measured = dict.fromkeys((*ENERGY_COLUMNS, *RESULT_COLUMNS))
        measured["energy_source"] = "none"
        measured["accuracy"] = math.nan
        last = trial.last_result or {}  # a trial lost with its node says at least where it ran
        measured |= {k: last.get(k) for k in ("node_id", "node_ip", "gpu_ids", "epochs_done")}
        # What the trial spent until it failed (with_energy puts it on the error) and, for the
        # study's own failures, its place and epochs.
        spent = getattr(cause, "greenray_energy", None) or {}
        extra = cause.row if isinstance(cause, TrialFailed) else {}
        measured |= {k: v for k, v in (spent | extra).items() if k in measured}
        self._write(trial, _trial_power(measured) | {"status": FAILED, "error": one_line(exc)})

    def _write(self, trial, measured: dict) -> None:
        store, written = self._store(study_root(trial))
        key = slot(trial.config)
        epochs = self._epochs.pop(trial.trial_id, [])
        if key in written:  # a trial re-run after a resume: its slot already has its row
            return
        params = trained_with(hyperparameters(trial.config))  # a searched batch size as trained
        row = {
            "trial_id": trial.trial_id,
            **self.study,
            **labels(trial.config),
            "round": key[0],
            "repetition": key[1],
            **params,
            "config": json.dumps(params, sort_keys=True),
            "finished_at": time.time(),
            **measured,
        }
        store.append("trials", [row])
        if epochs:
            store.append("epochs", [{"trial_id": trial.trial_id, **e} for e in epochs])
        written.add(key)

    def _store(self, root: Path) -> tuple[ResultStore, set]:
        if root not in self._stores:
            store = ResultStore(root)
            frame = store.read("trials")
            written = {(int(r), int(k)) for r, k in zip(frame["round"], frame["repetition"], strict=True)}
            self._stores[root] = (store, written)
        return self._stores[root]


def _trial_power(row: dict) -> dict:
    """A trial row's avg_power_w is the trial's (with_energy reports it since the last report)."""
    joules, seconds = row.get("energy_j"), row.get("seconds")
    average = joules / seconds if joules is not None and seconds else None
    return row | {"avg_power_w": average}


class TrialProgress(Callback):
    """A rich progress bar over the study's trials: ended / budget, failures, best accuracy.
    A trial counts once it completed or failed (Tune also marks trials it stops on Ctrl-C as
    terminated; those run again on a resume)."""

    def __init__(self, budget: int, metric: str = "accuracy") -> None:
        self.budget = budget
        self.metric = metric
        self._reset()

    def _reset(self) -> None:
        self._progress = None
        self._task = None
        self._ended: dict[str, bool] = {}  # trial id -> failed
        self._best: float | None = None
        self._scanned = False

    def __getstate__(self) -> dict:
        return {"budget": self.budget, "metric": self.metric}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def setup(self, **info) -> None:
        from greenray.ui import bars

        self._progress = bars(label="[bold]trials", description_last=True)
        self._task = self._progress.add_task("", total=self.budget)
        self._progress.start()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self._scanned:  # a resumed study: count what ended before
            self._scanned = True
            for trial in trials:
                if trial.status in ("TERMINATED", "ERROR"):
                    self._end(trial, trial.status == "ERROR")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, failed=True)

    def on_experiment_end(self, trials, **info) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _end(self, trial, failed: bool) -> None:
        self._ended[trial.trial_id] = failed
        score = (trial.last_result or {}).get(self.metric)
        if not failed and isinstance(score, int | float) and math.isfinite(score):
            self._best = score if self._best is None else max(self._best, score)
        if self._progress is None:
            return
        parts = [f"best {self.metric} {self._best:.4f}"] if self._best is not None else []
        failures = sum(self._ended.values())
        if failures:
            parts.append(f"[red]failed {failures}[/]")
        self._progress.update(self._task, completed=len(self._ended), description=" · ".join(parts))
