"""`greenray report`: every statistic, table and figure that the given results folders allow,
written as Markdown and CSV tables, PNG figures and a report.md that links them. What cannot
be computed is said in one sentence each; the rest is still written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from greenray.analysis import architecture, carbon, figures, hpo, inference, levers, mutate
from greenray.analysis.load import EXPERIMENT_INDEX, Loaded, load, ok_rows
from greenray.analysis.markdown import markdown_table
from greenray.analysis.provenance import (
    SIMULATED,
    UNMEASURED,
    Provenance,
    choose_energy,
    fields_of,
    sources_of,
)
from greenray.errors import UsageError
from greenray.results import atomic_write


@dataclass
class Report:
    """A report being written: its folder, the Markdown so far, what it could not compute."""

    out: Path
    simulated: bool
    parts: list[str] = field(default_factory=list)
    cannot: list[str] = field(default_factory=list)  # one sentence per thing it cannot show
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A report folder written before holds only this report afterwards.
        for sub, pattern in (("tables", "*.csv"), ("tables", "*.md"), ("figures", "*.png")):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
            for stale in (self.out / sub).glob(pattern):
                stale.unlink()

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"{'#' * level} {text}\n")

    def text(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def table(self, frame: pd.DataFrame, name: str, caption: str) -> None:
        """tables/NAME.csv (full precision) and tables/NAME.md, and the table inline."""
        csv, md = self.out / "tables" / f"{name}.csv", self.out / "tables" / f"{name}.md"
        caption = self._loud(caption)
        frame.to_csv(csv, index=False)
        body = markdown_table(frame)
        md.write_text(f"{caption}\n\n{body}\n")
        self.tables.extend([csv, md])
        self.parts.append(f"{caption} ([CSV](tables/{csv.name}))\n\n{body}\n")

    def figure(self, draw: Callable[[Path, str], Path], name: str, title: str, caption: str) -> None:
        """figures/NAME.png drawn by draw(path, title), and a link to it."""
        title = self._loud(title)
        path = draw(self.out / "figures" / f"{name}.png", title)
        self.figures.append(path)
        self.parts.append(f"![{title}](figures/{path.name})\n\n*{self._loud(caption)}*\n")

    def _loud(self, text: str) -> str:
        if self.simulated and "SIMULATED" not in text:
            return f"[SIMULATED ENERGY] {text}"
        return text


def build_report(paths: list[Path], out: Path, target: float | None = None) -> Report:
    """Write the report of `paths` into `out`; raise UsageError when nothing can be reported."""
    loaded = load(paths)
    if not loaded.tables:
        reasons = " ".join(loaded.notes) or "no results were found."
        raise UsageError(f"nothing can be reported: {reasons}")
    sources = sorted({s for f in loaded.folders for s in f.sources})
    _check_out(out)
    report = Report(out, simulated=SIMULATED in sources, cannot=list(loaded.notes))
    trials = loaded.table("trials")
    if trials is not None:
        trials, mutations = mutate.split(trials)  # greenray mutate's folders have a section of their own
        if not trials.empty:
            _search_section(report, ok_rows(trials), target, spent=trials)
            _architecture_section(report, ok_rows(trials))
            levers.lever_section(report, trials)
        mutate.mutate_section(report, mutations)
    else:
        report.cannot.append("no training statistics: no hpo folder (trials.parquet) was given.")
    runs = loaded.table("runs")
    if runs is not None:
        _inference_section(report, ok_rows(runs), loaded.table("batches"))
    else:
        report.cannot.append("no inference statistics: no serve-bench folder (runs.parquet) was given.")
    carbon.emissions_section(report, trials, runs)
    cannot = report.cannot
    text = "\n".join(
        [
            _header(report.simulated, loaded, sources, paths),
            "## What this report cannot show\n\n" + "\n".join(f"- {line}" for line in cannot) + "\n"
            if cannot
            else "",
            *report.parts,
        ]
    )
    atomic_write(out / "report.md", lambda p: p.write_text(text.rstrip() + "\n"))
    return report


def _check_out(out: Path) -> None:
    """The report's folder can be written, or one sentence says why not."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder for the report (it is created if missing)")
    try:
        for sub in ("tables", "figures"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"the report's folder {out} cannot be written ({exc.strerror or exc})") from None


