"""The architecture study's statistics (Experiment 2): how much training energy varies within
a configuration (coefficient of variation), whether it is normal (Shapiro-Wilk), how much each
factor moves it (Kruskal-Wallis with eta-squared and Cohen's f, percentage increase), and the
low- and high-energy clusters E- (fewest conv layers) and E+ (most)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

# The factors of the study's full factorial, with the words a reader knows them by.
FACTORS = {"n_linear": "linear layers", "n_conv": "conv layers", "relu": "ReLU"}
# Cohen's thresholds for eta-squared: below 0.01 negligible, then small, medium, large.
MAGNITUDES = ((0.01, "negligible"), (0.06, "small"), (0.14, "medium"))
GROUP = ("experiment", "dataset", "net")


@dataclass(frozen=True)
class ArchitectureStats:
    configurations: pd.DataFrame  # per configuration: energy mean, std, CV, accuracy, Shapiro-Wilk
    normality: pd.DataFrame  # per data set and net: Shapiro-Wilk over all runs
    factors: pd.DataFrame  # per factor: Kruskal-Wallis, eta-squared, Cohen's f, % increase
    clusters: pd.DataFrame  # E- and E+


def eta_squared(h: float, k: int, n: int) -> float:
    """Eta-squared from a Kruskal-Wallis H over k groups and n observations: (H - k + 1) / (n - k)."""
    return (h - k + 1) / (n - k)


def cohens_f(eta2: float) -> float:
    """Cohen's f = sqrt(eta2 / (1 - eta2)); a negative eta-squared (H below its expectation) is 0."""
    eta2 = max(eta2, 0.0)
    return math.inf if eta2 >= 1 else math.sqrt(eta2 / (1 - eta2))


def magnitude(eta2: float) -> str:
    """Cohen's word for an eta-squared: negligible, small, medium or large."""
    for limit, word in MAGNITUDES:
        if eta2 < limit:
            return word
    return "large"


def percent_increase(low: float, high: float) -> float:
    """How much higher `high` is than `low`, in percent of `low`."""
    return 100.0 * (high - low) / low


def varied_factors(trials: pd.DataFrame) -> list[str]:
    """The architecture factors with two levels or more in these trials."""
    return [f for f in FACTORS if f in trials and trials[f].nunique(dropna=True) > 1]


def groups_of(trials: pd.DataFrame) -> list[str]:
    """The columns the statistics are split by: data set and net, and the experiment where
    several were given (the strategies study's SimpleCNN is not a level of the architecture's)."""
    return [g for g in GROUP if g in trials and (g != "experiment" or trials[g].nunique() > 1)]


def architecture_stats(trials: pd.DataFrame, energy: str) -> ArchitectureStats:
    """Every statistic of Experiment 2 over ok trials, per data set and net."""
    groups = groups_of(trials)
    return ArchitectureStats(
        configurations=configurations(trials, energy, groups),
        normality=normality(trials, energy, groups),
        factors=factor_effects(trials, energy, groups),
        clusters=clusters(trials, energy, groups),
    )


def configurations(trials: pd.DataFrame, energy: str, groups: list[str]) -> pd.DataFrame:
    """Per configuration: runs, mean and standard deviation of energy (sample, ddof 1), their
    ratio (the coefficient of variation), accuracy, and Shapiro-Wilk on its energy."""
    keys = groups + [f for f in FACTORS if f in trials]
    rows = []
    for key, runs in trials.groupby(keys, dropna=False, sort=True):
        values = runs[energy].astype(float)
        mean, std = values.mean(), values.std(ddof=1)
        w, p = _shapiro(values)
        rows.append(
            dict(zip(keys, key, strict=True))
            | {
                "runs": len(runs),
                "mean_energy_j": mean,
                "std_energy_j": std,
                "cv": std / mean if mean else float("nan"),
                "mean_accuracy": runs["accuracy"].mean(),
                "max_accuracy": runs["accuracy"].max(),
                "shapiro_w": w,
                "shapiro_p": p,
            }
        )
    return pd.DataFrame(rows)


