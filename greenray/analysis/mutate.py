"""The report of `greenray mutate` folders (Wang et al.): each mutated hyperparameter's Spearman
correlation with energy and with accuracy (with p-values), and the energy change of each
mutation against the base configuration, serial beside parallel."""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import spearmanr

from greenray.analysis.load import ok_rows
from greenray.analysis.provenance import choose_energy

STRATEGY = "mutate"  # the strategy column of a mutation study's rows (greenray.tune.mutate)


def split(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the search trials, the mutation trials) of the trials table."""
    if "strategy" not in trials:
        return trials, trials.iloc[0:0]
    mutated = trials["strategy"].astype(str) == STRATEGY
    return trials[~mutated], trials[mutated]


def mode_name(parallel) -> str:
    """serial, or parallel xN: how a mutation study ran its trials."""
    try:
        n = int(parallel)
    except (TypeError, ValueError):
        return "serial"
    return "serial" if n <= 1 else f"parallel x{n}"


def _spearman(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Spearman's rho and its two-sided p; NaN where either side is constant or too short."""
    x, y = pd.to_numeric(x, errors="coerce"), pd.to_numeric(y, errors="coerce")
    both = pd.concat([x, y], axis=1).dropna()
    if len(both) < 3 or both.iloc[:, 0].nunique() < 2 or both.iloc[:, 1].nunique() < 2:
        return math.nan, math.nan
    result = spearmanr(both.iloc[:, 0], both.iloc[:, 1])
    return float(result.statistic), float(result.pvalue)


def correlations(trials: pd.DataFrame, energy: str) -> pd.DataFrame:
    """Per mode and mutated hyperparameter: Spearman rho and p of its value (over the base and
    that hyperparameter's mutants, every ok trial) against energy and against accuracy."""
    rows = []
    ok = ok_rows(trials).assign(mode=lambda f: f["parallel"].map(mode_name))
    for (mode, name), _ in ok.dropna(subset=["mutated"]).groupby(["mode", "mutated"], sort=True):
        part = ok[(ok["mode"] == mode) & ((ok["mutated"] == name) | (ok["mutation"] == "base"))]
        rho_e, p_e = _spearman(part[name], part[energy])
        rho_a, p_a = _spearman(part[name], part["accuracy"])
        rows.append(
            {
                "mode": mode,
                "hyperparameter": name,
                "runs": len(part),
                "rho_energy": rho_e,
                "p_energy": p_e,
                "rho_accuracy": rho_a,
                "p_accuracy": p_a,
            }
        )
    return pd.DataFrame(rows)


def mutations(trials: pd.DataFrame, energy: str) -> pd.DataFrame:
    """Per mode and mutation: mean energy and accuracy over its ok trials, and their change
    against the base configuration of the same mode."""
    ok = ok_rows(trials).assign(mode=lambda f: f["parallel"].map(mode_name))
    table = (
        ok.groupby(["mode", "mutation"], sort=False)
        .agg(runs=("accuracy", "size"), energy_j=(energy, "mean"), accuracy=("accuracy", "mean"))
        .reset_index()
    )
    base = table[table["mutation"] == "base"].set_index("mode")
    table["energy_change_pct"] = table.apply(
        lambda r: (
            100 * (r["energy_j"] / base.loc[r["mode"], "energy_j"] - 1)
            if r["mode"] in base.index
            else math.nan
        ),
        axis=1,
    )
    table["accuracy_change"] = table.apply(
        lambda r: r["accuracy"] - base.loc[r["mode"], "accuracy"] if r["mode"] in base.index else math.nan,
        axis=1,
    )
    return table


def side_by_side(table: pd.DataFrame, index: str, values: list[str]) -> pd.DataFrame:
    """A long per-mode table laid out with the modes side by side (serial first)."""
    modes = sorted(table["mode"].unique(), key=lambda m: (m != "serial", m))
    wide = table.pivot(index=index, columns="mode", values=values)
    wide = wide.reindex(columns=[(v, m) for m in modes for v in values])
    wide.columns = [f"{m}: {v}" for v, m in wide.columns]
    order = list(dict.fromkeys(table[index]))
    return wide.reindex(order).reset_index()


def mutate_section(report, trials: pd.DataFrame) -> None:
    """The report's section on mutation studies (nothing where none was given)."""
    if trials.empty:
        return
    energy = choose_energy(ok_rows(trials), "idle_free_energy_j", "energy_j", "no idle baseline was stored")
    report.heading("Hyperparameters against energy (greenray mutate)")
    report.text(
        "A base configuration and one mutant per hyperparameter and step, one value changed at a time "
        "(Wang et al.); serial runs one trial at a time, parallel xN runs N at once (on a GPU, sharing it: "
        "each trial's energy is then the whole GPU's over its window)."
    )
    if energy.column is None:
        report.cannot.append(
            "no mutation statistics: the trials' energy was not measured (energy_source none)."
        )
        return
    long = correlations(trials, energy.column)
    if not long.empty:
        report.table(
            side_by_side(
                long, "hyperparameter", ["runs", "rho_energy", "p_energy", "rho_accuracy", "p_accuracy"]
            ),
            "mutate_correlations",
            "**Spearman correlation of each hyperparameter** with energy and with accuracy "
            f"(scipy.stats.spearmanr, two-sided p), over the base and that hyperparameter's mutants, "
            f"serial beside parallel; {energy.caption()}.",
        )
    report.table(
        side_by_side(
            mutations(trials, energy.column),
            "mutation",
            ["runs", "energy_j", "energy_change_pct", "accuracy", "accuracy_change"],
        ),
        "mutate_changes",
        f"**Energy change per mutation** against the base configuration (mean over repetitions), with the "
        f"accuracy beside it, serial beside parallel; {energy.caption()}.",
    )