def _header(simulated: bool, loaded: Loaded, sources: list[str], paths: list[Path]) -> str:
    lines = ["# greenray report\n"]
    if simulated:
        lines.append(
            "> **SIMULATED ENERGY.** Some or all energy in this report comes from greenray's simulated "
            "power model (`energy_source = simulated`): those Joules and Watts are NOT measurements. "
            "Accuracy, loss, durations and response times are real: they were measured on the machine "
            "that ran the experiments.\n"
        )
    if UNMEASURED in sources:
        lines.append(
            "> **Energy not measured** for the rows with `energy_source = none` (no GPU and no readable "
            "RAPL counter where they ran): their energy columns are empty. Accuracy, durations and "
            "response times are real.\n"
        )
    for experiment in _experiments(paths):
        cells = experiment.get("cells", [])
        done = sum(c.get("status") == "complete" for c in cells)
        replaced = experiment.get("overrides") or {}
        override = "".join(f", {key} replaced by {', '.join(map(str, v))}" for key, v in replaced.items())
        file = Path(str(experiment.get("file"))).name
        lines.append(
            f"Experiment `{experiment.get('experiment')}` from `{file}` at scale "
            f"{experiment.get('scale')}{override}: {done} of {len(cells)} cells complete.\n"
        )
    # Folders named from where they all lie, so that a report does not show one machine's paths.
    base = Path(os.path.commonpath([f.path for f in loaded.folders])) if loaded.folders else Path()
    base = base.parent if len(loaded.folders) == 1 else base
    folders = pd.DataFrame(
        [
            {
                "folder": str(f.path.relative_to(base)),
                "kind": f.kind,
                "rows": f.rows,
                "excluded (failed, stopped)": f.failed,
                "energy_source": ", ".join(f.sources) or "unknown",
            }
            for f in loaded.folders
        ]
    )
    failed = sum(f.failed for f in loaded.folders)
    lines += [
        "## Inputs\n",
        f"Results folders under `{base.name or base}`:\n",
        markdown_table(folders) + "\n",
        f"{failed} excluded row(s) in all: failed runs, failed and early-stopped trials are counted "
        "here and never averaged.\n",
    ]
    return "\n".join(lines)


def _experiments(paths: list[Path]) -> list[dict]:
    found = []
    for path in paths:
        index = path / EXPERIMENT_INDEX
        if index.is_file():
            try:
                found.append(json.loads(index.read_text()))
            except (OSError, ValueError):
                continue
    return found


def _search_section(report: Report, trials: pd.DataFrame, target: float | None, spent: pd.DataFrame) -> None:
    if trials.empty:
        report.cannot.append("no search statistics: every trial failed.")
        return
    energy = choose_energy(trials, "idle_free_energy_j", "energy_j", "no idle baseline was stored")
    stats = hpo.search_stats(trials, energy.column, target, spent=spent)
    shared = hpo.shared_gpu_note(spent) if energy.column is not None else None
    if shared is not None:
        report.cannot.append(shared)
    target_words = (
        f"target accuracy {target:g}"
        if target is not None
        else f"target = {hpo.RELATIVE_TARGET:g} x the best any strategy reached on the same problem"
    )
    report.heading("Hyperparameter search")
    report.text(
        "A round is one configuration, trained once per repetition; the round's accuracy is the mean "
        "over its repetitions, and a search's curve is the best round so far."
    )
    report.table(
        stats.best,
        "search_best",
        f"**Best accuracy per search** (best round-mean accuracy, the first round that reached it, and "
        f"the best single run), energy summed over every trial (failed ones too) until the best and "
        f"until the {target_words}; "
        f"{energy.caption()}.",
    )
    layout = hpo.study_layout(stats.best, stats.keys)
    if not layout.empty:
        report.table(
            layout,
            "search_best_layout",
            "**Best round-mean accuracy (round reached) in the study's layout**: a row per net and "
            "strategy, a column per data set and parameter count (no energy in this table).",
        )
    if not stats.summary.empty:
        report.table(
            stats.summary,
            "search_strategies",
            f"**Per strategy**, means over its searches; {target_words}; {energy.caption()}.",
        )
    report.figure(
        lambda p, t: figures.convergence(stats.curves, stats.keys, p, t),
        "convergence",
        "Convergence: best round-mean accuracy so far",
        "Best-so-far of each round's mean accuracy over its repetitions, per search "
        "(no energy in this figure).",
    )
    if energy.column is None:
        report.cannot.append(
            "no energy until the best: the trials' energy was not measured (energy_source none)."
        )
        return
    report.figure(
        lambda p, t: figures.energy_until(stats.best, stats.keys, p, t),
        "energy_until_best",
        f"Energy spent until the best and until the target ({energy.title()})",
        f"Energy of every ok trial up to the round of the best and of the target ({target_words}); "
        f"no bar where the target was never reached; {energy.caption()}.",
    )


