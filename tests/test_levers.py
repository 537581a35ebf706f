"""The green levers without Ray running: rounds and when a lever stops (the rule the stoppers
and a resumed study share), round means under early stopping and several metrics, ParEGO's
scalarisation and the front, the searchable batch size and epochs, greenray mutate's
configurations, and bad lever flags as one sentence with exit code 2."""

import numpy as np
import pandas as pd
import pytest
from helpers import Counting
from typer.testing import CliRunner

from greenray.cli import app
from greenray.config import MutateConfig, StudyConfig
from greenray.tune.ledger import BUDGET, PATIENCE, TARGET, RoundBook, ran_to_end, stop_reached
from greenray.tune.objectives import front, hypervolume, non_dominated
from greenray.tune.rounds import RoundRepeater
from greenray.tune.searchers import PIBayesSearch
from greenray.tune.space import search_space, trained_with
from greenray.tune.study import study_stop


def rows(accuracies: list[list[float | None]], joules: float = 10.0) -> list[dict]:
    """Trial rows of rounds in order, one list of repetition accuracies per round (None: failed)."""
    found, t = [], 0.0
    for r, values in enumerate(accuracies):
        for k, accuracy in enumerate(values):
            t += 1
            status = "ok" if accuracy is not None else "failed"
            found.append({"round": r, "repetition": k, "accuracy": accuracy, "status": status,
                          "energy_j": joules, "finished_at": t})  # fmt: skip
    return found


def test_patience_stops_after_exactly_r_rounds_without_a_better_round():
    history = [[0.5, 0.6], [0.7, 0.7], [0.6, 0.7], [None, None], [0.69, 0.7], [0.9, 0.9]]
    stop = stop_reached(rows(history), repetitions=2, patience=3)
    assert (stop.lever, stop.round) == (PATIENCE, 4)  # round 1 (0.70) was not beaten by 2, 3, 4
    assert stop_reached(rows(history), repetitions=2, patience=4) is None  # round 5 improved first


def test_target_stops_on_the_round_whose_mean_reaches_it():
    history = [[0.5, 0.9], [0.8, 0.8], [0.95, 0.95]]  # round 0 has one trial at 0.9, mean 0.7
    stop = stop_reached(rows(history), repetitions=2, target_accuracy=0.8)
    assert (stop.lever, stop.round) == (TARGET, 1)


def test_the_budget_counts_every_row_failed_ones_too():
    history = [[0.5, None], [0.6, 0.6]]
    assert stop_reached(rows(history, joules=10.0), repetitions=2, energy_budget=40.0).lever == BUDGET
    assert stop_reached(rows(history, joules=10.0), repetitions=2, energy_budget=40.1) is None
    # Rows are replayed in the order trials ended, not in table order.
    shuffled = list(reversed(rows([[0.9], [0.1], [0.1]])))
    assert stop_reached(shuffled, repetitions=1, patience=2).round == 2


def test_a_study_is_stopped_by_its_budget_when_trials_were_cut_short_even_with_a_row_each():
    flat = {"strategy": "random", "rounds": 4, "repetitions": 1, "energy_budget": 30.0}
    config = StudyConfig.from_flat(flat)
    ran = pd.DataFrame(rows([[0.5], [0.6], [0.7], [0.8]], joules=10.0))
    assert study_stop(config, ran, {}) is None  # the last trial's own end reached it: nothing was stopped
    cut = ran.assign(status=["ok", "ok", "ok", "stopped"])  # running when the budget was reached
    assert study_stop(config, cut, {}).lever == BUDGET
    assert study_stop(config, ran.iloc[:3], {}).lever == BUDGET  # a trial never started


def test_a_round_of_only_stopped_or_failed_repetitions_has_no_value():
    book = RoundBook(repetitions=2)
    assert book.end_trial(0, None) is None
    assert book.end_trial(0, float("nan")) == (0, None)
    assert book.best is None and book.rounds_since_best == 1
    assert book.end_trial(1, 0.4) is None and book.end_trial(1, 0.6) == (1, pytest.approx(0.5))


