"""The report's figures cannot mislead (issue 19 item 8): bars beside their own labels, a row
whose energy was not measured says so, identical curves stay visible, and a not-measured
serve-bench folder beside a simulated one is drawn, not a crash. Ray-free: folders written
through ResultStore, figures caught before they are saved."""

from pathlib import Path

import pandas as pd
import pytest
from test_report import hpo_folder, trial_rows

from greenray.analysis import figures
from greenray.analysis.report import build_report
from greenray.results import TABLES, ResultStore


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the report draws, by file name."""
    caught = {}

    def keep(fig, path: Path) -> Path:
        caught[Path(path).stem] = fig
        fig.savefig(path, dpi=40)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    return caught


def studies(root: Path, plan: list[tuple[str, str, str]]) -> list[Path]:
    """One hpo folder per (name, strategy, energy source), each with the same trials."""
    folders = []
    for name, strategy, source in plan:
        rows = [r | {"strategy": strategy} for r in trial_rows(source) if r["strategy"] == "random"]
        folders.append(hpo_folder(root / name, rows))
    return folders


def bars_by_label(ax) -> dict[str, float]:
    """Each drawn bar's width, keyed by the tick label at the bar's own height."""
    ticks = {
        round(t, 6): label.get_text() for t, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
    }
    out = {}
    for bar in ax.patches:
        centre = round(bar.get_y() + bar.get_height() / 2, 6)
        assert centre in ticks, f"a bar at {centre} has no label beside it"
        out[ticks[centre]] = bar.get_width()
    return out


def test_energy_until_best_puts_each_bar_beside_its_own_label_and_says_not_measured(tmp_path, drawn):
    plan = [
        ("random-cnn-sim", "random", "simulated"),
        ("sim-bayes", "bayes", "simulated"),
        ("off", "pibo", "none"),
    ]
    build_report(studies(tmp_path, plan), tmp_path / "report")
    until_best = drawn["energy_until_best"].axes[0]
    bars = bars_by_label(until_best)
    assert len(bars) == 3
    for label, width in bars.items():
        folder = label.split(",")[0]
        strategy = dict((p[0], p[1]) for p in plan)[folder]
        assert label.endswith(f": {strategy}")  # the strategy's bar, on its study's row
        assert (width > 0) == (folder != "off")
    words = [t.get_text().strip() for t in until_best.texts]
    assert words == ["energy not measured"]


def test_identical_convergence_curves_each_stay_visible_and_the_legend_says_so(tmp_path, drawn):
    plan = [(f"same-{i}", s, "simulated") for i, s in enumerate(("random", "bayes", "pibo", "grid"))]
    build_report(studies(tmp_path, plan), tmp_path / "report")
    fig = drawn["convergence"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    assert len({line.get_marker() for line in lines}) == 4  # a marker each
    assert sorted(line.get_linewidth() for line in lines) == sorted(
        set(line.get_linewidth() for line in lines)
    )
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sum("(= " in text for text in legend) == 3


def serve_runs(source: str) -> list[dict]:
    runs = []
    for i, policy in enumerate(["fixed:1", "fixed:16", "greedy"]):
        energy = None if source == "none" else 0.5 + i
        runs.append(
            dict.fromkeys(TABLES["runs"])
            | {
                "run_id": f"{source}-{i}",
                "status": "ok",
                "model": "resnet18",
                "precision": "fp32",
                "policy": policy,
                "frequency_hz": 10.0,
                "requests": 50,
                "served": 50,
                "energy_per_image_j": energy,
                "idle_free_energy_per_image_j": None if energy is None else energy / 2,
                "max_latency_s": 0.1 * (i + 1),
                "p99_latency_s": 0.1,
                "mean_batch_size": [1.0, 16.0, 4.0][i],
                "energy_j": None if energy is None else 50 * energy,
                "energy_source": source,
            }
        )
    return runs


def test_a_not_measured_and_a_simulated_serve_bench_folder_make_one_report(tmp_path, drawn):
    folders = []
    for name, source in (("serve-demo", "none"), ("serve-demo-sim", "simulated")):
        ResultStore(tmp_path / name).append("runs", serve_runs(source))
        folders.append(tmp_path / name)
    report = build_report(folders, tmp_path / "report")
    ax = drawn["inference_energy_latency"].axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3  # the measured runs only
    assert [t.get_text() for t in ax.texts if "not measured" in t.get_text()] == [
        "3 of 6 runs: energy not measured"
    ]
    runs_md = (tmp_path / "report" / "tables" / "inference_runs.md").read_text().splitlines()
    unmeasured = [line for line in runs_md if line.endswith("| none |")]
    assert len(unmeasured) == 3 and all("| not measured | not measured |" in line for line in unmeasured)
    timeline = pd.read_csv(tmp_path / "report" / "tables" / "inference_timeline.csv")
    assert timeline["runs"].tolist() == [3]  # the mean is over the measured runs, and says how many
    assert not any("inference" in line for line in report.cannot)
