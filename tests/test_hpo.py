"""The training study in-process on the session's local Ray: a real Tuner over the real trainable,
one row per trial (a NaN trial recorded as failed while the study goes on), the idle baseline in
study.json, the summary, and bad flags as one sentence with exit code 2."""

import json
import math
import shutil
import socket

import pandas as pd
import pytest
from helpers import ScriptedSearch
from typer.testing import CliRunner

from greenray.analysis.summary import describe, summarize
from greenray.cli import app
from greenray.config import StudyConfig
from greenray.tune.study import start_study, stored_config

ADAM = {"beta1": 0.9, "beta2": 0.999}
CONFIGS = [{"lr": math.inf} | ADAM, {"lr": 0.01} | ADAM, {"lr": 0.003} | ADAM]  # round 0 diverges


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    searcher = ScriptedSearch(CONFIGS)
    config = StudyConfig.from_flat(
        {
            "strategy": "random",
            "rounds": 3,
            "repetitions": 2,
            "epochs": 2,
            "energy": "simulated",
            "idle_seconds": 0.1,
            "max_concurrent": 1,  # one trial process: concurrency is test_levers_tune's and test_multinode's
        }
    )
    run = start_study(config, out, say=lambda line: None, searcher=searcher)
    return run, searcher, pd.read_parquet(out / "trials.parquet")


def test_every_trial_of_the_budget_has_one_row(study):
    run, _, trials = study
    assert run.complete and run.recorded == 6
    assert trials["trial_id"].is_unique
    assert sorted(zip(trials["round"], trials["repetition"], strict=True)) == [
        (r, k) for r in range(3) for k in range(2)
    ]
    assert (run.root / "trials.csv").exists() and len(pd.read_csv(run.root / "trials.csv")) == 6


def test_a_nan_trial_is_recorded_as_failed_and_the_study_goes_on(study):
    _, searcher, trials = study
    failed = trials[trials["round"] == 0]
    assert (failed["status"] == "failed").all()
    assert failed["error"].str.contains("TrialFailed: the training loss became nan").all()
    assert (failed["energy_j"] > 0).all()  # what it cost before failing is kept
    ok = trials[trials["round"] > 0]
    assert (ok["status"] == "ok").all() and (ok["accuracy"] > 0.3).all()
    # the searcher hears of a round once, with the mean of its repetitions, or an error
    assert searcher.told[0] == (None, True)
    means = {round(r["accuracy"], 9) for r, error in searcher.told[1:] if not error}
    assert means == {round(m, 9) for m in ok.groupby("round")["accuracy"].mean()}


def test_rows_carry_the_configuration_architecture_and_simulated_energy(study):
    _, _, trials = study
    row = trials[trials["status"] == "ok"].iloc[0]
    assert json.loads(row["config"]) == {"lr": row["lr"], "beta1": row["beta1"], "beta2": row["beta2"]}
    assert (row["net"], row["dataset"], row["params"], row["strategy"]) == (
        "dense-poly",
        "digits",
        3,
        "random",
    )
    assert (row["n_conv"], row["n_linear"], row["relu"], row["epochs"]) == (0, 3, False, 2)
    assert row["gpus_per_trial"] == 0 and row["train_device"] == "cpu"
    assert row["energy_source"] == "simulated" and row["energy_j"] > row["idle_free_energy_j"] > 0


def test_the_idle_baseline_and_the_config_are_kept_in_study_json(study):
    run, _, _ = study
    record = json.loads((run.root / "study.json").read_text())
    assert record["baseline"] == {socket.gethostname(): {"SIM-0": pytest.approx(60.0)}}
    assert record["versions"]["ray"] == "2.60.0"
    # the config round-trips through study.json, resolved resources included
    assert stored_config(record, run.root) == run.config
    assert run.config.resources.gpus_per_trial == 0.0 and run.config.search.rounds == 3


def test_a_study_json_written_before_the_config_spine_still_resumes(tmp_path):
    old = {
        "settings": {"strategy": "grid", "net": "cnn", "synthetic_shape": [3, 8, 8], "rounds": 4,
                     "data_dir": "/data", "relu": True, "energy": "simulated", "require_energy": False,
                     "gpus_per_trial": 0.0, "interval_ms": 10.0, "idle_seconds": 3.0, "uniform_lr": True},
    }  # fmt: skip
    config = stored_config(old, tmp_path)
    assert (config.search.strategy, config.trial.net, config.trial.synthetic_shape) == (
        "grid",
        "cnn",
        (3, 8, 8),
    )
    assert config.search.uniform_lr and config.energy.backend == "simulated" and config.search.rounds == 4


