"""Experiment files: the study's three as shipped, malformed ones rejected naming the field,
the --scale miniature, and the cell-by-cell run with its index and resume (runners that only
write a marker here; tests/test_report_real.py runs real cells)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greenray import experiments
from greenray.cli import app
from greenray.errors import UsageError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_the_study_files_have_their_tables_cells():
    strategies = experiments.load_experiment(EXPERIMENTS / "strategies.yaml")
    assert strategies.kind == "hpo"
    assert (strategies.values["rounds"], strategies.values["repetitions"], strategies.values["epochs"]) == (
        64,
        8,
        25,
    )
    assert len(experiments.cells(strategies)) == 3 * 3 * 2 * 2
    architecture = experiments.load_experiment(EXPERIMENTS / "architecture.yaml")
    cells = experiments.cells(architecture)
    assert len(cells) == 8 * 2
    assert {(c.settings["n_linear"], c.settings["n_conv"], c.settings["relu"]) for c in cells} == {
        (linear, conv, relu) for linear in (3, 7) for conv in (1, 4) for relu in (False, True)
    }
    assert all(c.settings["strategy"] == "random" and c.settings["repetitions"] == 24 for c in cells)
    inference = experiments.load_experiment(EXPERIMENTS / "inference.yaml")
    cells = experiments.cells(inference)
    assert [c.settings["model"] for c in cells] == [
        "alexnet",
        "densenet121",
        "shufflenet_v2_x1_0",
        "vit_b_16",
        "convnext_base",
    ]
    assert cells[0].settings["frequencies"] == [16, 32, 64, 128]
    assert cells[0].settings["policies"] == ["fixed:16", "fixed:32", "fixed:64", "fixed:128", "greedy"]
    assert (cells[0].settings["requests"], cells[0].settings["warmup_batches"]) == (8192, 256)


def test_a_miniature_keeps_every_factor_level_and_shrinks_the_budgets():
    full = experiments.load_experiment(EXPERIMENTS / "architecture.yaml")
    mini = experiments.prepare(EXPERIMENTS / "architecture.yaml", 0.1, datasets=("digits",))
    assert (mini.values["rounds"], mini.values["repetitions"], mini.values["epochs"]) == (2, 3, 3)
    assert len(experiments.cells(mini)) == len(experiments.cells(full)) // 2  # one data set instead of two
    assert mini.overrides == {"datasets": ["digits"]}
    inference = experiments.prepare(EXPERIMENTS / "inference.yaml", 0.001)
    # 8192 x 0.001 rounds up to 9, but every fixed batch (up to 128) must fill once.
    assert inference.values["requests"] == 128
    assert inference.values["warmup_batches"] == 1
    assert (
        inference.values["policies"]
        == experiments.load_experiment(EXPERIMENTS / "inference.yaml").values["policies"]
    )
    with pytest.raises(UsageError, match="--scale"):
        experiments.prepare(EXPERIMENTS / "inference.yaml", 1.5)
    with pytest.raises(UsageError, match="--dataset 'mnist' is not one of digits"):
        experiments.prepare(EXPERIMENTS / "strategies.yaml", datasets=("mnist",))


HPO = """experiment: x
kind: hpo
strategies: [grid, random]
nets: [cnn]
params: [3]
datasets: [digits]
rounds: 2
repetitions: 2
epochs: 1
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("strategies: [grid, random]", "strategies: [grid, bayesian]"),
            "strategies[1] 'bayesian' is not one of grid, random, bayes",
        ),
        (("nets: [cnn]", "nets: [resnet]"), "nets[0] 'resnet' is not one of dense-linear, dense-poly, cnn"),
        (("params: [3]", "params: [4]"), "params[0] 4 is not one of 3, 5"),
        (("rounds: 2", "rounds: many"), "rounds 'many' is not a whole number of at least 1"),
        (("rounds: 2\n", ""), "'rounds' is missing"),
        (("epochs: 1", "epochs: 1\nepochz: 3"), "'epochz' is not a field of an hpo experiment"),
        (("datasets: [digits]", "datasets: digits"), "datasets 'digits' is not a list of one value or more"),
        (
            ("datasets: [digits]", "datasets: [digits, digits]"),
            "datasets ['digits', 'digits'] is not a list of distinct values",
        ),
        (("epochs: 1", "epochs: 1\nrelu: [1]"), "relu[0] 1 is not true or false"),
        (("kind: hpo", "kind: train"), "kind 'train' is not one of hpo, serve-bench"),
        (("experiment: x\n", ""), "'experiment' is missing; an hpo experiment needs it"),
        (("experiment: x", "experiment: ' '"), "experiment ' ' is not a non-empty text"),
        (("nets: [cnn]", "nets: [cnn"), "not valid YAML"),
    ],
)
def test_a_malformed_hpo_file_is_rejected_naming_the_field(tmp_path, change, message):
    path = tmp_path / "x.yaml"
    path.write_text(HPO.replace(*change))
    with pytest.raises(experiments.ExperimentError) as raised:
        experiments.load_experiment(path)
    assert str(raised.value).startswith(f"{path}:")
    assert message in str(raised.value)


