"""Grams of CO2e: a row's kWh times the grid intensity, given as gCO2e/kWh or looked up by
country or cloud region in the table shipped in the package; in every row kind (a measurement's
columns, serve-bench's batch, replica and run rows, the hpo summary); an unknown region is one
sentence. (with_energy's trial rows and measure_batches' batches: test_with_energy.py and
test_measure_batches.py.)"""

import time

import pandas as pd
import pytest

from greenray.analysis.summary import describe, summarize
from greenray.config import BenchConfig, EnergyConfig, StudyConfig
from greenray.energy import carbon, open_meter
from greenray.errors import UsageError
from greenray.results import ENERGY_COLUMNS, TABLES

KWH = 3.6e6


@pytest.fixture(scope="module")
def measurement():
    meter = open_meter("simulated", interval_ms=10, quiet=True).start()
    try:
        meter.begin_window("w")
        time.sleep(0.1)
        return meter.end_window("w")
    finally:
        meter.close()


def test_the_shipped_table_cites_its_source_and_holds_countries_and_cloud_regions():
    header = [line for line in carbon.TABLE.read_text().splitlines() if line.startswith("#")]
    text = " ".join(header)
    for phrase in ("CodeCarbon", "MIT", "Our World in Data", "Ember", "2022", "gCO2e per kWh"):
        assert phrase in text, phrase
    countries = {e.code for e in carbon.table().values() if ":" not in e.code}
    assert len(countries) == 213
    assert carbon.lookup("fra").code == "FRA" and 0 < carbon.lookup("FRA").g_per_kwh < 100
    assert carbon.lookup("FRA").year in (2021, 2022, 2023)
    assert carbon.lookup("europe-west9") == carbon.lookup("gcp:europe-west9")
    assert carbon.lookup("POL").g_per_kwh > carbon.lookup("FRA").g_per_kwh  # coal against nuclear
    with pytest.raises(carbon.UnknownRegion, match="not in greenray's carbon table"):
        carbon.lookup("Atlantis")


def test_co2e_is_kwh_times_the_intensity_and_none_without_either():
    assert carbon.co2e_g(3.6e6, 400.0) == pytest.approx(400.0)
    assert carbon.co2e_g(1800.0, 100.0) == pytest.approx(0.05)
    assert carbon.co2e_g(None, 100.0) is None and carbon.co2e_g(10.0, None) is None


def test_a_measurement_row_carries_co2e_at_the_intensity_given(measurement):
    row = measurement.to_row(250.0)
    assert set(ENERGY_COLUMNS) <= set(row) and row["energy_j"] > 0
    assert row["co2e_g"] == pytest.approx(row["energy_j"] / KWH * 250.0)
    assert measurement.to_row()["co2e_g"] is None
    assert "co2e_g" in TABLES["trials"] and "co2e_g" in TABLES["batches"] and "co2e_g" in TABLES["runs"]


def test_the_settings_take_an_intensity_or_a_region_and_refuse_both_or_an_unknown_one():
    assert EnergyConfig().g_per_kwh is None
    assert EnergyConfig(carbon_intensity=120).g_per_kwh == 120.0
    assert EnergyConfig(region="deu").region == "DEU"
    assert EnergyConfig(region="deu").g_per_kwh == carbon.lookup("DEU").g_per_kwh
    config = StudyConfig.from_flat({"region": "europe-west9"})
    assert config.energy.g_per_kwh == carbon.lookup("gcp:europe-west9").g_per_kwh
    with pytest.raises(UsageError) as caught:
        StudyConfig.from_flat({"region": "XX"})
    message = str(caught.value)
    assert message.startswith("--region 'XX' is not a country") and "\n" not in message
    with pytest.raises(UsageError, match="not both"):
        StudyConfig.from_flat({"region": "FRA", "carbon_intensity": 50})
    with pytest.raises(UsageError, match="--carbon-intensity -3"):
        StudyConfig.from_flat({"carbon_intensity": -3})


