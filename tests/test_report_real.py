"""`greenray run` of two tiny experiments end to end (real Ray Tune trials on digits, a real Ray
Serve bench on the CPU, simulated energy), a re-run that resumes, and `greenray report` over
what they stored: every table and figure written and readable."""

from pathlib import Path

import pandas as pd
import pytest
from matplotlib import image
from typer.testing import CliRunner

from greenray import experiments
from greenray.analysis.report import build_report
from greenray.cli import app

TINY_HPO = """experiment: tiny-architecture
kind: hpo
strategies: [random]
nets: [cnn]
params: [3]
datasets: [fashionmnist]        # replaced by --dataset digits
n_conv: [1, 2]
rounds: 2
repetitions: 2
epochs: 1
batch_size: 256
"""
TINY_SERVE = """experiment: tiny-inference
kind: serve-bench
models: [shufflenet_v2_x0_5]
frequencies: [64]
policies: ["fixed:4", greedy]
requests: 8
warmup_batches: 1
warmup_batch_size: 2
weights: none
image_size: 64
"""
COMMON = ["--device", "cpu", "--energy", "simulated", "--idle-seconds", "0.2"]


def greenray_run(path: Path, out: Path, *extra: str):
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), *COMMON, *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    (root / "hpo.yaml").write_text(TINY_HPO)
    (root / "serve.yaml").write_text(TINY_SERVE)
    greenray_run(root / "hpo.yaml", root / "hpo", "--dataset", "digits")
    greenray_run(root / "serve.yaml", root / "serve")
    return {"hpo": root / "hpo", "serve": root / "serve", "root": root}


def test_run_stores_one_results_folder_per_cell_and_an_index(runs):
    index = experiments.Index(**pd.read_json(runs["hpo"] / experiments.INDEX, typ="series").to_dict())
    assert [c["status"] for c in index.cells] == ["complete", "complete"]
    assert index.overrides == {"datasets": ["digits"]}
    for cell in index.cells:
        trials = pd.read_parquet(runs["hpo"] / cell["name"] / "trials.parquet")
        assert len(trials) == 4 and set(trials["status"]) == {"ok"}
        assert set(trials["energy_source"]) == {"simulated"}
        assert trials["n_conv"].iloc[0] == cell["settings"]["n_conv"]
    served = pd.read_parquet(runs["serve"] / "shufflenet_v2_x0_5-fp32" / "runs.parquet")
    assert sorted(served["policy"]) == ["fixed:4", "greedy"]


def test_a_rerun_skips_complete_cells(runs):
    result = greenray_run(runs["root"] / "hpo.yaml", runs["hpo"], "--dataset", "digits")
    assert result.output.count("skipped (complete)") == 2
    assert "2 of 2 cells complete" in result.output


def test_report_over_real_runs_writes_every_table_and_figure(runs, tmp_path):
    report = build_report([runs["hpo"], runs["serve"]], tmp_path / "report")
    names = sorted(p.name for p in report.figures)
    assert names == sorted(
        [
            "convergence.png",
            "energy_until_best.png",
            "architecture_energy_accuracy.png",
            "architecture_energy_by_factor.png",
            "inference_energy_latency.png",
            "inference_timeline.png",
            "inference_peak_power.png",
        ]
    )
    text = (tmp_path / "report" / "report.md").read_text()
    for figure in report.figures:
        assert figure.stat().st_size > 15_000, figure  # a drawn figure, not an empty canvas
        pixels = image.imread(figure)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        assert pixels[..., :3].std() > 0.05  # more than one colour
        assert f"(figures/{figure.name})" in text
    for table in ("search_best", "architecture_factors", "architecture_clusters", "inference_runs"):
        assert len(pd.read_csv(tmp_path / "report" / "tables" / f"{table}.csv")) > 0
        assert f"(tables/{table}.csv)" in text
    assert "> **SIMULATED ENERGY.**" in text
    assert "Experiment `tiny-architecture`" in text and "2 of 2 cells complete" in text
    factors = pd.read_csv(tmp_path / "report" / "tables" / "architecture_factors.csv")
    assert list(factors["factor"]) == ["conv layers"] and factors["n"].iloc[0] == 8
    runs_table = pd.read_csv(tmp_path / "report" / "tables" / "inference_runs.csv")
    assert "every run shares weights random" in text
    assert (runs_table["max_latency_s"] > 0).all()