def test_an_early_stopped_trial_did_not_run_to_the_end():
    assert ran_to_end({"epochs_done": 3, "epochs": 3}) and not ran_to_end({"epochs_done": 1, "epochs": 3})
    assert ran_to_end({"accuracy": 0.5}) and not ran_to_end(None)  # a trainable that reports no epochs


def test_round_means_leave_out_early_stopped_repetitions_and_average_every_metric():
    inner = Counting()
    inner._metric, inner._mode = ["accuracy", "energy_j"], ["max", "min"]
    repeater = RoundRepeater(inner, repeat=3)
    for trial in "abc":
        repeater.suggest(trial)
    repeater.on_trial_complete("a", {"accuracy": 0.8, "energy_j": 100.0, "epochs_done": 2, "epochs": 2})
    repeater.on_trial_complete("b", {"accuracy": 0.2, "energy_j": 10.0, "epochs_done": 1, "epochs": 2})
    repeater.on_trial_complete("c", {"accuracy": 0.6, "energy_j": 200.0, "epochs_done": 2, "epochs": 2})
    assert inner.told == [("a", {"accuracy": pytest.approx(0.7), "energy_j": pytest.approx(150.0)}, False)]
    for trial in "def":
        repeater.suggest(trial)
    for trial in "def":  # every repetition stopped early: an error, never a made-up value
        repeater.on_trial_complete(trial, {"accuracy": 0.1, "energy_j": 5.0, "epochs_done": 1, "epochs": 2})
    assert inner.told[-1] == ("d", None, True)


def test_with_partial_a_round_stopped_early_is_heard_with_its_last_epochs():
    inner = Counting()
    repeater = RoundRepeater(inner, repeat=2, partial=True)
    for trial in "ab":
        repeater.suggest(trial)
    repeater.on_trial_complete("a", {"accuracy": 0.2, "epochs_done": 1, "epochs": 3})
    repeater.on_trial_complete("b", {"accuracy": 0.4, "epochs_done": 3, "epochs": 3})
    assert inner.told == [("a", {"accuracy": pytest.approx(0.4)}, False)]  # one ran to the end: only it
    for trial in "cd":
        repeater.suggest(trial)
    repeater.on_trial_complete("c", {"accuracy": 0.2, "epochs_done": 1, "epochs": 3})
    repeater.on_trial_complete("d", None, error=True)
    assert inner.told[-1] == ("c", {"accuracy": pytest.approx(0.2)}, False)  # a lower bound


def test_the_front_of_accuracy_and_energy_leaves_the_dominated_point_out():
    # (accuracy, -energy): three points on the front and one dominated.
    gains = np.array([[0.9, -100.0], [0.8, -20.0], [0.5, -5.0], [0.6, -50.0]])
    assert non_dominated(gains).tolist() == [True, True, True, False]


def test_the_front_keeps_the_best_accuracy_and_the_hypervolume_grows_with_it():
    trials = pd.DataFrame(
        {"accuracy": [0.9, 0.9, 0.8, 0.5, 0.6], "energy_j": [100.0, 120.0, 20.0, 5.0, 50.0]}
    )
    on = front(trials, "energy_j")
    assert on.index.tolist() == [3, 2, 0]  # by energy; (0.9, 120 J) and (0.6, 50 J) are dominated
    points = list(zip(on["accuracy"], on["energy_j"], strict=True))
    area = hypervolume(points, (0.0, 200.0))
    assert area == pytest.approx(0.9 * (200 - 100) + 0.8 * (100 - 20) + 0.5 * (20 - 5))
    assert hypervolume([*points, (0.95, 150.0)], (0.0, 200.0)) > area


