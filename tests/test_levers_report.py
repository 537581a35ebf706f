"""`greenray report` on hpo folders with green levers (written through ResultStore with their
study.json): every study's levers, the energy saved against the same study without them, and
the pareto front drawn with the dominated trials in grey."""

import json
import math

import pandas as pd
import pytest

from greenray.analysis.levers import levers_on, savings
from greenray.analysis.report import build_report
from greenray.config import StudyConfig
from greenray.results import TABLES, ResultStore


def study_folder(path, config: StudyConfig, rounds: list[tuple[float, float]], stop: dict | None = None):
    """An hpo folder: one trial per round with (accuracy, idle-free J), and its study.json."""
    rows = [
        dict.fromkeys(TABLES["trials"])
        | {"trial_id": f"{path.name}-{r}", "strategy": config.search.strategy, "net": "dense-poly",
           "dataset": "digits", "params": config.search.params, "n_conv": 0, "n_linear": 3, "relu": False,
           "epochs": 2, "round": r, "repetition": 0, "accuracy": a, "status": "ok", "energy_j": e + 5,
           "idle_free_energy_j": e, "energy_source": "simulated", "finished_at": float(r),
           "config": json.dumps({"lr": 0.01 * (r + 1)})}
        for r, (a, e) in enumerate(rounds)
    ]  # fmt: skip
    store = ResultStore(path)
    store.append("trials", rows)
    store.write_json("study", {"kind": "hpo", "config": config.model_dump(mode="json"), "stop": stop})
    return path


@pytest.fixture
def folders(tmp_path):
    plain = StudyConfig.from_flat({"rounds": 4, "repetitions": 1, "energy": "simulated"})
    levered = plain.replace(scheduler="asha", patience=2)
    pareto = plain.replace(objective="pareto", params="3+batch", rounds=5)
    return {
        "plain": study_folder(tmp_path / "plain", plain, [(0.5, 100), (0.9, 100), (0.92, 100), (0.91, 100)]),
        "levered": study_folder(
            tmp_path / "levered",
            levered,
            [(0.6, 30), (0.91, 40), (0.8, 20)],
            {"lever": "patience", "round": 2, "detail": "2 rounds without a better round"},
        ),  # fmt: skip
        "pareto": study_folder(
            tmp_path / "pareto", pareto, [(0.9, 50), (0.8, 10), (0.95, 90), (0.85, 60), (0.5, 5)]
        ),
    }


def test_a_levered_study_is_compared_with_the_same_study_without_levers(folders):
    assert levers_on(StudyConfig()) == {}
    assert levers_on(StudyConfig().replace(params="3+batch", patience=3)) == {
        "patience": 3,
        "params": "3+batch",
    }
    trials = pd.concat(
        [pd.read_parquet(f / "trials.parquet").assign(folder=str(f)) for f in folders.values()],
        ignore_index=True,
    )
    table = savings(trials)
    # Only the levered folder has a twin: the pareto one also searches the batch size, but on 5 rounds.
    assert table["folder"].tolist() == ["levered"] and table["without_levers"].tolist() == ["plain"]
    row = table.iloc[0]
    assert (
        row["energy_j"] == 90 and row["energy_without_j"] == 400 and row["saved_pct"] == pytest.approx(77.5)
    )
    # 0.98 x 0.92 = 0.9016: the plain study reached it in round 2 (300 J), the levered one in round 1 (70 J).
    assert row["energy_to_target_j"] == 70 and row["energy_to_target_without_j"] == 300
    assert row["stopped_by"] == "patience" and row["best_accuracy_without"] == pytest.approx(0.92)


def test_the_report_has_a_green_levers_section_and_draws_the_front(folders, tmp_path):
    report = build_report(list(folders.values()), tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Green levers" in text and "figures/levers_pareto.png" in text
    front = pd.read_csv(tmp_path / "report" / "tables" / "levers_pareto.csv")
    assert sorted(front["accuracy"]) == [0.5, 0.8, 0.9, 0.95]  # (0.85, 60 J) is dominated by (0.9, 50 J)
    studies = pd.read_csv(tmp_path / "report" / "tables" / "levers_studies.csv")
    assert set(studies["folder"]) == {"plain", "levered", "pareto"}
    assert (tmp_path / "report" / "figures" / "levers_pareto.png").stat().st_size > 0
    assert not any("green-lever" in line for line in report.cannot)


def test_a_report_without_levers_has_no_levers_section(folders, tmp_path):
    build_report([folders["plain"]], tmp_path / "report")
    assert "Green levers" not in (tmp_path / "report" / "report.md").read_text()


def trials_of(*folders) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(f / "trials.parquet").assign(folder=str(f)) for f in folders], ignore_index=True
    )


def test_a_budget_that_never_fired_is_credited_with_no_saving(tmp_path):
    """Two identical studies at different loads once gave 499.5 J and 401.5 J: the report
    credited the spread as a 19.6% saving to an energy budget that never fired."""
    plain = StudyConfig.from_flat({"rounds": 4, "repetitions": 1, "energy": "simulated"})
    rounds = [(0.5, 100), (0.9, 100), (0.92, 100), (0.91, 100)]
    a = study_folder(tmp_path / "plain", plain, [(acc, 1.245 * e) for acc, e in rounds])
    b = study_folder(tmp_path / "budget", plain.replace(energy_budget=2000), rounds)
    row = savings(trials_of(a, b)).iloc[0]
    assert row["difference_pct"] == pytest.approx(100 * (1 - 400 / 498))
    assert math.isnan(row["saved_pct"]) and math.isnan(row["saved_to_target_pct"])
    assert row["verdict"].startswith("not claimed: the lever never acted")


def test_a_saving_within_the_run_to_run_spread_is_not_claimed_and_the_interval_is_shown(tmp_path):
    plain = StudyConfig.from_flat({"rounds": 4, "repetitions": 1, "energy": "simulated"})
    rounds = [(0.5, 100), (0.9, 100), (0.92, 100), (0.91, 100)]
    runs = [
        study_folder(tmp_path / f"plain-{i}", plain, [(a, e * s) for a, e in rounds])
        for i, s in enumerate((0.8, 1.2))
    ]
    stop = {"lever": "patience", "round": 3, "detail": "2 rounds without a better round"}
    levered = study_folder(tmp_path / "levered", plain.replace(patience=2), rounds[:3], stop)
    table = savings(trials_of(*runs, levered))
    # 300 J against 320 and 480 J: 6% and 38% less, but two runs of the same study lie 40% apart
    assert table["difference_pct"].round(1).tolist() == [6.2, 37.5]
    assert table["saved_pct"].isna().all()
    assert all(v == "not claimed: within the run-to-run spread (40.0%)" for v in table["verdict"])
    assert table["interval_pct"].tolist() == ["-33.8 to 46.2", "-2.5 to 77.5"]
