"""The few lines `greenray hpo` ends with: the best accuracy, its configuration and round, and
the energy spent in all and until that best was first reached."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from greenray.analysis.hpo import convergence


@dataclass(frozen=True)
class StudySummary:
    trials: int
    budget: int
    failed: int
    best_accuracy: float | None  # the best round's mean over its repetitions
    best_round: int | None  # the first round that reached it (0-based)
    rounds: int
    best_config: dict
    best_run_accuracy: float | None  # the best single trial
    energy_column: str | None  # idle_free_energy_j where every trial has it, else energy_j
    total_j: float | None  # every trial, failed ones included
    until_best_j: float | None  # every trial of the rounds up to the best one
    sources: tuple[str, ...]


def summarize(trials: pd.DataFrame, budget: int) -> StudySummary:
    ok = trials[trials["status"] == "ok"] if len(trials) else trials
    column = _energy_column(trials)
    energy = pd.to_numeric(trials[column], errors="coerce") if column else None
    best_accuracy = best_round = best_run = None
    best_config: dict = {}
    if len(ok):
        curve = convergence(ok, ["strategy"], None)
        first = curve.loc[curve["round_accuracy"].idxmax()]
        best_accuracy, best_round = float(first["round_accuracy"]), int(first["round"])
        best_config = json.loads(ok.loc[ok["round"] == best_round, "config"].iloc[0])
        best_run = float(ok["accuracy"].max())
    until = None
    if energy is not None and best_round is not None:
        until = _sum(energy[trials["round"] <= best_round])
    return StudySummary(
        trials=len(trials),
        budget=budget,
        failed=int((trials["status"] != "ok").sum()) if len(trials) else 0,
        best_accuracy=best_accuracy,
        best_round=best_round,
        rounds=int(trials["round"].nunique()) if len(trials) else 0,
        best_config=best_config,
        best_run_accuracy=best_run,
        energy_column=column,
        total_j=_sum(energy) if energy is not None else None,
        until_best_j=until,
        sources=tuple(sorted(set(trials["energy_source"].dropna().astype(str)))) if len(trials) else (),
    )


def _energy_column(trials: pd.DataFrame) -> str | None:
    """Idle-free energy (what the study reported for training) where every finished trial
    has it, else total energy."""
    ok = trials[trials["status"] == "ok"] if len(trials) else trials
    for column in ("idle_free_energy_j", "energy_j"):
        if column in ok and len(ok) and ok[column].notna().all():
            return column
    return None


def _sum(values: pd.Series) -> float | None:
    """The sum of the trials that have a number (a trial that failed early may have none)."""
    return float(values.sum()) if values.notna().any() else None


def describe(s: StudySummary) -> list[str]:
    """The summary as plain sentences."""
    lines = [f"trials: {s.trials} of {s.budget} recorded, {s.failed} failed"]
    if s.best_accuracy is None:
        lines.append("best accuracy: none (no trial finished)")
        return lines
    config = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.best_config.items()
    )
    lines.append(
        f"best accuracy: {s.best_accuracy:.4f} (mean of round {s.best_round}'s repetitions, "
        f"first reached in round {s.best_round} of {s.rounds}; best single trial {s.best_run_accuracy:.4f})"
    )
    lines.append(f"best configuration: {config}")
    label = _label(s.sources)
    if s.energy_column is None or s.total_j is None:
        lines.append(f"energy: not measured{label}")
        return lines
    kind = "idle-free" if s.energy_column == "idle_free_energy_j" else "total (no idle baseline)"
    lines.append(
        f"energy ({kind}){label}: {s.total_j:.1f} J in all, {s.until_best_j:.1f} J until the best round"
    )
    return lines


def _label(sources: tuple[str, ...]) -> str:
    if not sources or sources == ("none",):
        return " (energy source: none, nothing was measurable)"
    if "simulated" in sources:
        return " [simulated, not a measurement]"
    return f" (source: {', '.join(sources)})"
