"""What greenray shows a person: progress bars, the tables of `doctor`, `meter` and
`serve-bench`, and the labels that keep simulated energy from passing as a measurement. Rich
only; nothing here measures or decides."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from greenray.energy import EnergyMeter, Measurement

# Piped output gets a wide console so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

SIMULATED_LABEL = " (simulated, not a measurement)"


def say(line: str) -> None:
    """One line of progress on stderr, printed as it is (no markup from data)."""
    err.print(line, highlight=False, markup=False, soft_wrap=True)


def bars(*, label: str | None = None, description_last: bool = False) -> Progress:
    """Progress bars on stderr: description (or `label`), bar, done/total, elapsed time."""
    head = [TextColumn(label)] if label else [TextColumn("{task.description}")]
    tail = [TextColumn("{task.description}")] if description_last else []
    return Progress(*head, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), *tail, console=err)


def cell(value) -> str:
    """A table cell: '-' for nothing, 4 significant digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ------------------------------------------------------------------------------ doctor


SHORT_WINDOWS = {
    "instant": "nvml-power (instant field)",
    "average": "nvml-power (1 s average field: short windows are estimates, peaks are 1 s averages)",
}


def gpu_table(nvml) -> Table:
    """The GPUs NVML sees (greenray.energy.nvml.NvmlBackend), one row each: what long and short
    windows are measured from."""
    table = Table(title=f"NVIDIA GPUs (driver {nvml.driver_version()})")
    columns = ("device", "name", "NVML index", "UUID", "long windows", "short windows", "limit W", "power W")
    for column in columns:
        table.add_column(column)
    for device in nvml.devices():
        limit = nvml.power_limit_w(device)
        uuid = device.uuid or ""
        if device.shared:
            uuid = f"{uuid} (MIG instance {device.mig_uuid} measured as its whole GPU)"
        table.add_row(
            device.key,
            device.name,
            str(device.index),
            uuid,
            "nvml-counter" if nvml.has_counter(device) else "nvml-power (no energy counter)",
            SHORT_WINDOWS.get(nvml.power_field, f"nvml-power ({nvml.power_field} field)"),
            f"{limit:.0f}" if limit else "?",
            f"{nvml.read_power_w(device):.1f}",
        )
    return table


def energy_sources(meter: EnergyMeter) -> str:
    """What a meter measures, per device (a long window's source), or why nothing."""
    sources = meter.device_sources()
    if not sources:
        return f"none ({meter.empty_reason or 'nothing is readable'}): energy is not measured"
    return ", ".join(f"{key}: {source}" for key, source in sources.items())


# ------------------------------------------------------------------------------- meter


def print_idle(meter: EnergyMeter, idle_w: dict[str, float], as_json: bool) -> None:
    """The idle baseline per device, with its spread and how long the power took to settle."""
    stats = meter.idle_stats
    if as_json:
        data = {"idle_w": idle_w, "energy_sources": sorted(meter.sources)}
        data["idle_stats"] = {key: asdict(s) for key, s in stats.items()}
        out.print_json(json.dumps(data))
        return
    if not idle_w:
        out.print("idle power: nothing measurable here (energy source: none)")
    label = SIMULATED_LABEL if "simulated" in meter.sources else ""
    for key, watts in idle_w.items():
        line = f"idle power {key}: {watts:.1f} W"
        if key in stats:
            s = stats[key]
            settled = f"settled after {s.settle_s:.1f} s" if s.settled else "still changing when measured"
            line += f" (spread {s.spread_w:.1f} W, {settled})"
        out.print(line + label)


def print_measurement(m: Measurement, command: list[str], code: int, idle_w: dict, as_json: bool) -> None:
    """A measured command: JSON on stdout, or a table per device on stderr (the command's own
    output is on stdout)."""
    if as_json:
        data = m.to_dict() | {"command": command, "exit_code": code, "idle_w": idle_w}
        print(json.dumps(data, default=str))
        return
    label = SIMULATED_LABEL if m.energy_source == "simulated" else ""
    title = f"{' '.join(command)}: {m.seconds:.3f} s, exit code {code}{label}"
    if not m.devices:
        err.print(f"{' '.join(command)}: {m.seconds:.3f} s; energy not measured (source: none)")
        return
    flags = [f for f, on in (("partial", m.energy_partial), ("approximate", m.approximate)) if on]
    caption = "; ".join([f"power field: {m.power_field or 'mixed'}", *flags, *([m.note] if m.note else [])])
    averaged = any(d.power_field == "average" for d in m.devices)
    table = Table(title=title, caption=caption)
    headings = (
        "device",
        "name",
        "J",
        "± J",
        "idle-free J",
        "avg W",
        "max 1 s avg W" if averaged else "peak W",
    )
    for column in (*headings, "field", "samples", "source"):
        table.add_column(column)
    for d in m.devices:
        row = (d.joules, d.uncertainty_j, d.idle_free_joules, d.avg_power_w, d.peak_power_w)
        cells = (*(_fixed(v) for v in row), str(d.power_field), str(d.samples), d.source)
        table.add_row(d.device.key, d.device.name, *cells)
    err.print(table)


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ------------------------------------------------------------------------- serve-bench

