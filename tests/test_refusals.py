"""Settings no run can carry out are refused before anything starts, in one sentence and exit 2
(issue 19 item 7): conv blocks the image cannot hold, a batch no run fills, a mutate resume of
an hpo folder. Ray-free: each is refused before Ray starts."""

import json

import pytest
from typer.testing import CliRunner

from greenray.cli import app


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    return result.output


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        ([], "--conv-layers 50 is more than a 8x8 image holds"),  # once 41 GB a trial, and exit 0
        (["--dataset", "synthetic", "--synthetic-shape", "3x32x32"], "at most 6"),
    ],
)
def test_conv_blocks_the_image_cannot_hold_are_refused(tmp_path, extra, phrase):
    out = tmp_path / "study"
    assert phrase in refused("hpo", "--net", "cnn", "--conv-layers", "50", *extra, "--out", str(out))
    assert not out.exists()


def test_conv_blocks_the_image_holds_are_kept():
    from greenray.config import StudyConfig

    for dataset, most in (("digits", 4), ("fashionmnist", 5), ("cifar10", 6)):
        assert StudyConfig.from_flat({"net": "cnn", "dataset": dataset, "n_conv": most}).trial.n_conv == most
    assert StudyConfig.from_flat({"net": "dense-poly", "n_conv": 50}).trial.n_conv == 50  # no conv blocks


def test_a_fixed_batch_larger_than_a_run_is_refused(tmp_path):
    out = refused(
        "serve-bench", "--policy", "fixed:100000000", "--energy", "simulated", "--out", str(tmp_path / "b")
    )
    assert "--policy fixed:100000000 waits for more requests than a run sends" in out
    assert "at most 8192" in out


def test_mutate_resume_of_an_hpo_folder_is_refused(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"kind": "hpo", "config": {}}))
    said = refused("mutate", "--resume", str(tmp_path))
    assert "holds a greenray hpo study: resume it with greenray hpo" in said
