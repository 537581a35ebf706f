"""The study's simulated Joules are a modelled duration (issue 19 item 6): its trainable reports
the work it does (samples x parameters x FLOPs per parameter, at a nominal throughput), and the
simulated backend's above-idle energy follows that work clock, so two CPU hogs beside a trial
change its wall time, not its Joules."""

import os
import subprocess
import sys

import pytest

from greenray.config import TrialConfig
from greenray.energy import EnergyMeter, add_work, modelled_work, work_seconds
from greenray.energy.simulated import SimulatedBackend
from greenray.tune.data import load_on
from greenray.tune.keys import REPETITION_KEY, ROUND_KEY
from greenray.tune.nets import build_net
from greenray.tune.trainable import (
    EVAL_FLOPS_PER_PARAM,
    TRAIN_FLOPS_PER_PARAM,
    modelled_seconds,
    n_params,
    run_trial,
)

CONFIG = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, ROUND_KEY: 0, REPETITION_KEY: 0}
ABOVE_IDLE_W = 190.0
TRIAL = TrialConfig(net="dense-poly", dataset="digits", epochs=2)


def modelled_trial() -> tuple[float, dict]:
    """(the whole trial's idle-free J, its last report) on the model with idle at 0 W: then the
    Joules are the above-idle part alone, which must not depend on wall time at all."""
    with modelled_work():
        backend = SimulatedBackend(idle_w=0.0, busy_w=ABOVE_IDLE_W, work_pid=os.getpid())
    assert backend.work_model == "modelled" and backend.spec() is None  # sampled in a thread
    with EnergyMeter([backend]) as meter, meter.window("trial", busy=False) as whole:
        final = run_trial(CONFIG, TRIAL, 0, [].append, meter)
    return whole.measurement.idle_free_joules, final


def exact_joules() -> tuple[float, float]:
    """(training J, training and test J) of TRIAL by the model, from its data and net alone."""
    data = load_on("digits", "cpu", TRIAL.data_dir, TRIAL.download, None)
    net = build_net(
        TRIAL.net,
        data.input_shape,
        data.n_classes,
        n_conv=TRIAL.n_conv,
        n_linear=TRIAL.n_linear,
        relu=TRIAL.uses_relu,
    )
    params = n_params(net)
    train = modelled_seconds(data.train_y.shape[0] * TRIAL.epochs, params, TRAIN_FLOPS_PER_PARAM)
    test = modelled_seconds(data.test_y.shape[0] * TRIAL.epochs, params, EVAL_FLOPS_PER_PARAM)
    return ABOVE_IDLE_W * train, ABOVE_IDLE_W * (train + test)


def test_a_trials_simulated_joules_are_the_models_exact_value_loaded_or_not():
    train_j, all_j = exact_joules()
    quiet, final = modelled_trial()
    assert final["train_idle_free_energy_j"] == pytest.approx(train_j, rel=1e-9)
    assert quiet == pytest.approx(all_j, rel=1e-9)
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    try:
        loaded, loaded_final = modelled_trial()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert loaded == pytest.approx(quiet, rel=1e-6)
    assert loaded_final["train_idle_free_energy_j"] == pytest.approx(train_j, rel=1e-6)


def test_the_default_model_keeps_idle_and_a_meter_outside_modelled_work_counts_cpu_seconds():
    with modelled_work():
        modelled = SimulatedBackend(work_pid=os.getpid())  # 60 W idle, 250 W at one second of work
    assert modelled.work_model == "modelled"
    assert SimulatedBackend(work_pid=os.getpid()).work_model == "cpu"  # a with_energy user's trainable
    assert SimulatedBackend().work_model == "wall"
    before = modelled.read_counter_j(modelled.devices()[0])
    modelled.set_busy(True)
    add_work(2.0)
    modelled.set_busy(False)
    joules = modelled.read_counter_j(modelled.devices()[0]) - before
    assert joules == pytest.approx(190.0 * 2.0, abs=1.0)  # plus 60 W over the microseconds it took
    with pytest.raises(ValueError, match="non-negative"):
        add_work(-1.0)
    assert work_seconds() >= 2.0


def test_work_declared_just_before_a_window_closes_is_counted_whole():
    """Modelled work arrives in steps (`add_work`), so the model's counter can move faster than
    any device could draw: its counter is its definition, not a jump to throw away."""
    with modelled_work():
        backend = SimulatedBackend(idle_w=0.0, busy_w=ABOVE_IDLE_W, work_pid=os.getpid())
    with EnergyMeter([backend]) as meter, meter.window("step", busy=True) as step:
        add_work(0.3)
    assert step.measurement.idle_free_joules == pytest.approx(ABOVE_IDLE_W * 0.3, rel=1e-9)
    assert "jumped" not in step.measurement.note