def _architecture_section(report: Report, trials: pd.DataFrame) -> None:
    varied, energy, why_not = _architecture_input(trials)
    if why_not is not None:
        report.cannot.append(f"no architecture statistics: {why_not}.")
        return
    stats = architecture.architecture_stats(varied, energy.column)
    report.heading("Architecture (Experiment 2)")
    report.text(_cv_summary(stats.configurations, energy))
    report.table(
        stats.configurations,
        "architecture_configurations",
        f"**Energy per configuration**: mean, sample standard deviation and coefficient of variation "
        f"(cv = std / mean) of the energy per training run, accuracy, and Shapiro-Wilk on the energy; "
        f"{energy.caption()}.",
    )
    report.table(
        stats.normality,
        "architecture_normality",
        f"**Shapiro-Wilk** on every run's energy per data set and net (normal when p >= 0.05); "
        f"{energy.caption()}.",
    )
    if not stats.factors.empty:
        report.table(
            stats.factors,
            "architecture_factors",
            "**Kruskal-Wallis per factor** (scipy.stats.kruskal) with eta-squared = (H - k + 1) / (n - k), "
            "Cohen's f = sqrt(eta2 / (1 - eta2)), its magnitude by Cohen's thresholds 0.01 / 0.06 / 0.14 "
            "(small / medium / large), and the increase of mean energy from the lowest to the highest "
            f"level; {energy.caption()}.",
        )
    if stats.clusters.empty:
        report.cannot.append("no E+/E- clusters: the conv layers do not vary.")
    else:
        report.table(
            stats.clusters,
            "architecture_clusters",
            f"**E- (fewest conv layers) and E+ (most)**: mean energy per run, mean / max / standard "
            f"deviation of accuracy; {energy.caption()}.",
        )
    _architecture_figures(report, varied, energy)


def _architecture_input(trials: pd.DataFrame):
    """The trials whose architecture varies, with a measured energy column, and that column's
    choice; or why there are none (a clause)."""
    if not any(f in trials for f in architecture.FACTORS):
        return None, None, "the trials carry none of the columns n_linear, n_conv, relu"
    varied = _architecture_trials(trials)
    if varied.empty:
        return None, None, "the trials vary no architecture factor"
    energy = choose_energy(varied, "idle_free_energy_j", "energy_j", "no idle baseline was stored")
    if energy.column is None:
        return None, None, "the trials' energy was not measured (energy_source none)"
    return varied[pd.to_numeric(varied[energy.column], errors="coerce").notna()], energy, None


def _architecture_figures(report: Report, varied: pd.DataFrame, energy) -> None:
    report.figure(
        lambda p, t: figures.energy_vs_accuracy(varied, energy.column, p, t),
        "architecture_energy_accuracy",
        f"Training energy against accuracy per configuration ({energy.title()})",
        f"One point per training run; triangles are the E+ cluster (most conv layers); {energy.caption()}.",
    )
    report.figure(
        lambda p, t: figures.energy_by_factor(
            varied, energy.column, architecture.varied_factors(varied), p, t
        ),
        "architecture_energy_by_factor",
        f"Training energy per factor level ({energy.title()})",
        f"Box plots of the energy per training run at each level of each factor; {energy.caption()}.",
    )