def test_pi_bayes_searches_two_metrics_by_hypervolume_and_resumes():
    space = search_space("3+batch", max_epochs=4)
    searcher = PIBayesSearch(space, metric=["accuracy", "energy_j"], mode=["max", "min"], seed=0, n_initial=3)
    assert searcher.multi_objective
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        accuracy = 1 - abs(np.log10(config["lr"]) + 3) / 4
        searcher.on_trial_complete(f"t{i}", {"accuracy": accuracy, "energy_j": 1e4 / config["batch_size"]})
    assert searcher.n_observations == 6
    state = searcher.get_state()
    again = PIBayesSearch(space, metric=["accuracy", "energy_j"], mode=["max", "min"], seed=0, n_initial=3)
    again.set_state(state)
    assert set(again.suggest("t6")) == set(space) and again.n_observations == 6
    with pytest.raises(ValueError, match="one mode per metric"):
        PIBayesSearch(space, seed=0).suggest("x")


def test_batch_size_and_epochs_are_searchable_and_the_study_spaces_unchanged():
    assert set(search_space(3)) == {"lr", "beta1", "beta2"} and len(search_space(5)) == 5
    assert list(search_space("5+batch+epochs", max_epochs=10))[-2:] == ["batch_size", "epochs"]
    assert trained_with({"batch_size": 181.0, "epochs": 4.4, "lr": 0.1}) == {
        "batch_size": 128,
        "epochs": 4,
        "lr": 0.1,
    }
    assert trained_with({"batch_size": 100, "epochs": 3}) == {"batch_size": 100, "epochs": 3}  # mutate's
    config = StudyConfig.from_flat({"params": "3+epochs+batch"})
    assert config.search.params == "3+batch+epochs" and config.adam_params == 3
    assert config.hyperparameters == ("lr", "beta1", "beta2", "batch_size", "epochs")
    assert StudyConfig.from_flat({"params": "5"}).search.params == 5  # the study's stay numbers
    assert StudyConfig().row_fields()["params"] == 3


def test_mutate_changes_one_value_at_a_time():
    config = MutateConfig.from_flat({"mutate": "lr,epochs", "steps": "0.5,2", "epochs": 1, "batch_size": 64})
    configs = config.configurations()
    base = configs[0]
    assert base["__mutation__"] == "base" and (base["lr"], base["epochs"], base["batch_size"]) == (
        1e-3,
        1,
        64,
    )
    names = [c["__mutation__"] for c in configs]
    assert names == ["base", "lr x0.5", "lr x2", "epochs x2"]  # 1 epoch x 0.5 is the base: left out
    for mutant in configs[1:]:
        changed = {k for k in ("lr", "epochs", "batch_size") if mutant[k] != base[k]}
        assert changed == {mutant["__mutated__"]}
    study = config.study(gpus=True)
    assert study.search.rounds == len(configs) and study.resources.gpus_per_trial == 1.0
    assert config.replace(parallel=4).study(gpus=True).resources.max_concurrent == 4
    assert config.replace(parallel=4).study(gpus=True).resources.gpus_per_trial == 0.25


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--energy-budget", "0"], "--energy-budget 0.0 is not a positive number of Joules"),
        (
            ["--energy-budget", "500", "--energy", "none"],
            "--energy-budget counts energy, which --energy none",
        ),
        (["--objective", "pareto", "--energy", "none"], "--objective pareto counts energy"),
        (["--patience", "0"], "--patience 0 is not a whole number of at least 1"),
        (["--target-accuracy", "2"], "--target-accuracy 2.0 is not an accuracy in (0, 1]"),
        (["--scheduler", "hyperband"], "--scheduler 'hyperband' is not one of fifo, asha, median"),
        (["--params", "3+dropout"], "--params '3+dropout' is not one of 3, 5 (optionally with +batch"),
        (["--params", "3+epochs", "--epochs", "1"], "searches 1 to --epochs epochs"),
    ],
)
def test_bad_lever_flags_end_in_one_sentence_and_exit_2(args, phrase):
    result = CliRunner().invoke(app, ["hpo", "--energy", "simulated", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and phrase in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_bad_mutate_flags_end_in_one_sentence_and_exit_2():
    for args, phrase in (
        (["--mutate", "dropout"], "--mutate 'dropout' is not one of epochs, lr, batch_size"),
        (["--steps", "1"], "--steps '1' is not a positive factor other than 1"),
    ):
        result = CliRunner().invoke(app, ["mutate", *args])
        assert result.exit_code == 2 and phrase in result.output and result.output.count("\n") == 1
