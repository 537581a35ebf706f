"""The training study's search statistics (Experiment 1): convergence curves (best-so-far of
each round's mean accuracy over its repetitions), the best accuracy and the round it was
reached, and the energy spent until the best and until a target accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# What names one search; the architecture factors join them where they vary.
DESCRIPTORS = ("dataset", "net", "params", "strategy")
ARCHITECTURE = ("n_linear", "n_conv", "relu")
# Without an explicit target, a search's target is this share of the best that any strategy
# reached on the same problem (net, data set, parameter count, architecture).
RELATIVE_TARGET = 0.95
# A trial that shared its GPU measured the whole GPU over its window, its neighbours' work
# included: the sums here leave such trials' rounds out rather than count a GPU twice.
SHARERS = "gpu_sharers_max"


@dataclass(frozen=True)
class SearchStats:
    keys: list[str]  # the columns that name one search
    curves: pd.DataFrame  # per search and round
    best: pd.DataFrame  # per search: best, its round, energy until it and until the target
    summary: pd.DataFrame  # per strategy


def study_keys(trials: pd.DataFrame) -> list[str]:
    """The columns that tell one search from another in these trials."""
    keys = ["experiment"] if "experiment" in trials and trials["experiment"].nunique() > 1 else []
    keys += [c for c in DESCRIPTORS if c in trials]
    problem = [c for c in ("experiment", "dataset", "net") if c in trials]
    keys += [c for c in ARCHITECTURE if c in trials and _varies_within(trials, c, problem)]
    # The same search stored in two folders: keep their rounds apart.
    if "folder" in trials and keys and (trials.groupby(keys, dropna=False)["folder"].nunique() > 1).any():
        keys.append("folder")
    return keys


def _varies_within(trials: pd.DataFrame, column: str, groups: list[str]) -> bool:
    """Whether `column` takes two values or more for one data set and net (a dense net's conv
    layers differ from SimpleCNN's without being a factor of the search)."""
    if not groups:
        return trials[column].nunique(dropna=True) > 1
    return bool((trials.groupby(groups, dropna=False)[column].nunique(dropna=True) > 1).any())


def search_stats(
    trials: pd.DataFrame, energy: str | None, target: float | None = None, spent: pd.DataFrame | None = None
) -> SearchStats:
    """All search statistics of some ok trials; `energy` is the column to sum (None: no energy)
    and `spent` the trials whose energy counts (failed ones too: their Joules were spent)."""
    keys = study_keys(trials)
    curves = convergence(trials, keys, energy, spent)
    best = best_accuracy(trials, curves, keys)
    best = best.merge(until_target(curves, best, keys, target), on=keys, how="left")
    return SearchStats(keys, curves, best, strategy_summary(best))


def convergence(
    trials: pd.DataFrame, keys: list[str], energy: str | None, spent: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per search and round: the round's mean accuracy over its ok repetitions, the
    best so far, and the energy of the round and of every round up to it. The energy is that
    of `spent` (default: `trials`): pass every trial, failed ones included, since a failed
    trial's Joules were spent all the same; a round where every repetition failed keeps its
    energy and has no accuracy. A round with a trial that shared its GPU (gpu_sharers_max > 1,
    or a MIG instance) has no energy: see `shared_gpu_note`."""
    spent = trials if spent is None else spent
    accuracy = (
        trials.groupby([*keys, "round"], dropna=False)
        .agg(round_accuracy=("accuracy", "mean"), repetitions=("accuracy", "size"))
        .reset_index()
    )
    frame = spent.assign(
        _energy=pd.to_numeric(spent[energy]) if energy else float("nan"), _shared=shared_gpu(spent)
    )
    joules = (
        frame.groupby([*keys, "round"], dropna=False)
        .agg(round_energy_j=("_energy", lambda s: s.sum(min_count=1)), energy_shared=("_shared", "any"))
        .reset_index()
    )
    # Trials that shared a GPU each hold the GPU's energy over their window: no sum of them.
    joules.loc[joules["energy_shared"], "round_energy_j"] = float("nan")
    rounds = (
        accuracy.merge(joules, on=[*keys, "round"], how="outer")
        .astype({"repetitions": "Int64"})
        .sort_values([*keys, "round"], kind="stable")
        .reset_index(drop=True)
    )
    rounds["repetitions"] = rounds["repetitions"].fillna(0)
    grouped = rounds.groupby(keys, dropna=False, sort=False)
    rounds["best_so_far"] = grouped["round_accuracy"].cummax()
    rounds["best_so_far"] = rounds.groupby(keys, dropna=False, sort=False)["best_so_far"].ffill()
    rounds["energy_so_far_j"] = grouped["round_energy_j"].cumsum()
    # A round without energy leaves the running total unknown from there on.
    unknown = grouped["round_energy_j"].transform(lambda s: s.isna().cumsum()) > 0
    rounds.loc[unknown, "energy_so_far_j"] = float("nan")
    return rounds


def shared_gpu(trials: pd.DataFrame) -> pd.Series:
    """The trials whose GPU was shared while they ran: several trials on it at once (fractional
    GPUs), or a MIG instance measured as its whole GPU."""
    shared = pd.Series(False, index=trials.index)
    if SHARERS in trials:
        shared |= pd.to_numeric(trials[SHARERS], errors="coerce").fillna(1) > 1
    if "device_shared" in trials:
        shared |= trials["device_shared"].fillna(False).astype(bool)
    return shared


def shared_gpu_note(trials: pd.DataFrame) -> str | None:
    """One sentence on why energy sums are left out where trials shared a GPU; None if none did."""
    shared = shared_gpu(trials)
    if not shared.any():
        return None
    most = pd.to_numeric(trials.get(SHARERS, pd.Series(dtype=float)), errors="coerce").max()
    times = f"up to {int(most)} times" if most == most and most > 1 else "more than once"
    return (
        f"no energy summed over the {int(shared.sum())} trial(s) that shared a GPU (gpu_sharers_max > 1 or a "
        "MIG instance) nor over the rounds after them: each such trial measured its whole GPU, its "
        f"neighbours' work included, so a sum would count that GPU's energy {times} (their per-trial "
        "energies below include their neighbours' too)."
    )


def best_accuracy(trials: pd.DataFrame, curves: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per search: the best round-mean accuracy, the first round that reached it, the rounds
    and runs, the energy until the best and in all, and the best single run."""
    first_best = curves["round_accuracy"] == curves.groupby(keys, dropna=False)["round_accuracy"].transform(
        "max"
    )
    best = (
        curves[first_best]
        .groupby(keys, dropna=False)
        .first()[["round_accuracy", "round", "energy_so_far_j"]]
        .rename(
            columns={
                "round_accuracy": "best_accuracy",
                "round": "best_round",
                "energy_so_far_j": "energy_until_best_j",
            }
        )
    )
    per_search = curves.groupby(keys, dropna=False).agg(
        rounds=("round", "size"), runs=("repetitions", "sum"), energy_total_j=("energy_so_far_j", "last")
    )
    single = trials.groupby(keys, dropna=False)["accuracy"].max().rename("best_run_accuracy")
    return best.join(per_search).join(single).reset_index()


def until_target(
    curves: pd.DataFrame, best: pd.DataFrame, keys: list[str], target: float | None
) -> pd.DataFrame:
    """Per search: the target accuracy, the first round whose best-so-far reached it and the
    energy spent until then (empty where it never did)."""
    problem = [k for k in keys if k != "strategy"]
    table = best[keys].copy()
    if target is not None:
        table["target_accuracy"] = target
    elif problem:
        table["target_accuracy"] = (
            best.groupby(problem, dropna=False)["best_accuracy"].transform("max") * RELATIVE_TARGET
        )
    else:
        table["target_accuracy"] = best["best_accuracy"].max() * RELATIVE_TARGET
    merged = curves.merge(table, on=keys, how="left")
    hits = (
        merged[merged["best_so_far"] >= merged["target_accuracy"]]
        .groupby(keys, dropna=False)
        .first()[["round", "energy_so_far_j"]]
        .rename(columns={"round": "target_round", "energy_so_far_j": "energy_until_target_j"})
    )
    table = table.merge(hits.reset_index(), on=keys, how="left")
    return table.astype({"target_round": "Int64"})


def study_layout(best: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The best table as the study printed it: a row per net and strategy, a column per data set
    and parameter count, each cell "best accuracy (round)"."""
    columns = [k for k in ("dataset", "params") if k in keys]
    rows = [k for k in keys if k not in columns]
    if not columns or not rows:
        return pd.DataFrame()
    cell = best["best_accuracy"].map("{:.4f}".format) + " (r" + best["best_round"].astype(str) + ")"
    table = best.assign(cell=cell).pivot(index=rows, columns=columns, values="cell")
    table.columns = [
        " ".join(f"{k}={v}" if k == "params" else str(v) for k, v in zip(columns, c, strict=True))
        if isinstance(c, tuple)
        else str(c)
        for c in table.columns
    ]
    return table.reset_index()


def strategy_summary(best: pd.DataFrame) -> pd.DataFrame:
    """Per strategy over all its searches: mean best accuracy and round of the best, mean
    energy until the best, how many reached their target and their mean energy until it."""
    if "strategy" not in best:
        return pd.DataFrame()
    return (
        best.groupby("strategy", dropna=False)
        .agg(
            searches=("best_accuracy", "size"),
            mean_best_accuracy=("best_accuracy", "mean"),
            mean_best_round=("best_round", "mean"),
            mean_energy_until_best_j=("energy_until_best_j", "mean"),
            reached_target=("target_round", "count"),
            mean_energy_until_target_j=("energy_until_target_j", "mean"),
        )
        .reset_index()
    )
