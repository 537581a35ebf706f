"""`greenray report` on small results folders written through ResultStore: what it says about a
folder it cannot use, about statistics it cannot compute, and about simulated energy."""

import itertools
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from greenray.analysis.report import build_report
from greenray.cli import app
from greenray.errors import UsageError
from greenray.results import TABLES, ResultStore


def trial_rows(source: str = "simulated", n_conv=(2,), failed: int = 0) -> list[dict]:
    """Two strategies x 2 rounds x 2 repetitions per conv-layer level, every schema column."""
    rows = []
    for strategy, conv, r, rep in itertools.product(("random", "bayes"), n_conv, range(2), range(2)):
        energy = None if source == "none" else 100.0 * conv + 10 * r + rep
        rows.append(
            dict.fromkeys(TABLES["trials"])
            | {
                "trial_id": f"{strategy}-{conv}-{r}-{rep}",
                "strategy": strategy,
                "net": "cnn",
                "dataset": "digits",
                "params": 3,
                "n_conv": conv,
                "n_linear": 3,
                "relu": True,
                "epochs": 1,
                "round": r,
                "repetition": rep,
                "accuracy": 0.5 + 0.1 * r + 0.01 * rep + (0.05 if strategy == "bayes" else 0),
                "status": "ok",
                "energy_j": energy,
                "idle_free_energy_j": energy,
                "energy_source": source,
            }
        )
    for row in rows[:failed]:
        row.update(status="failed", accuracy=None, error="RuntimeError: NaN loss")
    return rows


def hpo_folder(path: Path, rows: list[dict]) -> Path:
    ResultStore(path).append("trials", rows)
    return path


def test_a_folder_missing_columns_gets_one_sentence_and_the_rest_is_still_written(tmp_path):
    good = hpo_folder(tmp_path / "good", trial_rows())
    broken = tmp_path / "broken"
    broken.mkdir()
    pd.DataFrame(trial_rows()).drop(columns=["accuracy", "round"]).to_parquet(broken / "trials.parquet")
    report = build_report([good, broken], tmp_path / "report")
    sentences = [line for line in report.cannot if str(broken) in line]
    assert len(sentences) == 1
    assert "lacks the column(s) round, accuracy" in sentences[0]
    text = (tmp_path / "report" / "report.md").read_text()
    assert sentences[0] in text
    assert "Best accuracy per search" in text
    assert (tmp_path / "report" / "figures" / "convergence.png").stat().st_size > 0


def test_a_folder_lacking_optional_columns_is_used_and_says_so(tmp_path):
    rows = [{k: v for k, v in row.items() if k not in ("loss", "config")} for row in trial_rows()]
    folder = tmp_path / "old"
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    report = build_report([folder], tmp_path / "report")
    assert any(
        "lacks the column(s)" in line and "config" in line and "loss" in line for line in report.cannot
    )
    assert (tmp_path / "report" / "tables" / "search_best.csv").exists()


def test_what_cannot_be_computed_is_said_in_one_sentence_each(tmp_path):
    folder = hpo_folder(tmp_path / "hpo", trial_rows())
    report = build_report([folder], tmp_path / "report")
    assert "no architecture statistics: the trials vary no architecture factor." in report.cannot
    assert "no inference statistics: no serve-bench folder (runs.parquet) was given." in report.cannot
    assert not (tmp_path / "report" / "tables" / "architecture_factors.csv").exists()