def normality(trials: pd.DataFrame, energy: str, groups: list[str]) -> pd.DataFrame:
    """Shapiro-Wilk over all runs' energy, per data set and net."""
    rows = []
    for key, runs in _by(trials, groups):
        w, p = _shapiro(runs[energy].astype(float))
        rows.append(key | {"runs": len(runs), "shapiro_w": w, "shapiro_p": p, "normal_at_0.05": p >= 0.05})
    return pd.DataFrame(rows)


def factor_effects(trials: pd.DataFrame, energy: str, groups: list[str]) -> pd.DataFrame:
    """Per factor: Kruskal-Wallis of energy across its levels (scipy.stats.kruskal), eta-squared,
    Cohen's f and its word, and the mean energy at the lowest and highest level with the
    percentage increase between them."""
    rows = []
    for key, runs in _by(trials, groups):
        for factor in varied_factors(runs):
            levels = sorted(runs[factor].dropna().unique())
            samples = [runs.loc[runs[factor] == level, energy].astype(float) for level in levels]
            n, k = sum(len(s) for s in samples), len(samples)
            h, p = _kruskal(samples)
            eta2 = eta_squared(h, k, n) if n > k else float("nan")
            low, high = samples[0].mean(), samples[-1].mean()
            rows.append(
                key
                | {
                    "factor": FACTORS[factor],
                    "low": _level(levels[0]),
                    "high": _level(levels[-1]),
                    "k": k,
                    "n": n,
                    "H": h,
                    "p": p,
                    "eta2": eta2,
                    "cohens_f": cohens_f(eta2) if not math.isnan(eta2) else float("nan"),
                    "magnitude": magnitude(eta2) if not math.isnan(eta2) else "",
                    "mean_energy_low_j": low,
                    "mean_energy_high_j": high,
                    "increase_pct": percent_increase(low, high),
                }
            )
    return pd.DataFrame(rows)


def clusters(trials: pd.DataFrame, energy: str, groups: list[str]) -> pd.DataFrame:
    """E- (the fewest conv layers) and E+ (the most): mean energy and mean, max and standard
    deviation of accuracy. Empty when the conv layers do not vary."""
    rows = []
    for key, runs in _by(trials, groups):
        if "n_conv" not in varied_factors(runs):
            continue
        for name, level in (("E-", runs["n_conv"].min()), ("E+", runs["n_conv"].max())):
            part = runs[runs["n_conv"] == level]
            rows.append(
                key
                | {
                    "cluster": name,
                    "n_conv": level,
                    "runs": len(part),
                    "mean_energy_j": part[energy].astype(float).mean(),
                    "mean_accuracy": part["accuracy"].mean(),
                    "max_accuracy": part["accuracy"].max(),
                    "std_accuracy": part["accuracy"].std(ddof=1),
                }
            )
    return pd.DataFrame(rows)


def _by(trials: pd.DataFrame, groups: list[str]):
    """(group as a dict, rows) per data set and net; one group of all rows when neither is known."""
    if not groups:
        yield {}, trials
        return
    for key, runs in trials.groupby(groups, dropna=False, sort=True):
        yield dict(zip(groups, key, strict=True)), runs


def _level(value) -> str:
    if isinstance(value, bool) or str(value) in ("True", "False"):
        return "on" if str(value) == "True" else "off"
    return str(value)


def _shapiro(values: pd.Series) -> tuple[float, float]:
    """Shapiro-Wilk (W, p); undefined below 3 values or when all are equal."""
    values = values.dropna()
    if len(values) < 3 or values.nunique() < 2:
        return float("nan"), float("nan")
    result = stats.shapiro(values)
    return float(result.statistic), float(result.pvalue)


def _kruskal(samples: list[pd.Series]) -> tuple[float, float]:
    """Kruskal-Wallis (H, p); undefined when every value is the same."""
    if pd.concat(samples).nunique() < 2:
        return float("nan"), float("nan")
    result = stats.kruskal(*samples)
    return float(result.statistic), float(result.pvalue)
