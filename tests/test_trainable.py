"""One trial, outside Ray (the same function Tune runs, with a list for `report`): what each epoch
reports, simulated energy labelled as such, reproducible seeds, and failing on a NaN loss."""

import math
import socket

import pytest

from greenray.data import SyntheticSpec
from greenray.results import ENERGY_COLUMNS
from greenray.tune.settings import TrialSettings
from greenray.tune.trainable import REPETITION_KEY, ROUND_KEY, TrialFailed, run_trial, trial_seed

CONFIG = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, ROUND_KEY: 0, REPETITION_KEY: 0}
IDLE_W = 60.0  # the simulated backend's idle power, adopted as the baseline


def settings(**changes) -> TrialSettings:
    values = {
        "net": "dense-poly",
        "dataset": "digits",
        "epochs": 2,
        "energy": "simulated",
        "baseline": {socket.gethostname(): {"SIM-0": IDLE_W}},
    }
    return TrialSettings(**(values | changes))


def test_every_epoch_reports_accuracy_loss_time_and_simulated_energy():
    reports = []
    final = run_trial(CONFIG, settings(), reports.append)
    assert [r["epoch"] for r in reports] == [1, 2] and reports[-1] is final
    for report in reports:
        assert 0 <= report["accuracy"] <= 1 and report["loss"] > 0
        assert report["epoch_seconds"] > 0 and report["epoch_energy_j"] > 0
        assert report["energy_source"] == "simulated" and report["device"] == "sim:0"
    assert set(ENERGY_COLUMNS) <= set(final)
    assert final["energy_source"] == "simulated" and final["device_uuid"] == "SIM-0"
    assert final["energy_j"] > 0
    # idle-free energy is the total less the idle baseline over the trial window
    assert final["idle_free_energy_j"] == pytest.approx(final["energy_j"] - IDLE_W * final["seconds"])
    assert final["train_energy_j"] == pytest.approx(sum(r["epoch_energy_j"] for r in reports))
    assert final["train_device"] == "cpu" and final["epochs_done"] == 2
    assert final["accuracy"] > 0.3  # ten classes: far above chance after two epochs


def test_the_same_round_and_repetition_train_the_same_and_another_repetition_does_not():
    first = run_trial(CONFIG, settings(energy="none"), lambda r: None)
    again = run_trial(CONFIG, settings(energy="none"), lambda r: None)
    other = run_trial(CONFIG | {REPETITION_KEY: 1}, settings(energy="none"), lambda r: None)
    assert (first["loss"], first["accuracy"]) == (again["loss"], again["accuracy"])
    assert first["loss"] != other["loss"]
    assert first["trial_seed"] == trial_seed(0, 0, 0) != other["trial_seed"]


def test_no_energy_source_reports_none_rather_than_a_number():
    final = run_trial(CONFIG, settings(energy="none", epochs=1), lambda r: None)
    assert final["energy_source"] == "none" and final["energy_j"] is None


def test_a_nan_loss_fails_the_trial_with_what_it_measured():
    reports = []
    with pytest.raises(TrialFailed, match="loss became nan") as caught:
        run_trial(CONFIG | {"lr": math.inf}, settings(), reports.append)
    assert reports == []  # it failed in the first epoch
    assert caught.value.row["energy_source"] == "simulated" and caught.value.row["energy_j"] > 0


def test_simple_cnn_trains_on_synthetic_images():
    images = SyntheticSpec(shape=(3, 8, 8), train=2000, test=500)
    final = run_trial(
        CONFIG,
        settings(net="cnn", dataset="synthetic", synthetic=images, n_conv=1, n_linear=2, epochs=3),
        lambda r: None,
    )
    assert final["accuracy"] > 0.5  # five times chance: the synthetic classes are well apart
