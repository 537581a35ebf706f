"""The report's emissions: grams of CO2e beside the Joules they were counted from, for the trials
and serving runs whose rows carry `co2e_g` (a grid intensity was given: --carbon-intensity or
--region)."""

from __future__ import annotations

import pandas as pd

JOULES_PER_KWH = 3.6e6
TRIAL_KEYS = ("strategy", "net", "dataset")
RUN_KEYS = ("model", "precision")


def emissions_section(report, trials: pd.DataFrame | None, runs: pd.DataFrame | None) -> None:
    """An emissions table for the trials and one for the runs that carry co2e_g; nothing (and
    one sentence in what the report cannot show) where none does."""
    tables = [
        (emissions(trials, TRIAL_KEYS, None), "emissions_trials", "**Emissions of the trials**"),
        (emissions(runs, RUN_KEYS, "served"), "emissions_runs", "**Emissions of the serving runs**"),
    ]
    tables = [(table, name, title) for table, name, title in tables if table is not None]
    if not tables:
        report.cannot.append(
            "no emissions: no row carries co2e_g (give --carbon-intensity or --region when measuring)."
        )
        return
    report.heading("Emissions")
    for table, name, title in tables:
        report.table(
            table,
            name,
            f"{title}: energy_j summed (idle included) and its grams of CO2e at the grid intensity "
            "given when they ran (g_per_kwh, implied by the two); rows without co2e_g are left out.",
        )


def emissions(rows: pd.DataFrame | None, keys: tuple[str, ...], items: str | None) -> pd.DataFrame | None:
    """Per group of `keys`: rows, Joules, grams of CO2e and the intensity they imply; with
    `items` (a count column), also milligrams per item."""
    if rows is None or "co2e_g" not in rows or "energy_j" not in rows:
        return None
    counted = rows[pd.to_numeric(rows["co2e_g"], errors="coerce").notna()].copy()
    if counted.empty:
        return None
    present = [k for k in keys if k in counted]
    for column in ("energy_j", "co2e_g", *([items] if items else [])):
        counted[column] = pd.to_numeric(counted[column], errors="coerce")
    spec = {"rows": ("co2e_g", "size"), "energy_j": ("energy_j", "sum"), "co2e_g": ("co2e_g", "sum")}
    if items and items in counted:
        spec["items"] = (items, "sum")
    grouped = counted.groupby(present, dropna=False) if present else counted.groupby(lambda _: "all")
    table = grouped.agg(**spec).reset_index()
    if not present:
        table = table.drop(columns="index")
    table["g_per_kwh"] = table["co2e_g"] / (table["energy_j"] / JOULES_PER_KWH)
    if "items" in table:
        table["co2e_mg_per_item"] = 1000.0 * table["co2e_g"] / table["items"].where(table["items"] > 0)
    return table