def test_serve_bench_rows_carry_co2e_in_every_kind(measurement):
    from greenray.config import ServingConfig
    from greenray.config.policy import parse_policy
    from greenray.serve import rows
    from greenray.serve.loadgen import SendStats
    from greenray.serve.records import RunEnd
    from greenray.serve.run import RunPlan, RunResult, ServedModel

    config = BenchConfig().replace(region="POL")
    grid = carbon.lookup("POL").g_per_kwh
    assert config.deploy.energy.g_per_kwh == grid
    batch = {"batch_id": 0, "size": 2, "energy_j": 7.2, "in_run": True, "started_s": 1.0, "co2e_g": None}
    result = RunResult(
        timings=[],
        ends=[RunEnd(energy=measurement, served=2, batches=1)],
        records=[{"batches": [batch], "requests": {}}],
        send_stats=SendStats(2, 1.0, 1.0, 0.0, 0.0),
        still_pending=0,
    )
    key = rows.RunKey("r0", "m", RunPlan(1.0, parse_policy("fixed:2"), 2))
    infos = [{"weights_source": "random", "image_size": 32, "node_id": "n", "model_device": "cpu"}]
    model = ServedModel("m", None, infos, [], None, {}, ServingConfig(), 0, config.deploy.energy.g_per_kwh)
    (batch_row,) = rows.batch_rows(key, model, result)
    assert batch_row["co2e_g"] == pytest.approx(7.2 / KWH * grid)
    (replica_row,) = rows.replica_rows(key, model, result)
    run_row = rows.run_row(key, model, result, [])
    for row in (replica_row, run_row):
        assert row["co2e_g"] == pytest.approx(measurement.joules / KWH * grid)


def test_the_hpo_summary_shows_grams_beside_joules():
    trials = pd.DataFrame(
        {
            "status": ["ok", "ok"],
            "round": [0, 1],
            "repetition": [0, 0],
            "strategy": ["random"] * 2,
            "accuracy": [0.5, 0.7],
            "config": ['{"lr": 0.01}', '{"lr": 0.001}'],
            "energy_j": [1800.0, 3600.0],
            "idle_free_energy_j": [1000.0, 2000.0],
            "co2e_g": [0.2, 0.4],
            "energy_source": ["simulated"] * 2,
        }
    )
    summary = summarize(trials, 2)
    assert summary.co2e_g == pytest.approx(0.6)
    lines = describe(summary)
    assert any(line.startswith("emissions") and "0.6 g CO2e" in line for line in lines)
    assert not any("CO2e" in line for line in describe(summarize(trials.drop(columns="co2e_g"), 2)))


def test_the_report_shows_grams_beside_joules(tmp_path):
    from greenray.analysis.carbon import emissions_section
    from greenray.analysis.report import Report

    trials = pd.DataFrame(
        {
            "strategy": ["bayes", "bayes", "grid"],
            "net": ["cnn"] * 3,
            "dataset": ["digits"] * 3,
            "energy_j": [3600.0, 7200.0, 1800.0],
            "co2e_g": [0.5, 1.0, None],  # the grid study ran without an intensity
        }
    )
    runs = pd.DataFrame(
        {"model": ["m"], "precision": ["fp32"], "energy_j": [36.0], "co2e_g": [0.004], "served": [8]}
    )
    report = Report(tmp_path, simulated=False)
    emissions_section(report, trials, runs)
    table = pd.read_csv(tmp_path / "tables" / "emissions_trials.csv")
    assert table.to_dict("records") == [
        {
            "strategy": "bayes",
            "net": "cnn",
            "dataset": "digits",
            "rows": 2,
            "energy_j": 10800.0,
            "co2e_g": 1.5,
        }
        | {"g_per_kwh": pytest.approx(500.0)}
    ]
    served = pd.read_csv(tmp_path / "tables" / "emissions_runs.csv").iloc[0]
    assert served["co2e_mg_per_item"] == pytest.approx(0.5) and served["g_per_kwh"] == pytest.approx(400.0)
    assert any(part.startswith("## Emissions") for part in report.parts)

    bare = Report(tmp_path / "bare", simulated=False)
    emissions_section(bare, trials.drop(columns="co2e_g"), None)
    assert not bare.parts and any("no emissions" in line for line in bare.cannot)


def test_serve_benchs_table_shows_grams_only_where_an_intensity_was_given():
    from greenray.ui import runs_table

    row = {"model": "m", "policy": "fixed:2", "energy_j": 3.6, "energy_source": "simulated"}
    headings = [column.header for column in runs_table([row | {"co2e_g": 0.001}]).columns]
    assert "g CO2e" in headings and headings[-1] == "source"
    assert "g CO2e" not in [column.header for column in runs_table([row]).columns]
