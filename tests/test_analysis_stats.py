"""The report's statistics against values worked out by hand on small fixed data, and the
scipy tests they use cross-checked on a tiny case."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from greenray.analysis import architecture, hpo, inference
from greenray.analysis.load import ok_rows
from greenray.analysis.provenance import choose_energy


def test_eta_squared_cohens_f_and_magnitude_from_a_known_h():
    # (H - k + 1) / (n - k) = (10 - 3 + 1) / (23 - 3)
    assert architecture.eta_squared(10.0, 3, 23) == pytest.approx(0.4)
    assert architecture.cohens_f(0.4) == pytest.approx(math.sqrt(0.4 / 0.6))
    assert architecture.cohens_f(-0.02) == 0.0  # H below its expectation: no effect
    words = [architecture.magnitude(e) for e in (0.005, 0.01, 0.059, 0.06, 0.139, 0.14, 0.75)]
    assert words == ["negligible", "small", "small", "medium", "medium", "large", "large"]


def test_percent_increase():
    assert architecture.percent_increase(857.0, 1674.0) == pytest.approx(95.33, abs=0.01)
    assert architecture.percent_increase(200.0, 150.0) == pytest.approx(-25.0)


def _two_level_trials() -> pd.DataFrame:
    """Conv layers 1 -> energies 1, 2, 3 and accuracies .5, .6, .7; conv layers 4 -> 4, 5, 6 and .8, .9, 1."""
    return pd.DataFrame(
        {
            "dataset": "digits",
            "net": "cnn",
            "n_conv": [1, 1, 1, 4, 4, 4],
            "n_linear": 3,
            "relu": True,
            "accuracy": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            "idle_free_energy_j": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )


def test_kruskal_wallis_per_factor_by_hand_and_against_scipy():
    effects = architecture.factor_effects(_two_level_trials(), "idle_free_energy_j", ["dataset", "net"])
    assert len(effects) == 1  # only the conv layers vary
    row = effects.iloc[0]
    # No ties: H = 12 / (n (n + 1)) * sum(R_i^2 / n_i) - 3 (n + 1) = 12/42 * (6^2/3 + 15^2/3) - 21 = 27/7
    assert row["H"] == pytest.approx(27 / 7)
    assert row["H"] == pytest.approx(stats.kruskal([1, 2, 3], [4, 5, 6]).statistic)
    assert row["p"] == pytest.approx(stats.kruskal([1, 2, 3], [4, 5, 6]).pvalue)
    assert (row["k"], row["n"]) == (2, 6)
    assert row["eta2"] == pytest.approx((27 / 7 - 1) / 4)  # 5/7
    assert row["cohens_f"] == pytest.approx(math.sqrt((5 / 7) / (2 / 7)))
    assert row["magnitude"] == "large"
    assert (row["low"], row["high"]) == ("1", "4")
    assert row["increase_pct"] == pytest.approx(150.0)  # mean 2 -> mean 5


def test_coefficient_of_variation_and_shapiro_per_configuration():
    trials = pd.DataFrame(
        {
            "dataset": "digits",
            "net": "cnn",
            "n_conv": [1, 1, 1, 4, 4, 4, 4],
            "accuracy": 0.5,
            "e": [90.0, 100.0, 110.0, 10.0, 10.0, 12.0, 20.0],
        }
    )
    table = architecture.configurations(trials, "e", ["dataset", "net"]).set_index("n_conv")
    assert table.loc[1, "mean_energy_j"] == pytest.approx(100.0)
    assert table.loc[1, "std_energy_j"] == pytest.approx(10.0)  # sample standard deviation
    assert table.loc[1, "cv"] == pytest.approx(0.1)
    assert table.loc[4, "cv"] == pytest.approx(np.std([10, 10, 12, 20], ddof=1) / 13.0)
    expected = stats.shapiro([10.0, 10.0, 12.0, 20.0])
    assert table.loc[4, "shapiro_w"] == pytest.approx(expected.statistic)
    assert table.loc[4, "shapiro_p"] == pytest.approx(expected.pvalue)


def test_energy_clusters_e_minus_and_e_plus():
    table = architecture.clusters(_two_level_trials(), "idle_free_energy_j", ["dataset"]).set_index("cluster")
    assert table.loc["E-", "n_conv"] == 1 and table.loc["E+", "n_conv"] == 4
    assert table.loc["E-", "mean_energy_j"] == pytest.approx(2.0)
    assert table.loc["E+", "mean_energy_j"] == pytest.approx(5.0)
    assert table.loc["E-", "mean_accuracy"] == pytest.approx(0.6)
    assert table.loc["E+", "max_accuracy"] == pytest.approx(1.0)
    assert table.loc["E-", "std_accuracy"] == pytest.approx(0.1)
    assert table.loc["E+", "runs"] == 3


def test_a_factor_with_identical_values_gives_no_test_rather_than_an_error():
    trials = _two_level_trials().assign(idle_free_energy_j=7.0)
    row = architecture.factor_effects(trials, "idle_free_energy_j", []).iloc[0]
    assert math.isnan(row["H"]) and math.isnan(row["eta2"]) and row["magnitude"] == ""


def _search_trials() -> pd.DataFrame:
    """Two strategies, three rounds of two repetitions; energy 10 (r + 1) + repetition."""
    accuracies = {
        "random": [[0.5, 0.7], [0.8, 0.6], [0.65, 0.65]],  # round means .6 .7 .65
        "bayes": [[0.6, 0.6], [0.7, 0.9], [0.95, 0.85]],  # round means .6 .8 .9
    }
    rows = [
        {
            "dataset": "digits",
            "net": "cnn",
            "params": 3,
            "strategy": strategy,
            "round": r,
            "repetition": rep,
            "accuracy": acc,
            "status": "ok",
            "idle_free_energy_j": 10.0 * (r + 1) + rep,
        }
        for strategy, per_round in accuracies.items()
        for r, pair in enumerate(per_round)
        for rep, acc in enumerate(pair)
    ]
    # A failed trial with a tempting accuracy: counted elsewhere, never in the statistics.
    rows.append(rows[0] | {"status": "failed", "accuracy": 0.99, "repetition": 2, "idle_free_energy_j": 1e6})
    return pd.DataFrame(rows)


def test_best_by_round_curves_are_best_so_far_of_round_means():
    stats_ = hpo.search_stats(ok_rows(_search_trials()), "idle_free_energy_j")
    curves = stats_.curves.set_index(["strategy", "round"])
    assert list(curves.loc["random", "round_accuracy"]) == pytest.approx([0.6, 0.7, 0.65])
    assert list(curves.loc["random", "best_so_far"]) == pytest.approx([0.6, 0.7, 0.7])
    assert list(curves.loc["bayes", "best_so_far"]) == pytest.approx([0.6, 0.8, 0.9])
    assert list(curves.loc["random", "energy_so_far_j"]) == pytest.approx([21.0, 62.0, 123.0])


def test_best_accuracy_its_round_and_the_energy_until_it():
    best = hpo.search_stats(ok_rows(_search_trials()), "idle_free_energy_j").best.set_index("strategy")
    assert best.loc["random", "best_accuracy"] == pytest.approx(0.7)
    assert best.loc["random", "best_round"] == 1
    assert best.loc["random", "energy_until_best_j"] == pytest.approx(21.0 + 41.0)
    assert best.loc["random", "best_run_accuracy"] == pytest.approx(0.8)
    assert best.loc["bayes", "best_round"] == 2
    assert best.loc["bayes", "energy_until_best_j"] == pytest.approx(123.0)
    assert best.loc["bayes", "energy_total_j"] == pytest.approx(123.0)
    assert best.loc["bayes", "runs"] == 6


def test_energy_until_a_target_accuracy():
    fixed = hpo.search_stats(ok_rows(_search_trials()), "idle_free_energy_j", target=0.75).best.set_index(
        "strategy"
    )
    assert fixed.loc["bayes", "target_round"] == 1
    assert fixed.loc["bayes", "energy_until_target_j"] == pytest.approx(62.0)
    assert pd.isna(fixed.loc["random", "target_round"])  # never reached 0.75
    assert math.isnan(fixed.loc["random", "energy_until_target_j"])
    # Without a target: 0.95 x the best any strategy reached (0.9) = 0.855, which only bayes reaches.
    relative = hpo.search_stats(ok_rows(_search_trials()), "idle_free_energy_j").best.set_index("strategy")
    assert relative.loc["random", "target_accuracy"] == pytest.approx(0.855)
    assert relative.loc["bayes", "target_round"] == 2
    summary = hpo.search_stats(ok_rows(_search_trials()), "idle_free_energy_j").summary.set_index("strategy")
    assert summary.loc["bayes", "reached_target"] == 1 and summary.loc["random", "reached_target"] == 0


def test_a_failed_trials_energy_counts_as_spent_but_its_accuracy_does_not():
    trials = _search_trials()
    stats_ = hpo.search_stats(ok_rows(trials), "idle_free_energy_j", spent=trials)
    best = stats_.best.set_index("strategy")
    assert best.loc["random", "best_accuracy"] == pytest.approx(0.7)  # not the failed 0.99
    assert best.loc["random", "energy_until_best_j"] == pytest.approx(21.0 + 1e6 + 41.0)
    # a round in which every repetition failed keeps its energy and has no accuracy
    lost = trials.iloc[[0]].assign(round=3, repetition=0, status="failed", idle_free_energy_j=5.0)
    trials = pd.concat([trials, lost], ignore_index=True)
    curves = hpo.search_stats(ok_rows(trials), "idle_free_energy_j", spent=trials).curves
    last = curves.set_index(["strategy", "round"]).loc[("random", 3)]
    assert math.isnan(last["round_accuracy"]) and last["best_so_far"] == pytest.approx(0.7)
    assert last["energy_so_far_j"] == pytest.approx(21.0 + 1e6 + 41.0 + 61.0 + 5.0)


def test_a_round_without_energy_leaves_the_running_total_unknown():
    trials = ok_rows(_search_trials())
    trials.loc[(trials["strategy"] == "random") & (trials["round"] == 1), "idle_free_energy_j"] = np.nan
    curves = hpo.search_stats(trials, "idle_free_energy_j").curves.set_index(["strategy", "round"])
    assert curves.loc[("random", 0), "energy_so_far_j"] == pytest.approx(21.0)
    assert curves.loc["random", "energy_so_far_j"].iloc[1:].isna().all()


def test_training_energy_falls_back_to_total_energy_and_says_why():
    frame = pd.DataFrame({"idle_free_energy_j": [np.nan], "energy_j": [5.0], "energy_source": ["simulated"]})
    chosen = choose_energy(frame, "idle_free_energy_j", "energy_j", "no idle baseline was stored")
    assert chosen.column == "energy_j" and chosen.simulated
    assert "SIMULATED" in chosen.caption() and "no idle baseline" in chosen.caption()
    none = choose_energy(
        frame.assign(energy_j=np.nan, energy_source="none"), "idle_free_energy_j", "energy_j", ""
    )
    assert none.column is None and "not measured" in none.caption()


def test_timeline_is_in_publication_order_with_the_change_against_the_first_model():
    runs = pd.DataFrame(
        {
            "model": ["convnext_base", "alexnet", "alexnet", "shufflenet_v2_x0_5"],
            "energy_per_image_j": [2.31, 0.8, 1.2, 1.5],
        }
    )
    table = inference.timeline(runs, "energy_per_image_j")
    assert list(table["model"]) == ["alexnet", "shufflenet_v2_x0_5", "convnext_base"]
    assert list(table["year"]) == [2012, 2018, 2022]
    assert table.loc[0, "mean_energy_per_image_j"] == pytest.approx(1.0)
    assert table.loc[0, "min_energy_per_image_j"] == pytest.approx(0.8)
    assert table.loc[2, "change_vs_first_pct"] == pytest.approx(131.0)


def test_peak_power_of_small_against_large_batches():
    runs = pd.DataFrame({"folder": "f", "run_id": ["a", "b"], "model": ["alexnet", "alexnet"]})
    batches = pd.DataFrame(
        {
            "folder": "f",
            "run_id": ["a", "a", "a", "b", "b"],
            "batch_size": [1, 2, 16, 128, 128],
            "peak_power_w": [60.0, 70.0, 75.0, 80.0, 90.0],
        }
    )
    table, basis = inference.peak_power(runs, batches)
    assert basis == "per batch"
    row = table.iloc[0]
    assert row["small_batches"] == 2 and row["small_median_peak_w"] == pytest.approx(65.0)
    assert row["large_batch_size"] == 128 and row["large_median_peak_w"] == pytest.approx(85.0)
    assert row["large_max_peak_w"] == pytest.approx(90.0)


def test_the_best_table_in_the_study_layout():
    trials = ok_rows(_search_trials())
    both = pd.concat([trials, trials.assign(dataset="cifar10", params=5, accuracy=trials["accuracy"] / 2)])
    found = hpo.search_stats(both, "idle_free_energy_j")
    layout = hpo.study_layout(found.best, found.keys).set_index(["net", "strategy"])
    assert list(layout.columns) == ["cifar10 params=5", "digits params=3"]
    assert layout.loc[("cnn", "random"), "digits params=3"] == "0.7000 (r1)"
    assert layout.loc[("cnn", "bayes"), "cifar10 params=5"] == "0.4500 (r2)"


def test_trials_that_shared_a_gpu_are_not_summed_and_a_sentence_says_why():
    trials = ok_rows(_search_trials()).assign(gpu_sharers_max=1)
    # random's round 1: two trials at once on one GPU, each measured the whole GPU
    trials.loc[(trials["strategy"] == "random") & (trials["round"] == 1), "gpu_sharers_max"] = 2
    found = hpo.search_stats(trials, "idle_free_energy_j")
    curves = found.curves.set_index(["strategy", "round"])
    assert curves.loc[("random", 0), "energy_so_far_j"] == pytest.approx(21.0)
    assert curves.loc["random", "energy_so_far_j"].iloc[1:].isna().all()
    assert list(curves.loc["bayes", "energy_so_far_j"]) == pytest.approx([21.0, 62.0, 123.0])
    assert math.isnan(found.best.set_index("strategy").loc["random", "energy_until_best_j"])
    note = hpo.shared_gpu_note(trials)
    assert "2 trial(s) that shared a GPU" in note and "up to 2 times" in note
    assert hpo.shared_gpu_note(trials.assign(gpu_sharers_max=1)) is None
    mig = trials.assign(gpu_sharers_max=1, device_shared=[True] + [False] * (len(trials) - 1))
    assert "1 trial(s)" in hpo.shared_gpu_note(mig)


def test_captions_name_the_power_field_and_never_call_an_average_a_peak():
    from greenray.analysis.provenance import Provenance, fields_of

    rows = pd.DataFrame(
        {"peak_power_field": ["average", None], "power_field": ["average", "average,instant"]}
    )
    assert fields_of(rows, "peak_power_field") == ("average",)
    assert fields_of(rows) == ("average", "instant")
    average = Provenance("peak_power_w", ("nvml-power",), quantity="power", fields=("average",))
    assert "power_field: average" in average.caption()
    assert "highest 1 s average power, not a peak" in average.caption()
    assert "(average field)" in average.title()
    instant = Provenance("peak_power_w", ("nvml-counter",), quantity="power", fields=("instant",))
    assert "power_field: instant" in instant.caption() and "not a peak" not in instant.caption()
    sampled = Provenance("energy_j", ("nvml-power",), fields=("average",))
    assert "power_field: average" in sampled.caption() and "estimates" in sampled.caption()
    counted = Provenance("energy_j", ("nvml-counter",), fields=("instant",))
    assert "power_field" not in counted.caption()  # the counter's Joules are no field's