def test_failed_trials_are_counted_and_left_out(tmp_path):
    folder = hpo_folder(tmp_path / "hpo", trial_rows(failed=3))
    build_report([folder], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "3 excluded row(s) in all" in text
    best = pd.read_csv(tmp_path / "report" / "tables" / "search_best.csv").set_index("strategy")
    # The first three rows (random, round 0 and round 1's first) failed; runs count only ok ones.
    assert best.loc["random", "runs"] == 1 and best.loc["bayes", "runs"] == 4


def test_simulated_energy_is_said_at_the_top_and_in_every_caption_and_title(tmp_path):
    folder = hpo_folder(tmp_path / "hpo", trial_rows(n_conv=(1, 4)))
    report = build_report([folder], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert text.splitlines()[2].startswith("> **SIMULATED ENERGY.**")
    for line in text.splitlines():
        if line.startswith("![") or line.startswith("**") or line.startswith("*"):
            assert "SIMULATED" in line, line
    for table in (tmp_path / "report" / "tables").glob("*.md"):
        assert "SIMULATED" in table.read_text().splitlines()[0], table
    assert len(report.figures) == 4  # convergence, energy until, energy vs accuracy, per factor


def test_unmeasured_energy_is_said_and_energy_figures_are_left_out(tmp_path):
    folder = hpo_folder(tmp_path / "hpo", trial_rows(source="none", n_conv=(1, 4)))
    report = build_report([folder], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**Energy not measured**" in text and "SIMULATED" not in text
    assert (
        "no energy until the best: the trials' energy was not measured (energy_source none)." in report.cannot
    )
    assert [p.name for p in report.figures] == ["convergence.png"]


def test_nothing_to_report_is_exit_2_with_one_sentence(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="nothing can be reported"):
        build_report([empty], tmp_path / "report")
    result = CliRunner().invoke(
        app, ["report", str(empty), str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "nothing can be reported" in result.output and "holds no greenray results" in result.output
    assert "is not a folder" in result.output
    assert "Traceback" not in result.output


def test_report_command_writes_the_report(tmp_path):
    folder = hpo_folder(tmp_path / "hpo", trial_rows(n_conv=(1, 4)))
    result = CliRunner().invoke(app, ["report", str(folder), "--out", str(tmp_path / "r"), "--target", "0.6"])
    assert result.exit_code == 0, result.output
    assert "SIMULATED energy" in result.output
    best = pd.read_csv(tmp_path / "r" / "tables" / "search_best.csv")
    assert (best["target_accuracy"] == 0.6).all()
    bad = CliRunner().invoke(app, ["report", str(folder), "--out", str(tmp_path / "r"), "--target", "7"])
    assert bad.exit_code == 2 and "--target is an accuracy" in bad.output


def test_trials_that_shared_a_gpu_get_no_energy_sums_and_one_sentence(tmp_path):
    rows = [row | {"gpu_sharers_max": 2} for row in trial_rows()]
    report = build_report([hpo_folder(tmp_path / "hpo", rows)], tmp_path / "report")
    sentences = [line for line in report.cannot if "shared a GPU" in line]
    assert len(sentences) == 1 and "up to 2 times" in sentences[0]
    assert sentences[0] in (tmp_path / "report" / "report.md").read_text()
    best = pd.read_csv(tmp_path / "report" / "tables" / "search_best.csv")
    assert best["energy_until_best_j"].isna().all()


def test_energy_from_power_samples_names_its_power_field_in_captions(tmp_path):
    rows = [row | {"energy_source": "nvml-power", "power_field": "instant"} for row in trial_rows()]
    build_report([hpo_folder(tmp_path / "hpo", rows)], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "energy_source: nvml-power, power_field: instant" in text


@pytest.mark.parametrize(("out", "phrase"), [("a-file", "is a file"), ("a-file/below", "cannot be written")])
def test_report_out_on_a_file_is_one_sentence_and_exit_2(tmp_path, out, phrase):
    """Once a NotADirectoryError traceback."""
    folder = hpo_folder(tmp_path / "hpo", trial_rows())
    (tmp_path / "a-file").write_text("mine")
    result = CliRunner().invoke(app, ["report", str(folder), "--out", str(tmp_path / out)])
    assert result.exit_code == 2 and phrase in result.output, result.output
    assert "Traceback" not in result.output and (tmp_path / "a-file").read_text() == "mine"
