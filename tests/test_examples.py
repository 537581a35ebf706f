"""The examples a Ray user would start from, run as they are (in-process, on the session's
local Ray) with the simulated backend: their trainable and deployment are not greenray's."""

import importlib.util
import sys
from pathlib import Path

import pytest
from ray import cloudpickle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import examples/
    return module


def test_a_user_trainable_searched_by_optuna_over_accuracy_and_energy(ray_local, tmp_path):
    best = example("tune_with_energy").main(
        ["--energy", "simulated", "--trials", "6", "--epochs", "2", "--storage", str(tmp_path)]
    )
    assert best and all(p["energy_source"] == "simulated" for p in best)
    energies = [p["energy_j"] for p in best]
    accuracies = [p["accuracy"] for p in best]
    assert energies == sorted(energies) and accuracies == sorted(accuracies)  # a front: more J, more accuracy
    assert max(accuracies) > 0.5  # eight classes: well above chance


def test_a_user_deployment_measured_batch_by_batch(ray_local):
    from ray import serve

    report = example("serve_measure_batches").main(
        ["--energy", "simulated", "--requests", "48", "--image-size", "32"]
    )
    serve.shutdown()
    assert report.items == 48 and report.batch_count == len(report.batches) >= 3
    assert report.energy_source == "simulated" and report.energy_j > 0
    assert report.joules_per_item == pytest.approx(report.energy_j / 48)