SERVE = """experiment: y
kind: serve-bench
models: [alexnet]
frequencies: [16]
policies: [greedy]
requests: 8
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("policies: [greedy]", "policies: [greedy, 'fixed:0']"),
            "policies[1] 'fixed:0' is not a batching policy",
        ),
        (("models: [alexnet]", "models: [alexnett]"), "models[0] 'alexnett' is not a model"),
        (("frequencies: [16]", "frequencies: [16, -2]"), "frequencies[1] -2 is not a positive number"),
        (
            ("requests: 8", "requests: 8\nprecisions: [fp64]"),
            "precisions[0] 'fp64' is not one of fp32, bf16, fp16",
        ),
    ],
)
def test_a_malformed_serve_file_is_rejected_naming_the_field(tmp_path, change, message):
    path = tmp_path / "y.yaml"
    path.write_text(SERVE.replace(*change))
    with pytest.raises(experiments.ExperimentError, match="y.yaml: ") as raised:
        experiments.load_experiment(path)
    assert message in str(raised.value)


def test_greenray_run_rejects_a_malformed_file_before_anything_runs(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(HPO.replace("strategies: [grid, random]", "strategies: [grid, bayesian]"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "strategies[1] 'bayesian' is not one of grid, random, bayes" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def _recording_runner(ran: list, fail: set = frozenset()):
    def run(cell, folder, options):
        ran.append(cell.name)
        if cell.name in fail:
            raise RuntimeError("out of memory")
        folder.mkdir(parents=True)
        (folder / "done").write_text(json.dumps(cell.settings))
        return True

    return {"hpo": run, "serve-bench": run}


def test_a_run_writes_an_index_and_a_rerun_skips_complete_cells(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(HPO)
    experiment = experiments.prepare(path)
    out = tmp_path / "out"
    ran: list[str] = []
    first_cell = experiments.cells(experiment)[0].name
    index = experiments.run_experiment(
        experiment, out, experiments.RunOptions(), runners=_recording_runner(ran, fail={first_cell})
    )
    assert ran == ["digits-cnn-p3-grid", "digits-cnn-p3-random"]
    assert [c["status"] for c in index.cells] == ["failed", "complete"]
    assert "out of memory" in index.cells[0]["error"]
    stored = json.loads((out / experiments.INDEX).read_text())
    assert stored["experiment"] == "x" and [c["status"] for c in stored["cells"]] == ["failed", "complete"]
    # The re-run goes on with what is not complete and leaves the rest alone.
    ran.clear()
    index = experiments.run_experiment(
        experiment, out, experiments.RunOptions(), runners=_recording_runner(ran)
    )
    assert ran == ["digits-cnn-p3-grid"]
    assert [c["status"] for c in index.cells] == ["complete", "complete"]
    # Another plan in the same folder is refused rather than mixed in.
    other = experiments.prepare(path, 0.5)
    other = experiments.with_overrides(other, datasets=("synthetic",))
    with pytest.raises(UsageError, match="holds a run of another plan"):
        experiments.run_experiment(other, out, experiments.RunOptions(), runners=_recording_runner(ran))


def test_a_cell_that_stops_early_stays_pending_and_ends_the_run(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(HPO)
    experiment = experiments.prepare(path)
    ran: list[str] = []

    def interrupted(cell, folder, options):
        ran.append(cell.name)
        return False

    index = experiments.run_experiment(
        experiment, tmp_path / "out", experiments.RunOptions(), runners={"hpo": interrupted}
    )
    assert ran == ["digits-cnn-p3-grid"]  # the run ends with the interrupted cell
    assert {c["status"] for c in index.cells} == {"pending"}


def test_every_cell_is_checked_by_its_command_before_any_runs(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(HPO.replace("epochs: 1", "epochs: 1\nbatch_size: 0"))
    with pytest.raises(experiments.ExperimentError, match="batch_size 0 is not a whole number of at least 1"):
        experiments.prepare(path)
    planned = experiments.cells(experiments.prepare(EXPERIMENTS / "inference.yaml"))
    with pytest.raises(UsageError, match="--device 'tpu' is not one of auto, cpu, cuda"):
        experiments.check_cells(planned, experiments.RunOptions(device="tpu"))


def billion_laughs(levels: int) -> str:
    """The hpo file above whose `rounds` holds 9^levels strings, written in 9 x levels aliases."""
    parts = ["a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"]
    parts += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return HPO.replace("rounds: 2", "rounds: {" + ", ".join(parts) + "}")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (billion_laughs(8), "more than 32 YAML aliases"),  # once a 312 MB message after 13 s
        (billion_laughs(2), "rounds"),  # few aliases: the message is cut, not 9^2 values long
        (bytes(range(256)) * 4, "is not a text file"),  # once a UnicodeDecodeError traceback
    ],
)
def test_a_hostile_or_binary_file_is_one_short_sentence_and_exit_2(tmp_path, content, phrase):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert phrase in result.output and "Traceback" not in result.output
    assert len(result.output) < 600 and not (tmp_path / "out").exists()
