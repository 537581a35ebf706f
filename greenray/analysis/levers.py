"""The report's green levers: the energy each lever saved against the same study without it
(where both folders are given), which lever stopped each study, and the accuracy / energy
front of the studies searched with `--objective pareto` (dominated trials drawn in grey).
From stored results only: each hpo folder's study.json says which levers it ran with."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from greenray.analysis import figures
from greenray.analysis.hpo import convergence
from greenray.analysis.load import ok_rows
from greenray.analysis.provenance import choose_energy
from greenray.config import LeversConfig, StudyConfig, adam_count
from greenray.errors import UsageError
from greenray.tune.objectives import PARETO, front

# "At equal accuracy": a study with levers counts as reaching the study without them once a
# round's mean accuracy reaches this share of the other's best.
EQUAL_SHARE = 0.98
# Settings that say how a study ran, not what it searched: studies differing only in these are
# the same study.
INCIDENTAL = {
    "max_concurrent",
    "cpus_per_trial",
    "gpus_per_trial",
    "data_dir",
    "download",
    "interval_ms",
    "require_energy",
    "idle_seconds",
}
LEVERS = tuple(LeversConfig.model_fields)


def study_record(folder: str | Path) -> dict | None:
    """A folder's study.json, or None where it has none (or an unreadable one)."""
    path = Path(folder) / "study.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def study_config(record: dict | None) -> StudyConfig | None:
    """The StudyConfig a study.json holds (nested `config`, or the older flat `settings`)."""
    if not record:
        return None
    try:
        if "config" in record:
            return StudyConfig.checked(record["config"])
        if "settings" in record:
            return StudyConfig.from_flat(record["settings"])
    except UsageError:
        return None
    return None


def levers_on(config: StudyConfig) -> dict[str, object]:
    """The levers a study ran with (flat name -> value), the searched extras of --params too."""
    on = {k: v for k, v in config.levers.model_dump().items() if v != LeversConfig.model_fields[k].default}
    if str(config.search.params) != str(config.adam_params):
        on["params"] = config.search.params
    return on


def same_study(config: StudyConfig) -> str:
    """What two studies must share to be the same study with and without some levers."""
    flat = {k: v for k, v in config.flat().items() if k not in INCIDENTAL and k not in LEVERS}
    flat["params"] = adam_count(flat["params"])
    return json.dumps(flat, sort_keys=True, default=str)


def _describe(on: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in on.items()) or "none"


