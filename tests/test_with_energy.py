"""`greenray.tune.with_energy` on trainables greenray did not write, in a real Tuner on the
session's local Ray, with the simulated backend (60 W idle, and 190 W more per CPU second of the
trial's process while it runs): the energy
keys on every result, growing within a trial, equal to the trial's own span, measured apart for
concurrent trials; checkpoints, returned results and greenray's searchers on the energy keys."""

import sys
import time
from pathlib import Path

import pytest
from ray import cloudpickle, tune

from greenray.energy import add_work
from greenray.tune import ENERGY_KEYS, PIBayesSearch, RandomSearch, trial_meter, with_energy

IDLE_W, WORK_W = 60.0, 190.0  # the simulated model: idle, and the power of one CPU second per second
GRID = 450.0  # gCO2e/kWh
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/


def spin(cpu_s: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < cpu_s:
        pass


def timed_trainable(config):
    """Works (on the CPU) config["seconds"] in three reports, saying when it started and ended
    and its process's CPU seconds; the two trials first wait for each other (a file each in
    `meet`), so they surely overlap."""
    started = time.time()
    t0 = time.monotonic()
    meet = Path(config["meet"])
    (meet / str(config["seconds"])).touch()
    while len(list(meet.iterdir())) < 2 and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    for step in range(3):
        spin(config["seconds"] / 3)
        where = trial_meter().sampling
        tune.report(
            {"step": step, "elapsed_s": time.monotonic() - t0, "started": started, "ended": time.time()}
            | {"sampling": where, "cpu_s": time.process_time()}
        )


@pytest.fixture(scope="module")
def two_trials(ray_local, tmp_path_factory):
    tuner = tune.Tuner(
        tune.with_resources(
            with_energy(timed_trainable, energy="simulated", carbon_intensity=GRID), {"cpu": 1}
        ),
        param_space={"seconds": tune.grid_search([0.6, 1.5]), "meet": str(tmp_path_factory.mktemp("meet"))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path_factory.mktemp("tune")), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    return sorted((r for r in grid), key=lambda r: r.config["seconds"])


def test_every_result_carries_the_energy_keys_and_energy_grows(two_trials):
    for result in two_trials:
        history = result.metrics_dataframe
        assert set(ENERGY_KEYS) <= set(history.columns)
        assert (history["energy_source"] == "simulated").all() and (history["device"] == "sim:0").all()
        assert history["energy_j"].is_monotonic_increasing and history["energy_j"].iloc[0] > 0
        assert history["seconds"].is_monotonic_increasing
        # grams of CO2e: every report's kWh times the grid intensity given
        assert history["co2e_g"].to_numpy() == pytest.approx(history["energy_j"].to_numpy() / 3.6e6 * GRID)
        # avg_power_w is the power since the previous report: idle, and the CPU work between them
        seconds, cpu_s = history["seconds"].diff().to_numpy()[1:], history["cpu_s"].diff().to_numpy()[1:]
        above_idle_j = (history["avg_power_w"].to_numpy()[1:] - IDLE_W) * seconds
        assert above_idle_j == pytest.approx(WORK_W * cpu_s, rel=0.05, abs=0.5)
        assert (history["node_id"] == history["node_id"].iloc[0]).all() and history["node_id"].iloc[0]


def test_the_final_energy_is_the_trial_s_own_span(two_trials):
    for result in two_trials:
        first, last = result.metrics_dataframe.iloc[0], result.metrics
        # the trainable's own CPU seconds from its first report to its last
        grown = last["idle_free_energy_j"] - first["idle_free_energy_j"]
        assert grown == pytest.approx(WORK_W * (last["cpu_s"] - first["cpu_s"]), rel=0.05)
        # the simulated idle (60 W) is the baseline: idle-free is the rest
        idle_j = last["energy_j"] - last["idle_free_energy_j"]
        assert idle_j == pytest.approx(IDLE_W * last["seconds"], rel=1e-9)


def test_a_trial_s_power_is_sampled_in_a_process_of_its_own(two_trials):
    # inside a Ray worker too: the trainable's Python is not interrupted by a sampler thread
    for result in two_trials:
        assert (result.metrics_dataframe["sampling"] == "process").all()


def test_concurrent_trials_each_measure_their_own_window(two_trials):
    short, long = (r.metrics for r in two_trials)
    assert short["started"] < long["ended"] and long["started"] < short["ended"]  # they overlapped
    # each trial's Joules follow its own work (a shared meter would give both the same)
    assert long["idle_free_energy_j"] / short["idle_free_energy_j"] == pytest.approx(1.5 / 0.6, rel=0.15)


def checkpointing(config):
    import json
    import tempfile

    start = 0
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder, open(f"{folder}/state.json") as handle:
            start = json.load(handle)["step"] + 1
    for step in range(start, 2):
        with tempfile.TemporaryDirectory() as folder:
            with open(f"{folder}/state.json", "w") as handle:
                json.dump({"step": step}, handle)
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(folder))


def returning(config):
    time.sleep(0.2)
    return {"score": config["x"]}


def test_checkpoints_and_returned_results_still_reach_tune(ray_local, tmp_path):
    storage = str(tmp_path)
    saved = tune.Tuner(
        with_energy(checkpointing, energy="simulated"),
        run_config=tune.RunConfig(storage_path=storage, name="ckpt", verbose=0),
    ).fit()[0]
    assert saved.checkpoint is not None and saved.metrics["step"] == 1 and saved.metrics["energy_j"] > 0
    returned = tune.Tuner(
        with_energy(returning, energy="simulated"),
        param_space={"x": 3.0},
        run_config=tune.RunConfig(storage_path=storage, name="ret", verbose=0),
    ).fit()[0]
    assert returned.metrics["score"] == 3.0
    idle_j = returned.metrics["energy_j"] - returned.metrics["idle_free_energy_j"]
    assert idle_j == pytest.approx(IDLE_W * returned.metrics["seconds"], rel=1e-6)
    assert 0 <= returned.metrics["idle_free_energy_j"] < WORK_W * returned.metrics["seconds"]  # it slept


def sleeper(config):
    time.sleep(config["x"])
    tune.report({"x": config["x"]})


def modelled_worker(config):
    add_work(config["x"])  # x seconds of declared work: its idle-free Joules, whatever the load
    time.sleep(0.05)  # the meter's sampler reads the work clock between the work and the report
    tune.report({"x": config["x"]})


@pytest.mark.parametrize("searcher", [PIBayesSearch, RandomSearch])
def test_greenray_searchers_minimise_energy_from_a_tuner_param_space(ray_local, tmp_path, searcher):
    # No space, metric or mode to the searcher: Tune passes the Tuner's (set_search_properties).
    # The metric is modelled work's idle-free Joules: a trial's total also counts its idle power
    # over its wall time, which a busy machine stretches by more than two close draws differ.
    tuner = tune.Tuner(
        with_energy(modelled_worker, energy="simulated", modelled_work=True),
        param_space={"x": tune.uniform(0.05, 0.5)},
        tune_config=tune.TuneConfig(
            search_alg=searcher(seed=0),
            metric="idle_free_energy_j",
            mode="min",
            num_samples=6,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    best = grid.get_best_result()
    xs = sorted(r.config["x"] for r in grid)
    assert len(xs) == 6 and len(set(xs)) == 6
    assert best.config["x"] == xs[0]  # the least work spent the least energy
    assert best.metrics["idle_free_energy_j"] == min(r.metrics["idle_free_energy_j"] for r in grid)


def test_bad_arguments_are_refused_on_the_driver():
    with pytest.raises(ValueError, match="energy must be one of"):
        with_energy(sleeper, energy="gpu")
    with pytest.raises(ValueError, match="interval_ms"):
        with_energy(sleeper, interval_ms=0)
    with pytest.raises(ValueError, match="carbon_intensity"):
        with_energy(sleeper, carbon_intensity=-1.0)
