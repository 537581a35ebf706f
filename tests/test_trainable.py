"""One trial of the study, outside Ray (the same function Tune runs under with_energy, here with a
list for `report` and a meter of its own): what each epoch reports, the training-only energy,
reproducible seeds, and failing on a NaN loss."""

import math
import time

import pytest

from greenray.config import TrialConfig
from greenray.energy import EnergyMeter
from greenray.tune.keys import REPETITION_KEY, ROUND_KEY, TrialFailed, trial_seed
from greenray.tune.trainable import run_trial

CONFIG = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, ROUND_KEY: 0, REPETITION_KEY: 0}
BUSY_W, IDLE_W = 250.0, 60.0  # the simulated backend's power at one CPU second per second, and idle


def trial(**changes) -> TrialConfig:
    return TrialConfig(**({"net": "dense-poly", "dataset": "digits", "epochs": 2} | changes))


def run(config: dict, settings: TrialConfig, energy: str = "simulated", reports: list | None = None) -> dict:
    with EnergyMeter.create(energy) as meter:
        return run_trial(config, settings, 0, (reports if reports is not None else []).append, meter)


def test_every_epoch_reports_accuracy_loss_and_its_own_training_energy():
    reports = []
    cpu_s = time.process_time()
    final = run(CONFIG, trial(), reports=reports)
    cpu_s = time.process_time() - cpu_s
    assert [r["epoch"] for r in reports] == [1, 2] and reports[-1] is final
    for report in reports:
        assert 0 <= report["accuracy"] <= 1 and report["loss"] > 0
        # the model: idle W over the epoch's seconds, and (BUSY_W - IDLE_W) per CPU second of its work
        idle_j = report["epoch_energy_j"] - report["epoch_idle_free_energy_j"]
        assert idle_j == pytest.approx(IDLE_W * report["epoch_seconds"], rel=1e-6)
        assert report["epoch_idle_free_energy_j"] > 0
    assert final["train_energy_j"] == pytest.approx(sum(r["epoch_energy_j"] for r in reports))
    assert final["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in reports))
    assert final["train_idle_free_energy_j"] == pytest.approx(
        sum(r["epoch_idle_free_energy_j"] for r in reports)
    )
    # the epochs' work is part of the run's CPU seconds (the rest: data, tests after each epoch)
    assert final["train_idle_free_energy_j"] <= (BUSY_W - IDLE_W) * cpu_s
    assert final["train_device"] == "cpu" and final["epochs_done"] == 2
    assert final["images_per_s"] == pytest.approx(1437 * 2 / final["train_seconds"])
    assert final["accuracy"] > 0.3  # ten classes: far above chance after two epochs


def test_the_same_round_and_repetition_train_the_same_and_another_repetition_does_not():
    first = run(CONFIG, trial(), "none")
    again = run(CONFIG, trial(), "none")
    other = run(CONFIG | {REPETITION_KEY: 1}, trial(), "none")
    assert (first["loss"], first["accuracy"]) == (again["loss"], again["accuracy"])
    assert first["loss"] != other["loss"]
    assert first["trial_seed"] == trial_seed(0, 0, 0) != other["trial_seed"]


def test_no_energy_source_reports_none_rather_than_a_number():
    final = run(CONFIG, trial(epochs=1), "none")
    assert final["epoch_energy_j"] is None and final["train_energy_j"] is None


def test_a_nan_loss_fails_the_trial_with_its_place():
    reports = []
    with pytest.raises(TrialFailed, match="loss became nan") as caught:
        run(CONFIG | {"lr": math.inf}, trial(), reports=reports)
    assert reports == []  # it failed in the first epoch
    assert caught.value.row["epochs_done"] == 0 and caught.value.row["train_device"] == "cpu"


def test_simple_cnn_trains_on_synthetic_images():
    settings = trial(net="cnn", dataset="synthetic", synthetic_shape="3x8x8", n_conv=1, n_linear=2, epochs=3)
    final = run(CONFIG, settings, "none")
    assert final["accuracy"] > 0.5  # five times chance: the synthetic classes are well apart
