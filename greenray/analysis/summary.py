"""The few lines `greenray hpo` ends with: the best accuracy, its configuration and round, the
energy spent in all and until that best was first reached, and, where levers were on, which
one stopped the study, the energy spent against the budget and the accuracy / energy front."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from greenray.analysis.hpo import convergence

FRONT_SHOWN = 10  # front trials the summary prints (pareto.csv has them all)
# What each --objective made the searcher optimise, in words.
OBJECTIVE_WORDS = {
    "accuracy": "accuracy, maximised (the study's: each round's mean test accuracy over its repetitions)",
    "accuracy-per-kj": "accuracy per kJ, maximised (accuracy_per_kj: a trial's accuracy over its kilojoules, "
    "idle-free where known; each round's mean)",
    "pareto": "the accuracy / energy front (accuracy maximised and energy minimised together)",
}


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
    stopped: int = 0  # trials stopped before their last epoch (a scheduler or a lever)
    stopped_by: str | None = None  # the lever that stopped the study, in words
    energy_budget_j: float | None = None
    budget_spent_j: float | None = None  # energy_column of every trial: what the budget counts
    front: tuple[dict, ...] = ()  # the accuracy / energy front of a pareto study, by energy
    co2e_g: float | None = None  # every trial's co2e_g (of energy_j), where a grid intensity was given
    objective: str | None = None  # what the searcher optimised (--objective)
    trained_config: dict | None = None  # best_config as its trials trained it, where that differs


def summarize(
    trials: pd.DataFrame,
    budget: int,
    *,
    levers=None,
    stopped_by=None,
    front: pd.DataFrame | None = None,
    trained: Callable[[dict], dict] | None = None,
    objective: str | None = None,
) -> StudySummary:
    """The summary of a study's rows; `levers` (its LeversConfig: the objective, and the levers'
    lines), `stopped_by` (the Stop a lever made) and `front` (its pareto.csv table) add the levers'
    lines; `trained` maps a configuration to the values its trials trained with (Adam's betas
    capped below 1: greenray.tune.space.as_trained); `objective` is what the searcher optimised
    (--objective), for a search."""
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
    status = trials["status"] if len(trials) else pd.Series(dtype=str)
    budget_j = getattr(levers, "energy_budget", None)
    spent = _sum(energy) if budget_j is not None and energy is not None else None
    return StudySummary(
        trials=len(trials),
        budget=budget,
        failed=int((status == "failed").sum()),
        best_accuracy=best_accuracy,
        best_round=best_round,
        rounds=int(trials["round"].nunique()) if len(trials) else 0,
        best_config=best_config,
        best_run_accuracy=best_run,
        energy_column=column,
        total_j=_sum(energy) if energy is not None else None,
        until_best_j=until,
        sources=tuple(sorted(set(trials["energy_source"].dropna().astype(str)))) if len(trials) else (),
        stopped=int((status == "stopped").sum()),
        stopped_by=f"{stopped_by.lever} ({stopped_by.detail})" if stopped_by is not None else None,
        energy_budget_j=budget_j,
        budget_spent_j=spent,
        front=tuple(front.to_dict("records")) if front is not None else (),
        co2e_g=_sum(pd.to_numeric(trials["co2e_g"], errors="coerce")) if "co2e_g" in trials else None,
        objective=objective,
        trained_config=_as_trained(best_config, trained),
    )


def _as_trained(config: dict, trained: Callable[[dict], dict] | None) -> dict | None:
    """`config` as trained, where `trained` changes any of its values; else None."""
    if trained is None or not config:
        return None
    values = trained(config)
    return values if values != config else None


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
    stopped = f", {s.stopped} stopped early" if s.stopped else ""
    lines = [f"trials: {s.trials} of {s.budget} recorded, {s.failed} failed{stopped}"]
    if s.stopped_by:
        lines.append(f"stopped by: {s.stopped_by}")
    label = _label(s.sources)
    if s.energy_budget_j is not None:
        spent = f"{s.budget_spent_j:.1f} J" if s.budget_spent_j is not None else "nothing measured"
        lines.append(f"energy budget{label}: {spent} of {s.energy_budget_j:g} J spent ({s.energy_column})")
    if s.best_accuracy is None:
        lines.append("best accuracy: none (no trial finished)")
        return lines
    if s.objective is not None:
        lines.append(f"objective: {OBJECTIVE_WORDS.get(s.objective, s.objective)}")
    config = _trained_words(s.best_config, s.trained_config)
    lines.append(
        f"best accuracy: {s.best_accuracy:.4f} (mean of round {s.best_round}'s repetitions, "
        f"first reached in round {s.best_round} of {s.rounds}; best single trial {s.best_run_accuracy:.4f})"
    )
    as_trained = " (as trained)" if s.trained_config else ""
    lines.append(f"best configuration{as_trained}: {config}")
    if s.energy_column is None or s.total_j is None:
        lines.append(f"energy: not measured{label}")
        return lines
    kind = "idle-free" if s.energy_column == "idle_free_energy_j" else "total (no idle baseline)"
    lines.append(
        f"energy ({kind}){label}: {s.total_j:.1f} J in all, {s.until_best_j:.1f} J until the best round"
    )
    if s.co2e_g is not None:
        lines.append(f"emissions{label}: {s.co2e_g:.4g} g CO2e (every trial's energy_j, idle included)")
    lines += _front_lines(s.front)
    return lines


def _trained_words(searched: dict, trained: dict | None) -> str:
    """key=value for each value trained, with the searcher's own beside the ones that differ
    (beta1=0.999 (searched 1): Adam needs a beta below 1)."""
    parts = []
    for key, value in (trained or searched).items():
        text = _value(key, value)
        if trained and key in searched and searched[key] != value:
            text += f" (searched {_value(key, searched[key]).split('=', 1)[1]})"
        parts.append(text)
    return ", ".join(parts)


def _value(key: str, value) -> str:
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def _front_lines(front: tuple[dict, ...]) -> list[str]:
    if not front:
        return []
    column = next(c for c in ("idle_free_energy_j", "energy_j") if c in front[0])
    lines = [f"accuracy / energy front ({len(front)} trials, {column}; all in pareto.csv):"]
    for row in front[:FRONT_SHOWN]:
        lines.append(
            f"  {row['accuracy']:.4f} at {row[column]:.1f} J (round {row['round']}, "
            f"repetition {row['repetition']}): {_config(row.get('config'))}"
        )
    if len(front) > FRONT_SHOWN:
        lines.append(f"  ... and {len(front) - FRONT_SHOWN} more")
    return lines


def _config(text) -> str:
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return ""
    return ", ".join(_value(k, v) for k, v in values.items())


def _label(sources: tuple[str, ...]) -> str:
    if not sources or sources == ("none",):
        return " (energy source: none, nothing was measurable)"
    if "simulated" in sources:
        return " [simulated, not a measurement]"
    return f" (source: {', '.join(sources)})"