def _architecture_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of the data sets and nets whose architecture varies."""
    groups = architecture.groups_of(trials)
    if not groups:
        return trials if architecture.varied_factors(trials) else trials.iloc[0:0]
    keep = [runs for _, runs in trials.groupby(groups, dropna=False) if architecture.varied_factors(runs)]
    return pd.concat(keep) if keep else trials.iloc[0:0]


def _cv_summary(configurations: pd.DataFrame, energy: Provenance) -> str:
    groups = architecture.groups_of(configurations)
    lines = []
    for key, part in configurations.groupby(groups) if groups else [((), configurations)]:
        name = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        lines.append(
            f"- {name}: coefficient of variation of energy within a configuration averages "
            f"{part['cv'].mean():.4f}, at most {part['cv'].max():.4f} ({len(part)} configurations)."
        )
    return "\n".join(lines) + f"\n\n({energy.caption()})"


def _inference_section(report: Report, runs: pd.DataFrame, batches: pd.DataFrame | None) -> None:
    if runs.empty:
        report.cannot.append("no inference statistics: every run failed.")
        return
    energy = choose_energy(
        runs, "energy_per_image_j", "idle_free_energy_per_image_j", "the total energy was not stored"
    )
    report.heading("Inference")
    table, shared = inference.shared_settings(inference.run_table(runs))
    report.table(
        table,
        "inference_runs",
        "**Every run**: energy per image (idle included, as in the study; the idle-free part beside it) "
        "and response times at the caller"
        + (f"; every run shares {shared}" if shared else "")
        + f"; {energy.caption()}.",
    )
    if energy.column is None:
        report.cannot.append(
            "no inference energy figures: the runs' energy was not measured (energy_source none)."
        )
        return
    report.figure(
        lambda p, t: figures.energy_vs_latency(runs, energy.column, p, t),
        "inference_energy_latency",
        f"Energy per image against maximum response time ({energy.title()})",
        f"A panel per model, a colour per request frequency, each point labelled with its batching policy; "
        f"{energy.caption()}.",
    )
    table = inference.timeline(runs, energy.column)
    report.table(
        table,
        "inference_timeline",
        f"**Energy per image by model in order of publication**: mean over the model's runs, its best run, "
        f"and the change of the mean against the first model; {energy.caption()}.",
    )
    report.figure(
        lambda p, t: figures.timeline(table, p, t),
        "inference_timeline",
        f"Energy per image by model, in order of publication ({energy.title()})",
        f"Bars: mean over each model's runs; dashes: its best run; {energy.caption()}.",
    )
    _peak_power(report, runs, batches)


def _peak_power(report: Report, runs: pd.DataFrame, batches: pd.DataFrame | None) -> None:
    peak_sources = Provenance(
        "peak_power_w", sources_of(runs), quantity="power", fields=fields_of(runs, "peak_power_field")
    )
    if "peak_power_w" not in runs or runs["peak_power_w"].isna().all():
        report.cannot.append("no peak power: the runs carry no peak_power_w values.")
        return
    table, basis = inference.peak_power(runs, batches)
    if table.empty:
        report.cannot.append(
            "no peak power of small against large batches: neither batches.parquet nor "
            "mean_batch_size was stored."
        )
        return
    report.table(
        table,
        "inference_peak_power",
        f"**{_peak_words(peak_sources)}, small against large batches** ({basis}: "
        + (
            f"batches of at most {inference.SMALL_BATCH} images against the largest batch size served"
            if basis == "per batch"
            else "the run with the smallest mean batch against the one with the largest"
        )
        + f"); {peak_sources.caption()}.",
    )
    report.figure(
        lambda p, t: figures.peak_power(table, basis, p, t),
        "inference_peak_power",
        f"{_peak_words(peak_sources)} of small and large batches ({peak_sources.title()})",
        f"{_peak_words(peak_sources)} {basis}; {peak_sources.caption()}.",
    )


def _peak_words(peak: Provenance) -> str:
    """What the peak column is: a peak, or (from NVML's 1 s average field) the highest average."""
    if peak.fields and set(peak.fields) <= {"average"}:
        return "Highest 1 s average power (not a peak)"
    return "Peak power"