def study_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per hpo folder: its levers, what stopped it, best accuracy, energy, and the
    identity its lever-free twin must share."""
    energy = choose_energy(trials, "idle_free_energy_j", "energy_j", "no idle baseline was stored").column
    rows = []
    for folder, part in trials.groupby("folder", sort=True):
        record = study_record(folder)
        config = study_config(record)
        if config is None:
            continue
        ok = ok_rows(part)
        best = float(ok.groupby("round")["accuracy"].mean().max()) if len(ok) else math.nan
        spent = pd.to_numeric(part[energy], errors="coerce").sum(min_count=1) if energy else math.nan
        stop = (record or {}).get("stop") or {}
        rows.append(
            {
                "folder": folder,
                "identity": same_study(config),
                "levers": _describe(levers_on(config)),
                "lever_count": len(levers_on(config)),
                "stopped_by": stop.get("lever", ""),
                "trials": len(part),
                "stopped_trials": int((part["status"].astype(str) == "stopped").sum()),
                "best_accuracy": best,
                "energy_j": float(spent),
            }
        )
    return pd.DataFrame(rows)


def energy_until(trials: pd.DataFrame, energy: str | None, accuracy: float) -> float:
    """Energy of every trial (failed and stopped ones too) up to the first round whose mean
    accuracy reached `accuracy`; NaN where none did."""
    if energy is None or not math.isfinite(accuracy):
        return math.nan
    curve = convergence(ok_rows(trials), ["folder"], energy, spent=trials)
    reached = curve[curve["best_so_far"] >= accuracy]
    return float(reached["energy_so_far_j"].iloc[0]) if len(reached) else math.nan


def savings(trials: pd.DataFrame) -> pd.DataFrame:
    """Per folder with levers on: the energy it spent against the same study without them (a
    folder of the same settings and no lever), in all and until it reached EQUAL_SHARE of the
    lever-free study's best accuracy, and the best accuracy of both."""
    studies = study_table(trials)
    if studies.empty:
        return studies
    energy = choose_energy(trials, "idle_free_energy_j", "energy_j", "no idle baseline was stored").column
    rows = []
    plain = studies[studies["lever_count"] == 0]
    for lever in studies[studies["lever_count"] > 0].itertuples():
        twins = plain[plain["identity"] == lever.identity]
        for twin in twins.itertuples():
            target = EQUAL_SHARE * twin.best_accuracy
            mine = energy_until(trials[trials["folder"] == lever.folder], energy, target)
            theirs = energy_until(trials[trials["folder"] == twin.folder], energy, target)
            saved = 100 * (1 - lever.energy_j / twin.energy_j) if twin.energy_j else math.nan
            spread = run_spread_pct(twins["energy_j"], trials[trials["folder"] == twin.folder], energy)
            verdict = _verdict(lever, twin, saved, spread)
            rows.append(
                {
                    "levers": lever.levers,
                    "stopped_by": lever.stopped_by,
                    "folder": Path(lever.folder).name,
                    "without_levers": Path(twin.folder).name,
                    "energy_j": lever.energy_j,
                    "energy_without_j": twin.energy_j,
                    "difference_pct": saved,
                    "interval_pct": _interval(saved, spread),
                    "saved_pct": saved if verdict == SAVED else math.nan,
                    "verdict": verdict,
                    "target_accuracy": target,
                    "energy_to_target_j": mine,
                    "energy_to_target_without_j": theirs,
                    "saved_to_target_pct": 100 * (1 - mine / theirs)
                    if theirs and verdict == SAVED
                    else math.nan,
                    "best_accuracy": lever.best_accuracy,
                    "best_accuracy_without": twin.best_accuracy,
                    "stopped_trials": lever.stopped_trials,
                }
            )
    return pd.DataFrame(rows)


SAVED = "saved"


def run_spread_pct(twin_energies: pd.Series, twin_trials: pd.DataFrame, energy: str | None) -> float:
    """How far apart two runs of the same study may lie (% of its energy): the range of the
    lever-free runs where several were given; else the median range of one round's repetitions
    (the same configuration trained again) relative to their mean; NaN where neither is known."""
    known = pd.to_numeric(twin_energies, errors="coerce").dropna()
    if len(known) >= 2 and known.mean() > 0:
        return float(100 * (known.max() - known.min()) / known.mean())
    if energy is None or "round" not in twin_trials:
        return math.nan
    ok = (
        ok_rows(twin_trials)
        .assign(_e=lambda f: pd.to_numeric(f[energy], errors="coerce"))
        .dropna(subset=["_e"])
    )
    rounds = ok.groupby("round")["_e"].agg(["min", "max", "mean", "size"])
    rounds = rounds[(rounds["size"] >= 2) & (rounds["mean"] > 0)]
    if rounds.empty:
        return math.nan
    return float(100 * ((rounds["max"] - rounds["min"]) / rounds["mean"]).median())


def _interval(saved: float, spread: float) -> str:
    if not math.isfinite(saved):
        return ""
    if not math.isfinite(spread):
        return "spread unknown"
    return f"{saved - spread:.1f} to {saved + spread:.1f}"


def _verdict(lever, twin, saved: float, spread: float) -> str:
    """Whether the difference is a saving: the lever must have acted (stopped the study, or
    trials), and the difference must exceed the run-to-run spread where that is known."""
    acted = bool(lever.stopped_by) or lever.stopped_trials > 0 or lever.trials < twin.trials
    if not acted:
        return "not claimed: the lever never acted (same trials, none stopped)"
    if not math.isfinite(saved) or saved <= 0:
        return "no saving"
    if math.isfinite(spread) and saved <= spread:
        return f"not claimed: within the run-to-run spread ({spread:.1f}%)"
    return SAVED