def test_each_epoch_of_each_finished_trial_has_a_row(study):
    run, _, trials = study
    epochs = pd.read_parquet(run.root / "epochs.parquet")
    ok = set(trials.loc[trials["status"] == "ok", "trial_id"])
    assert set(epochs["trial_id"]) == ok and len(epochs) == 2 * len(ok)


def test_the_summary_names_the_best_round_and_labels_simulated_energy(study):
    _, _, trials = study
    summary = summarize(trials, 6)
    means = trials[trials["status"] == "ok"].groupby("round")["accuracy"].mean()
    assert summary.best_round == means.idxmax() and summary.best_accuracy == pytest.approx(means.max())
    assert summary.failed == 2 and summary.energy_column == "idle_free_energy_j"
    until = trials.loc[trials["round"] <= summary.best_round, "idle_free_energy_j"].sum()
    assert summary.until_best_j == pytest.approx(until)
    assert "[simulated, not a measurement]" in describe(summary)[-1]


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--strategy", "hill-climbing"], "--strategy 'hill-climbing' is not one of grid, random, bayes"),
        (["--net", "resnet"], "--net 'resnet' is not one of dense-linear"),
        (["--dataset", "imagenet"], "--dataset 'imagenet' is not one of digits"),
        (["--rounds", "0"], "--rounds 0 is not a whole number of at least 1"),
        (["--params", "4"], "--params 4 is not one of 3, 5"),
        (["--synthetic-shape", "3x32"], "--synthetic-shape '3x32' is not CxHxW"),
        (["--gpus-per-trial", "1.5"], "--gpus-per-trial 1.5 is not 0, a fraction below 1 or a whole number"),
        (
            ["--strategy", "grid", "--rounds", "126"],
            "--rounds 126 is more than the partial grid's 125 points",
        ),
        (["--energy", "rapl2"], "--energy 'rapl2' is not one of auto, nvml, rapl, simulated, none"),
        (["--interval-ms", "0"], "--interval-ms 0.0 is not a positive number"),
        (["--idle-seconds", "-1"], "--idle-seconds -1.0 is not a number of at least 0"),
        (["--out", "{tmp}/file.txt"], "is a file, not a folder"),
        (["--gpus-per-trial", "1", "--out", "{tmp}/gpu"], "this Ray cluster has none"),
        (["--resume", "{tmp}/not-a-study"], "holds no study.json"),
        (["--dataset", "fashionmnist", "--data-dir", "{tmp}/empty"], "pass --download where"),
        (["--energy", "nvml", "--out", "{tmp}/nvml"], "--energy nvml is not available"),
        (["--require-energy", "--out", "{tmp}/req"], "no energy source is readable"),
    ],
)
def test_bad_flags_end_in_one_sentence_and_exit_2(ray_local, tmp_path, args, phrase):
    (tmp_path / "file.txt").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["hpo", "--energy", "none", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and phrase in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_a_study_with_a_damaged_trials_parquet_resumes_from_its_csv(study, tmp_path):
    run, _, trials = study
    copy = tmp_path / "copy"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("tune"))
    (copy / "trials.parquet").write_bytes(b"PAR1 not really")
    result = CliRunner().invoke(app, ["hpo", "--resume", str(copy)])
    assert result.exit_code == 0, result.output
    assert "6 of 6 trials recorded" in result.output and "Traceback" not in result.output
    repaired = pd.read_parquet(copy / "trials.parquet")  # rewritten from trials.csv
    assert sorted(repaired["trial_id"]) == sorted(trials["trial_id"])


def test_a_damaged_study_json_is_one_sentence(study, tmp_path):
    run, _, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("tune"))
    (copy / "study.json").write_text('{"kind": "hpo", "config": ')
    result = CliRunner().invoke(app, ["hpo", "--resume", str(copy)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "study.json is damaged (JSONDecodeError)" in result.output