RUN_COLUMNS = {
    "model": "model",
    "policy": "policy",
    "frequency_hz": "Hz",
    "served": "served",
    "energy_per_image_j": "J/image",
    "idle_free_energy_per_image_j": "idle-free J/image",
    "p50_latency_s": "p50 s",
    "p99_latency_s": "p99 s",
    "max_latency_s": "max s",
    "achieved_rate_hz": "sent Hz",
    "mean_batch_size": "mean batch",
    "peak_power_w": "peak W",
    "energy_source": "source",
}


def runs_table(rows: list[dict], title: str = "serve-bench") -> Table:
    """Serving runs, one row each."""
    simulated = any(row.get("energy_source") == "simulated" for row in rows)
    table = Table(title=title + (" (energy simulated, not measured)" if simulated else ""))
    columns = dict(RUN_COLUMNS)
    if any(row.get("co2e_g") is not None for row in rows):  # a grid intensity was given
        columns = {k: v for k, v in columns.items() if k != "energy_source"} | {
            "co2e_g": "g CO2e",
            "energy_source": "source",
        }
    for heading in columns.values():
        table.add_column(heading)
    for row in rows:
        table.add_row(*(cell(row.get(key)) for key in columns))
    return table


# ------------------------------------------------------------------- serve, serve-tune

TUNE_COLUMNS = {
    "policy": "policy",
    "energy_per_image_j": "J/image",
    "idle_free_energy_per_image_j": "idle-free J/image",
    "p99_ms": "p99 ms",
    "mean_batch_size": "mean batch",
    "meets_slo": "meets target",
}


def print_tuned(result, folder) -> None:
    """A policy search (greenray.serve.policy_tuner.TuneResult): every run, then the choice and
    its saving against Serve's default policy."""
    simulated = result.baseline.energy_source == "simulated"
    label = SIMULATED_LABEL if simulated else ""
    table = Table(
        title=f"serve-tune: p99 <= {result.slo_ms:g} ms at {result.frequency_hz:g} Hz"
        + (" (energy simulated, not measured)" if simulated else "")
    )
    for heading in TUNE_COLUMNS.values():
        table.add_column(heading)
    for observation in result.observations:
        values = vars(observation)
        table.add_row(*(cell(values[key]) for key in TUNE_COLUMNS))
    out.print(table)
    base = result.baseline
    out.print(
        f"Serve's default ({base.policy}): {cell(base.energy_per_image_j)} J/image{label}, "
        f"p99 {cell(base.p99_ms)} ms",
        highlight=False,
    )
    if result.best is None:
        out.print(f"no policy met the target in {result.live_runs} live runs", highlight=False)
    else:
        best = result.best
        saving = "-" if result.saving is None else f"{100 * result.saving:.1f}%"
        idle_free = (
            "" if result.idle_free_saving is None else f" ({100 * result.idle_free_saving:.1f}% idle-free)"
        )
        out.print(
            f"chosen: {best.policy}: {cell(best.energy_per_image_j)} J/image{label}, "
            f"p99 {cell(best.p99_ms)} ms; saves {saving}{idle_free} of Serve's default's energy per image, "
            f"in {result.live_runs} live runs",
            highlight=False,
        )
    out.print(f"results: {folder}", highlight=False, soft_wrap=True)


def print_serving(server) -> None:
    say(
        f"serving {server.model.name} with {server.policy} on {server.url}: POST /predict (image/jpeg "
        f"or image/png), GET /metrics, GET /healthz; batches go to {server.out / 'batches.parquet'}; "
        "Ctrl-C stops"
    )
    if server.direct_urls:
        others = ", ".join(server.direct_urls[1:])
        say(
            f"Serve's fast path: {server.url} is a replica's own port"
            + (f" (the others: {others})" if others else "")
            + f"; Serve's proxy also answers on {server.proxy_url}, slower"
        )


def print_stopped(summary) -> None:
    label = SIMULATED_LABEL if summary.energy_source == "simulated" else ""
    energy = (
        "energy not measured"
        if summary.batch_energy_j is None
        else f"{summary.batch_energy_j:.4g} J in batches{label}"
        + (f" ({summary.co2e_g:.4g} g CO2e)" if getattr(summary, "co2e_g", None) is not None else "")
    )
    say(
        f"stopped: {summary.images} images in {summary.batches} batches, {energy}; "
        f"batches in {summary.out / 'batches.parquet'}"
        + (f" ({summary.dropped} older batch records were dropped by replicas)" if summary.dropped else "")
    )
