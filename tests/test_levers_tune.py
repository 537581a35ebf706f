"""The green levers on the session's local Ray with the simulated backend: real studies stopped
by an energy budget and by patience, ASHA stopping bad trials early (with accuracy per kJ as
the searcher's metric), the pareto objective's front, greenray mutate and its report, and the
target-accuracy stopper in a user's own Tuner. Every stopped study still resumes. (The rule
behind every stopping lever is tested without Ray in test_levers.py.)"""

import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ScriptedSearch
from ray import cloudpickle, tune
from ray.tune.search import ConcurrencyLimiter
from typer.testing import CliRunner

from greenray.analysis.report import build_report
from greenray.cli import app
from greenray.config import MutateConfig, StudyConfig
from greenray.results.store import read_csv
from greenray.tune.ledger import BUDGET, PATIENCE
from greenray.tune.mutate import start_mutation
from greenray.tune.objectives import non_dominated
from greenray.tune.rounds import RoundRepeater
from greenray.tune.stoppers import TargetAccuracyStopper
from greenray.tune.study import PARETO_FILE, resume_study, start_study

ADAM = {"beta1": 0.9, "beta2": 0.999}
GOOD, BAD = {"lr": 0.01} | ADAM, {"lr": 1e-5} | ADAM  # digits in 2 epochs of batch 64: ~0.9 and ~0.1
# One trial at a time unless a test needs two: each concurrent trial is a worker process of its
# own, and starting one (torch and all) costs more CPU here than a trial of digits.
SMALL = {"epochs": 2, "batch_size": 64, "energy": "simulated", "idle_seconds": 0.1, "repetitions": 1}
SMALL |= {"max_concurrent": 1}


def study(tmp: Path, name: str, searcher=None, **flat):
    """A study run in-process; its run and rows."""
    config = StudyConfig.from_flat(SMALL | flat)
    run = start_study(config, tmp / name, say=lambda line: None, searcher=searcher)
    return run, pd.read_parquet(run.root / "trials.parquet")


def resumes_at_once(run):
    """A stopped study resumed: nothing runs, the same lever is named, the rows stay."""
    before = pd.read_parquet(run.root / "trials.parquet")
    again = resume_study(run.root, say=lambda line: None)
    assert again.stopped_by == run.stopped_by and again.finished and not again.complete
    pd.testing.assert_frame_equal(pd.read_parquet(run.root / "trials.parquet"), before)


@pytest.fixture(scope="module")
def tmp(ray_local, tmp_path_factory):
    return tmp_path_factory.mktemp("levers")


def test_the_budget_stops_the_study_within_budget_plus_the_running_trials(tmp):
    budget = 20.0  # about three trials' worth: whatever the machine's speed, trials are left unstarted
    run, trials = study(tmp, "budget", strategy="random", rounds=8, max_concurrent=2, energy_budget=budget)
    assert run.stopped_by.lever == BUDGET and not run.complete and run.finished and len(trials) < 8
    joules = trials["idle_free_energy_j"]  # what the budget counts where the baseline is known
    running = trials["status"] == "stopped"  # running when the budget was reached
    # The report that crossed the budget came from a running trial, or from the last ok one.
    crossing = trials[~running].sort_values("finished_at").index[-1:]
    before = joules.drop(index=[*trials.index[running], *crossing]).sum()
    assert before < budget <= joules.sum() <= budget + joules[running].sum() + joules[crossing].sum()
    assert joules[running].notna().all() and (trials.loc[running, "epochs_done"] < 2).all()
    resumes_at_once(run)
    result = CliRunner().invoke(app, ["hpo", "--resume", str(run.root)])  # the command says so, exit 0
    assert result.exit_code == 0, result.output
    assert "stopped by: energy-budget" in result.output
    assert (
        "energy budget [simulated, not a measurement]: " in result.output
        and " of 20 J spent" in result.output
    )


def test_patience_stops_after_exactly_r_rounds_without_a_better_one(tmp):
    # bayes: rounds run one after another, so no round past the stop has started.
    searcher = ScriptedSearch([GOOD, BAD, BAD, GOOD, GOOD, GOOD])
    run, trials = study(tmp, "patience", searcher, strategy="bayes", rounds=6, patience=2)
    assert run.stopped_by.lever == PATIENCE and run.stopped_by.round == 2
    assert sorted(trials["round"]) == [0, 1, 2] and (trials["status"] == "ok").all()
    accuracy = trials.set_index("round")["accuracy"]
    assert accuracy[0] > max(accuracy[1], accuracy[2])
    resumes_at_once(run)


class PerKjSearch(ScriptedSearch):
    """A scripted searcher whose metric is accuracy per kJ (--objective accuracy-per-kj)."""

    def __init__(self, configs):
        super().__init__(configs)
        self._metric = "accuracy_per_kj"


