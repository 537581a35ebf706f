"""RoundRepeater, without Ray running: rounds numbered, the searcher told once per round with the
mean of its finished repetitions (an error when none finished), and sequential rounds for bayes."""

import math

from helpers import Counting

from greenray.tune.keys import REPETITION_KEY, ROUND_KEY
from greenray.tune.rounds import RoundRepeater


def test_each_trial_knows_its_round_and_repetition():
    repeater = RoundRepeater(Counting(), repeat=3)
    configs = [repeater.suggest(f"t{i}") for i in range(6)]
    assert [(c[ROUND_KEY], c[REPETITION_KEY]) for c in configs] == [
        (r, k) for r in range(2) for k in range(3)
    ]
    assert configs[0]["lr"] == configs[2]["lr"] != configs[3]["lr"]


def test_the_searcher_hears_the_mean_of_the_finished_repetitions_once():
    inner = Counting()
    repeater = RoundRepeater(inner, repeat=3)
    for i in range(3):
        repeater.suggest(f"t{i}")
    repeater.on_trial_complete("t0", {"accuracy": 0.5})
    repeater.on_trial_complete("t1", None, error=True)  # a failed repetition does not count
    assert inner.told == []
    repeater.on_trial_complete("t2", {"accuracy": 0.7})
    assert inner.told == [("t0", {"accuracy": 0.6}, False)]


def test_a_round_whose_repetitions_all_failed_is_an_error_not_a_nan():
    inner = Counting()
    repeater = RoundRepeater(inner, repeat=2)
    repeater.suggest("a")
    repeater.suggest("b")
    repeater.on_trial_complete("a", {"accuracy": math.nan})
    repeater.on_trial_complete("b", None, error=True)
    assert inner.told == [("a", None, True)]


def test_sequential_rounds_wait_for_the_round_before():
    inner = Counting()
    repeater = RoundRepeater(inner, repeat=2, sequential=True)
    repeater.suggest("a")
    repeater.suggest("b")
    assert repeater.suggest("c") is None and inner.suggested == 1  # round 0 still running
    repeater.on_trial_complete("a", {"accuracy": 0.4})
    assert repeater.suggest("c") is None
    repeater.on_trial_complete("b", {"accuracy": 0.6})
    assert repeater.suggest("c")[ROUND_KEY] == 1 and inner.suggested == 2
    free = RoundRepeater(Counting(), repeat=2)
    assert [free.suggest(t)[ROUND_KEY] for t in "abc"] == [0, 0, 1]  # random and grid need not wait
