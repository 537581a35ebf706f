"""The report's figures as PNG files, drawn with matplotlib's object API on the Agg canvas
(no pyplot, no global state). Every title carries the energy's provenance."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from greenray.analysis.architecture import FACTORS
from greenray.analysis.inference import family

DPI = 110
PANEL_W, PANEL_H = 4.6, 3.4
MIN_WIDTH = 6.5  # inches: a single panel's title and legend need the room


def _figure(
    rows: int, cols: int, title: str, width: float | None = None, height: float | None = None
) -> tuple[Figure, np.ndarray]:
    width = max(MIN_WIDTH, width or PANEL_W * cols)
    fig = Figure(figsize=(width, height or PANEL_H * rows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    # Wrap the title to the figure's width so that a long provenance is never cut off.
    wrapped = "\n".join(textwrap.fill(line, width=int(width * 8)) for line in title.splitlines())
    fig.suptitle(wrapped, fontsize=12, fontweight="bold")
    return fig, axes


def _styles(labels: list[str]) -> dict[str, dict]:
    """A colour (and, past ten, a line style) per label, the same in every panel."""
    dashes = ("-", "--", ":", "-.")
    return {
        label: {"color": f"C{i % 10}", "linestyle": dashes[(i // 10) % 4]} for i, label in enumerate(labels)
    }


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _label(keys: list[str], values) -> str:
    return ", ".join(
        f"{k}={v}" if k in ("params", *FACTORS) else str(v) for k, v in zip(keys, values, strict=True)
    )


def _labels(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """A label per row from its values of `keys` ("all" without keys)."""
    if not keys:
        return pd.Series("all", frame.index)
    return frame[keys].apply(lambda row: _label(keys, tuple(row)), axis=1)


def convergence(curves: pd.DataFrame, keys: list[str], path: Path, title: str) -> Path:
    """Best-so-far round-mean accuracy against round: a panel per data set, net and parameter
    count, a line per strategy (and architecture, where it varies), one legend for all."""
    panel_keys = [k for k in ("dataset", "net", "params") if k in keys]
    line_keys = [k for k in keys if k not in panel_keys]
    panels = list(curves.groupby(panel_keys, dropna=False, sort=True)) if panel_keys else [((), curves)]
    lines = _labels(curves, line_keys)
    styles = _styles(sorted(lines.unique()))
    cols = min(3, len(panels))
    fig, axes = _figure(math.ceil(len(panels) / cols), cols, title)
    for ax, (panel, part) in zip(axes.flat, panels, strict=False):
        _curves(ax, list(part.groupby(lines[part.index], sort=True)), styles)
        ax.set_title(_label(panel_keys, panel if isinstance(panel, tuple) else (panel,)), fontsize=10)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("best mean accuracy so far")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1 : len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=max(1, min(len(labels), int(fig.get_figwidth() // 3.2))),
        fontsize=8,
        title=", ".join(line_keys) or None,
        title_fontsize=8,
    )
    return _save(fig, path)


MARKERS = "osD^v<>ph*"
MIN_ACCURACY_SPAN = 0.02  # a y axis narrower than this makes a flat curve look like a jump


def _curves(ax, curves: list[tuple[str, pd.DataFrame]], styles: dict[str, dict]) -> None:
    """Best-so-far curves on one panel. Identical curves would hide each other: each has a
    marker of its own, the first of a set is drawn widest under the others, and the legend says
    which curve each repeats."""
    same: dict[tuple, list[str]] = {}
    for label, curve in curves:
        same.setdefault(tuple(zip(curve["round"], curve["best_so_far"].round(9), strict=True)), []).append(
            label
        )
    twin = {label: group for group in same.values() for label in group}
    for i, (label, curve) in enumerate(curves):
        group = twin[label]
        under = min(len(group) - 1 - group.index(label), 5)  # identical curves on top of it (capped)
        name = label if group[0] == label else f"{label} (= {group[0]})"
        ax.step(
            curve["round"],
            curve["best_so_far"],
            where="post",
            label=name,
            marker=MARKERS[i % len(MARKERS)],
            markersize=4 + 2.5 * under,
            linewidth=1.5 + 2.0 * under,
            **styles[label],
        )
    low, high = ax.get_ylim()
    if high - low < MIN_ACCURACY_SPAN:
        middle = (low + high) / 2
        ax.set_ylim(middle - MIN_ACCURACY_SPAN / 2, middle + MIN_ACCURACY_SPAN / 2)


def energy_until(best: pd.DataFrame, keys: list[str], path: Path, title: str) -> Path:
    """Energy spent until the best and until the target: a bar per search (its problem and its
    strategy on the bar's own row, a colour per strategy); a search whose energy was not
    measured, or that never reached the target, says so where its bar would be."""
    problem = [k for k in keys if k != "strategy"]
    strategy = best["strategy"].astype(str) if "strategy" in best else pd.Series("all", best.index)
    rows = best.assign(_problem=_labels(best, problem), _strategy=strategy).sort_values(
        ["_problem", "_strategy"], kind="stable"
    )
    ticks = [
        f"{p}: {s}" if p != "all" else s for p, s in zip(rows["_problem"], rows["_strategy"], strict=True)
    ]
    styles = _styles(sorted(rows["_strategy"].unique()))
    fig, axes = _figure(1, 2, title, width=12, height=max(3.4, 1.6 + 0.3 * len(rows)))
    y = np.arange(len(rows))
    measured = pd.to_numeric(rows["energy_until_best_j"], errors="coerce").notna().to_numpy()
    for ax, column, name in (
        (axes[0, 0], "energy_until_best_j", "until the best accuracy"),
        (axes[0, 1], "energy_until_target_j", "until the target accuracy"),
    ):
        values = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)
        colours = [styles[s]["color"] for s in rows["_strategy"]]
        ax.barh(y, np.nan_to_num(values), 0.7, color=colours)
        for yi, value, known in zip(y, values, measured, strict=True):
            if value != value:  # no bar: say why rather than draw what reads as zero
                words = "energy not measured" if not known else "target never reached"
                ax.text(0, yi, f" {words}", va="center", fontsize=8, style="italic", color="0.3")
        ax.set_yticks(y, ticks, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"energy {name}", fontsize=10)
        ax.set_xlabel("energy (J)")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 1].tick_params(labelleft=False)
    handles = [Patch(color=style["color"], label=label) for label, style in styles.items()]
    axes[0, 0].legend(handles=handles, fontsize=8, title="strategy")
    return _save(fig, path)


def energy_vs_accuracy(trials: pd.DataFrame, energy: str, path: Path, title: str) -> Path:
    """Every training run's energy against its accuracy, a panel per data set, a colour per
    architecture configuration."""
    factors = [f for f in FACTORS if f in trials]
    datasets = sorted(trials["dataset"].astype(str).unique()) if "dataset" in trials else ["all"]
    fig, axes = _figure(1, len(datasets), title)
    for ax, dataset in zip(axes.flat, datasets, strict=True):
        part = trials[trials["dataset"].astype(str) == dataset] if "dataset" in trials else trials
        for i, (config, runs) in enumerate(part.groupby(factors, sort=True)):
            marker = "^" if "n_conv" in factors and runs["n_conv"].iloc[0] == part["n_conv"].max() else "o"
            ax.scatter(
                runs[energy],
                runs["accuracy"],
                s=16,
                alpha=0.75,
                marker=marker,
                color=f"C{i % 10}",
                label=_config(factors, config),
            )
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel(f"training energy per run (J, {energy})")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="linear / conv / ReLU", title_fontsize=7)
    return _save(fig, path)


def energy_by_factor(trials: pd.DataFrame, energy: str, factors: list[str], path: Path, title: str) -> Path:
    """Box plots of training energy per level of each factor, a row per data set."""
    datasets = sorted(trials["dataset"].astype(str).unique()) if "dataset" in trials else ["all"]
    fig, axes = _figure(len(datasets), len(factors), title)
    for row, dataset in enumerate(datasets):
        part = trials[trials["dataset"].astype(str) == dataset] if "dataset" in trials else trials
        for col, factor in enumerate(factors):
            ax = axes[row, col]
            levels = sorted(part[factor].dropna().unique())
            ax.boxplot(
                [part.loc[part[factor] == lv, energy].astype(float) for lv in levels],
                tick_labels=[_level(factor, lv) for lv in levels],
            )
            ax.set_title(f"{dataset}: {FACTORS[factor]}", fontsize=10)
            ax.set_xlabel(FACTORS[factor])
            ax.set_ylabel(f"energy per run (J, {energy})")
            ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def energy_vs_latency(runs: pd.DataFrame, energy: str, path: Path, title: str) -> Path:
    """Energy per image against maximum response time, a panel per model (and precision), a
    colour per request frequency, each point labelled with its batching policy."""
    keys = ["model"] + (["precision"] if "precision" in runs and runs["precision"].nunique() > 1 else [])
    runs = runs.assign(**{energy: pd.to_numeric(runs[energy], errors="coerce")})
    panels = sorted(runs.groupby(keys, sort=False), key=lambda kv: _model_order(kv[0]))
    frequencies = sorted(runs["frequency_hz"].dropna().unique())
    colours = {f: f"C{i}" for i, f in enumerate(frequencies)}
    cols = min(3, len(panels))
    note = "labels: batching policy (F16 = fixed batch of 16, G = greedy)"
    fig, axes = _figure(math.ceil(len(panels) / cols), cols, f"{title}\n{note}")
    for ax, (panel, everything) in zip(axes.flat, panels, strict=False):
        part = everything[everything[energy].notna()]
        if len(part) < len(everything):  # a run whose energy was not measured has no point
            unmeasured = f"{len(everything) - len(part)} of {len(everything)} runs: energy not measured"
            ax.text(0.02, 0.98, unmeasured, transform=ax.transAxes, va="top", fontsize=7, style="italic")
        for frequency, points in part.groupby("frequency_hz", sort=True):
            ax.scatter(
                points["max_latency_s"],
                points[energy],
                s=30,
                color=colours[frequency],
                label=f"{frequency:g} req/s",
            )
            for _, p in points.iterrows():
                ax.annotate(
                    _policy_tag(p["policy"]),
                    (p["max_latency_s"], p[energy]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set_title(" ".join(str(v) for v in (panel if isinstance(panel, tuple) else (panel,))), fontsize=10)
        ax.set_xlabel("maximum response time (s, log scale)")
        ax.set_ylabel(f"energy per image (J, {energy})")
        ax.grid(alpha=0.3, which="both")
        if len(part):
            ax.legend(fontsize=7, title="frequency", title_fontsize=7, loc="lower right")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, path)


def peak_power(table: pd.DataFrame, basis: str, path: Path, title: str) -> Path:
    """Peak power of small against large batches per model."""
    small, large = (
        ("small_median_peak_w", "large_median_peak_w")
        if basis == "per batch"
        else ("small_peak_w", "large_peak_w")
    )
    fig, axes = _figure(1, 1, title, width=max(6.0, 1.7 * len(table)), height=4.6)
    ax = axes[0, 0]
    x = np.arange(len(table))
    ax.bar(
        x - 0.2, table[small], 0.4, label="small batches" + (" (1-2 images)" if basis == "per batch" else "")
    )
    ax.bar(
        x + 0.2,
        table[large],
        0.4,
        label="large batches" + (" (largest size)" if basis == "per batch" else ""),
    )
    ax.set_xticks(x, [_model_tick(m) for m in table["model"]])
    ax.set_ylabel("peak power (W)" + (", median over batches" if basis == "per batch" else ""))
    ax.set_title(f"peak power {basis}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def timeline(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Energy per image by model in publication order (mean over runs, and the best run)."""
    precisions = sorted(table["precision"].astype(str).unique()) if "precision" in table else [None]
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _figure(1, 1, title, width=max(6.0, 1.7 * len(models)), height=4.6)
    ax = axes[0, 0]
    width = 0.8 / len(precisions)
    for i, precision in enumerate(precisions):
        part = table if precision is None else table[table["precision"].astype(str) == precision]
        part = part.set_index("model").reindex(models)
        x = np.arange(len(models)) + i * width
        ax.bar(x, part["mean_energy_per_image_j"], width, label=f"mean over runs{_suffix(precision)}")
        ax.scatter(
            x,
            part["min_energy_per_image_j"],
            color="black",
            marker="_",
            s=200,
            zorder=3,
            label="best run" if i == 0 else None,
        )
    ax.set_xticks(
        np.arange(len(models)) + width * (len(precisions) - 1) / 2, [_model_tick(m) for m in models]
    )
    ax.set_ylabel("energy per image (J)")
    ax.set_title("energy per image by model, in order of publication", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _suffix(precision: str | None) -> str:
    return "" if precision is None else f", {precision}"


def _config(factors: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return " / ".join(_level(f, v) for f, v in zip(factors, values, strict=True))


def _level(factor: str, value) -> str:
    if factor == "relu":
        return "ReLU on" if str(value) == "True" else "ReLU off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _policy_tag(policy: str) -> str:
    text = str(policy)
    return text.replace("fixed:", "F").replace("greedy", "G").replace(":", "")


def _model_order(key) -> tuple:
    model = key[0] if isinstance(key, tuple) else key
    return (family(model)[1] or 9999, model)


def _model_tick(model: str) -> str:
    name, year = family(model)
    return f"{name} {year}\n{model}" if year else model