def pareto_folders(trials: pd.DataFrame) -> list[str]:
    """The folders of studies searched with --objective pareto."""
    found = []
    for folder in sorted(trials["folder"].unique()) if "folder" in trials else []:
        config = study_config(study_record(folder))
        if config is not None and config.levers.objective == PARETO:
            found.append(folder)
    return found


def fronts(trials: pd.DataFrame, energy: str) -> pd.DataFrame:
    """The front of each pareto study's ok trials, with a `study` column."""
    parts = []
    for folder in pareto_folders(trials):
        ok = ok_rows(trials[trials["folder"] == folder])
        kept = [c for c in ("trial_id", "round", "repetition", "accuracy", energy, "config") if c in ok]
        parts.append(front(ok, energy)[kept].assign(study=Path(folder).name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def draw_fronts(trials: pd.DataFrame, energy: str, path: Path, title: str) -> Path:
    """A panel per pareto study: every ok trial's energy against its accuracy, the dominated
    ones in grey, the front in colour joined by its staircase."""
    folders = pareto_folders(trials)
    cols = min(3, len(folders))
    fig, axes = figures._figure(math.ceil(len(folders) / cols), cols, title)
    for ax, folder in zip(axes.flat, folders, strict=False):
        ok = ok_rows(trials[trials["folder"] == folder])
        on = front(ok, energy)
        dominated = ok.drop(index=on.index)
        ax.scatter(dominated[energy], dominated["accuracy"], s=14, color="0.65", label="dominated")
        ax.step(on[energy], on["accuracy"], where="post", color="C2", alpha=0.6)
        ax.scatter(on[energy], on["accuracy"], s=22, color="C2", zorder=3, label="front")
        ax.set_title(Path(folder).name, fontsize=10)
        ax.set_xlabel(f"energy per trial (J, {energy})")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(folders) :]:
        ax.set_visible(False)
    return figures._save(fig, path)


def lever_section(report, trials: pd.DataFrame) -> None:
    """The report's "Green levers" section, where some folder ran with a lever on; what it
    cannot show goes to report.cannot."""
    studies = study_table(trials) if "folder" in trials else pd.DataFrame()
    if studies.empty or (studies["lever_count"] == 0).all():
        return
    energy = choose_energy(trials, "idle_free_energy_j", "energy_j", "no idle baseline was stored")
    report.heading("Green levers")
    shown = studies.drop(columns=["identity", "lever_count"]).assign(folder=lambda f: f["folder"].map(_name))
    report.table(
        shown,
        "levers_studies",
        f"**Every study's levers**, the lever that stopped it (if any), its trials (stopped early: by a "
        f"scheduler or a lever), best round-mean accuracy and energy of every trial; {energy.caption()}.",
    )
    saved = savings(trials)
    if saved.empty:
        report.cannot.append(
            "no energy saved by a lever: no folder of the same study without levers was given beside "
            "one with."
        )
    else:
        report.table(
            saved,
            "levers_savings",
            f"**Energy saved by the levers** against the same study without them: in all, and until a "
            f"round's mean accuracy first reached {EQUAL_SHARE:g} x the lever-free study's best (equal "
            f"accuracy); failed and stopped trials count. A saving is claimed (`saved_pct`) only where "
            f"the lever acted (stopped the study or trials) and the difference exceeds the run-to-run "
            f"spread (the range of several lever-free runs, else of one round's repetitions): "
            f"`interval_pct` is the difference plus and minus that spread; {energy.caption()}.",
        )
    if energy.column is None or not pareto_folders(trials):
        return
    table = fronts(trials, energy.column)
    report.table(
        table,
        "levers_pareto",
        f"**Accuracy / energy front** of each study searched with --objective pareto (ok trials that "
        f"no other beats on both); {energy.caption()}.",
    )
    report.figure(
        lambda p, t: draw_fronts(trials, energy.column, p, t),
        "levers_pareto",
        f"Accuracy against energy per trial, front in colour ({energy.title()})",
        f"Every ok trial of each pareto study; grey: dominated (another trial is as accurate for less "
        f"energy, or more accurate for as little); {energy.caption()}.",
    )


def _name(folder: str) -> str:
    return Path(folder).name
