"""A with_energy trial's keys reach Tune's logger callbacks as metrics: Ray Tune's own
MLflowLoggerCallback, into MLflow's local file store (no server), records energy_j at every
report, growing, and the other numeric energy keys beside the trainable's own. (W&B's
WandbLoggerCallback takes the same results the same way: README, "MLflow and W&B".)"""

import sys
import time

import pytest
from ray import cloudpickle, tune

from greenray.tune import with_energy

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/


def three_epochs(config):
    for epoch in range(3):
        time.sleep(0.3)
        tune.report({"epoch": epoch, "accuracy": 0.5 + 0.1 * epoch})


def test_energy_keys_reach_mlflow_as_metrics_at_every_report(ray_local, tmp_path, monkeypatch):
    # MLflow 3 keeps the file store (no database, no server) behind this switch; the callback
    # runs in this process, the driver
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = (tmp_path / "mlruns").as_uri()
    tuner = tune.Tuner(
        tune.with_resources(
            with_energy(three_epochs, energy="simulated", carbon_intensity=300.0), {"cpu": 1}
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            verbose=0,
            callbacks=[
                MLflowLoggerCallback(tracking_uri=uri, experiment_name="greenray", save_artifact=False)
            ],
        ),
    )
    assert not tuner.fit().errors
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("greenray")
    (run,) = client.search_runs([experiment.experiment_id])
    for key in ("energy_j", "avg_power_w", "peak_power_w", "seconds", "co2e_g", "accuracy"):
        assert key in run.data.metrics, key
    history = sorted(client.get_metric_history(run.info.run_id, "energy_j"), key=lambda m: m.step)
    joules = [m.value for m in history]
    assert len(joules) == 3 and joules == sorted(joules) and joules[0] > 0
    assert run.data.metrics["co2e_g"] == pytest.approx(run.data.metrics["energy_j"] / 3.6e6 * 300.0)
