"""The inference study's tables: energy per image against maximum response time per model,
policy and frequency; peak power of small against large batches; energy per image by model
in publication order (the study's timeline)."""

from __future__ import annotations

import re

import pandas as pd

# Families of torchvision models and the year each was published, in the study's order.
MODEL_YEARS = (
    ("alexnet", "AlexNet", 2012),
    ("vgg", "VGG", 2014),
    ("resnet", "ResNet", 2015),
    ("densenet", "DenseNet", 2016),
    ("mobilenet_v2", "MobileNetV2", 2018),
    ("shufflenet", "ShuffleNetV2", 2018),
    ("mobilenet_v3", "MobileNetV3", 2019),
    ("efficientnet", "EfficientNet", 2019),
    ("vit", "ViT", 2020),
    ("convnext", "ConvNext", 2022),
)
# Batches of at most this many images count as small when peak power is compared.
SMALL_BATCH = 2
RUN_COLUMNS = (
    "model",
    "weights",
    "image_size",
    "model_device",
    "precision",
    "policy",
    "frequency_hz",
    "arrival",
    "requests",
    "served",
    "energy_per_image_j",
    "idle_free_energy_per_image_j",
    "max_latency_s",
    "p50_latency_s",
    "p99_latency_s",
    "achieved_rate_hz",
    "mean_batch_size",
    "peak_power_w",
    "energy_source",
)


def family(model: str) -> tuple[str, int | None]:
    """The family name and publication year of a torchvision model name (None when unknown)."""
    name = model.lower()
    for prefix, label, year in MODEL_YEARS:
        if name.startswith(prefix):
            return label, year
    return model, None


def policy_order(policy: str) -> tuple[int, float]:
    """Fixed batches by size, then greedy: the order the study drew them in."""
    match = re.match(r"fixed:(\d+)", str(policy))
    return (0, float(match.group(1))) if match else (1, 0.0)


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the columns a reader compares, sorted by model, frequency, policy."""
    columns = [c for c in RUN_COLUMNS if c in runs]
    keys = [c for c in ("precision", "frequency_hz") if c in runs]
    table = runs[columns].copy()
    table["_year"] = table["model"].map(lambda m: family(m)[1] or 9999)
    table["_policy"] = table["policy"].map(policy_order)
    order = ["_year", "model", *keys, "_policy"]
    return table.sort_values(order, kind="stable").drop(columns=["_year", "_policy"]).reset_index(drop=True)


# Run settings that a table states once in its caption when every run shares them.
SHARED_SETTINGS = (
    "weights",
    "image_size",
    "model_device",
    "precision",
    "arrival",
    "requests",
    "energy_source",
)


def shared_settings(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table without the settings every row shares, and those settings as words."""
    shared = [c for c in SHARED_SETTINGS if c in table and table[c].nunique(dropna=False) == 1]
    words = ", ".join(f"{c} {table[c].iloc[0]}" for c in shared)
    return table.drop(columns=shared), words


def timeline(runs: pd.DataFrame, energy: str) -> pd.DataFrame:
    """Energy per image per model (and precision, where runs used several) in publication order:
    mean over its runs, the best run, and the change of the mean against the first model."""
    keys = ["model"] + (["precision"] if "precision" in runs and runs["precision"].nunique() > 1 else [])
    runs = runs.assign(**{energy: pd.to_numeric(runs[energy], errors="coerce")})
    table = (
        runs.groupby(keys, dropna=False)
        .agg(
            runs=(energy, "count"),  # the measured ones: the mean is over them
            mean_energy_per_image_j=(energy, "mean"),
            min_energy_per_image_j=(energy, "min"),
        )
        .reset_index()
    )
    names = table["model"].map(family)
    table.insert(1, "family", names.str[0])
    table.insert(2, "year", names.str[1].astype("Int64"))
    table = table.sort_values(["year", "model"], na_position="last", kind="stable").reset_index(drop=True)
    # The first model of each precision is the reference (all rows form one group without one).
    per_precision = table.groupby(keys[1:] or (lambda _: 0), dropna=False)
    first = per_precision["mean_energy_per_image_j"].transform("first")
    table["change_vs_first_pct"] = 100.0 * (table["mean_energy_per_image_j"] - first) / first
    return table


def peak_power(runs: pd.DataFrame, batches: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """Peak power of small against large batches per model, and the basis it was taken on:
    per batch when batches were stored (small: at most SMALL_BATCH images; large: the largest
    batch size served), else per run (the run with the smallest against the largest mean batch)."""
    if batches is not None and "peak_power_w" in batches and _size_column(batches):
        return _peak_per_batch(runs, batches), "per batch"
    if {"peak_power_w", "mean_batch_size"} <= set(runs.columns):
        return _peak_per_run(runs), "per run"
    return pd.DataFrame(), "none"


def _size_column(batches: pd.DataFrame) -> str | None:
    """serve-bench stores a batch's size as `size`; `batch_size` is accepted too."""
    return next((c for c in ("size", "batch_size") if c in batches), None)


def _peak_per_batch(runs: pd.DataFrame, batches: pd.DataFrame) -> pd.DataFrame:
    size = _size_column(batches)
    # Batches that ended inside a run's window only (not warm-up or the drain after a run).
    counted = batches[batches["in_run"].astype(bool)] if "in_run" in batches else batches
    served = counted[["folder", "run_id", size, "peak_power_w"]].rename(columns={size: "batch_size"})
    served = served.merge(runs[["folder", "run_id", "model"]], on=["folder", "run_id"], how="inner")
    served = served.dropna(subset=["peak_power_w"])
    rows = []
    for model, part in served.groupby("model", sort=False):
        largest = part["batch_size"].max()
        small = part[part["batch_size"] <= SMALL_BATCH]
        large = part[part["batch_size"] == largest]
        rows.append(
            {
                "model": model,
                "small_batches": len(small),
                "small_median_peak_w": small["peak_power_w"].median(),
                "small_max_peak_w": small["peak_power_w"].max(),
                "large_batch_size": largest,
                "large_batches": len(large),
                "large_median_peak_w": large["peak_power_w"].median(),
                "large_max_peak_w": large["peak_power_w"].max(),
            }
        )
    return _in_year_order(pd.DataFrame(rows))


def _peak_per_run(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for model, part in runs.dropna(subset=["peak_power_w", "mean_batch_size"]).groupby("model", sort=False):
        small = part.loc[part["mean_batch_size"].idxmin()]
        large = part.loc[part["mean_batch_size"].idxmax()]
        rows.append(
            {
                "model": model,
                "small_mean_batch": small["mean_batch_size"],
                "small_policy": small["policy"],
                "small_peak_w": small["peak_power_w"],
                "large_mean_batch": large["mean_batch_size"],
                "large_policy": large["policy"],
                "large_peak_w": large["peak_power_w"],
            }
        )
    return _in_year_order(pd.DataFrame(rows))


def _in_year_order(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    years = table["model"].map(lambda m: family(m)[1] or 9999)
    return (
        table.assign(_year=years).sort_values(["_year", "model"]).drop(columns="_year").reset_index(drop=True)
    )