def test_asha_stops_bad_trials_early_and_their_rows_say_stopped_with_their_energy(tmp):
    searcher = PerKjSearch([GOOD, GOOD, BAD, BAD])
    run, trials = study(
        tmp, "asha", searcher, strategy="random", rounds=4, max_concurrent=1, scheduler="asha",
        objective="accuracy-per-kj",
    )  # fmt: skip
    assert run.complete and len(trials) == 4  # a scheduler ends trials, not the study
    stopped = trials[trials["status"] == "stopped"]
    assert set(stopped["round"]) == {2, 3}
    assert (stopped["epochs_done"] < 2).all() and (stopped["energy_j"] > 0).all()
    ok = trials[trials["status"] == "ok"].sort_values("round")
    assert (ok["epochs_done"] == 2).all()
    # The searcher hears each full round's accuracy per kJ; a round none of whose repetitions
    # ran to the end is an error to it, not a value.
    assert [told for told, _ in searcher.told[:2]] == [
        {"accuracy_per_kj": pytest.approx(a / (e / 1000))}
        for a, e in zip(ok["accuracy"], ok["idle_free_energy_j"], strict=True)
    ]
    assert searcher.told[2:] == [(None, True)] * 2
    assert resume_study(run.root, say=lambda line: None).recorded == 4  # complete: nothing to run


def test_the_pareto_front_is_non_dominated_and_keeps_the_best_accuracy(tmp):
    run, trials = study(tmp, "pareto", strategy="bayes", rounds=4, objective="pareto", params="3+batch")
    front = read_csv(run.root / PARETO_FILE)
    ok = trials[trials["status"] == "ok"]
    assert len(front) >= 1 and set(front["trial_id"]) <= set(ok["trial_id"])
    assert non_dominated(front[["accuracy"]].assign(e=-front["idle_free_energy_j"]).to_numpy()).all()
    assert front["accuracy"].max() == ok["accuracy"].max()
    assert set(ok["batch_size"]) <= {16, 32, 64, 128, 256, 512, 1024}  # searched, as trained
    result = CliRunner().invoke(app, ["hpo", "--resume", str(run.root)])
    assert result.exit_code == 0 and "accuracy / energy front" in result.output


def test_mutate_trains_each_mutant_and_the_report_correlates_it_with_energy(tmp):
    config = MutateConfig.from_flat(
        {"mutate": "epochs", "steps": "2", "epochs": 1, "batch_size": 64, "repetitions": 2, "parallel": 1,
         "energy": "simulated", "idle_seconds": 0.1}
    )  # fmt: skip
    run = start_mutation(config, tmp / "mutate", say=lambda line: None)
    trials = pd.read_parquet(run.root / "trials.parquet")
    assert run.complete and len(trials) == 4 and set(trials["strategy"]) == {"mutate"}
    assert sorted(zip(trials["mutation"], trials["epochs_done"], strict=True)) == [
        ("base", 1), ("base", 1), ("epochs x2", 2), ("epochs x2", 2)
    ]  # fmt: skip
    report = build_report([run.root], tmp / "mutate-report")
    table = pd.read_csv(tmp / "mutate-report" / "tables" / "mutate_correlations.csv")
    assert table["hyperparameter"].tolist() == ["epochs"]
    assert table["serial: rho_energy"].iloc[0] > 0  # two epochs cost more than one
    assert any("mutate_changes" in str(p) for p in report.tables)
    assert resume_study(run.root, say=lambda line: None).recorded == 4


class Listed(ScriptedSearch):
    """Suggests {"accuracy": a} for each a given."""

    def __init__(self, accuracies):
        super().__init__([{"accuracy": a} for a in accuracies])


def report_accuracy(config: dict) -> None:
    tune.report({"accuracy": config["accuracy"] + 0.01 * config["__trial_index__"]})


def test_the_target_stops_a_users_own_tuner_on_the_round_that_reaches_it(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    target = TargetAccuracyStopper(0.79, repetitions=2)  # rounds of 2 repetitions
    rounds = ConcurrencyLimiter(RoundRepeater(Listed([0.5, 0.795, 0.9, 0.95]), repeat=2), max_concurrent=1)
    results = tune.Tuner(
        report_accuracy,
        tune_config=tune.TuneConfig(search_alg=rounds, num_samples=8, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), stop=target, callbacks=[target], verbose=0),
    ).fit()
    ran = sorted(round(r.metrics["accuracy"], 3) for r in results if r.metrics and "accuracy" in r.metrics)
    assert ran == [0.5, 0.51, 0.795, 0.805] and target.stop_all()  # round 1: mean 0.8
    assert target.book.best == (1, pytest.approx(0.8))
