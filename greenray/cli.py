"""The `greenray` command line: hpo, serve-bench, report, run, meter, doctor.

Commands parse and check flags, then hand over to the package; heavy imports (torch, Ray)
happen inside the commands so `--help` and bad flags answer at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from greenray.energy import EnergyMeter, EnergyUnavailable, Measurement
from greenray.errors import UsageError

app = typer.Typer(
    name="greenray",
    help="Energy as a first-class number in hyperparameter search and batched inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output gets a wide console so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def user_errors(command):
    """Turn a UsageError into one sentence on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="greenray: %(message)s")
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


# Options shared by every command that measures energy.
EnergyOpt = Annotated[
    Literal["auto", "nvml", "rapl", "simulated", "none"],
    typer.Option(
        "--energy",
        help="Energy backend: auto (NVML GPUs, else RAPL), nvml, rapl, simulated (labelled so), none.",
    ),
]
RequireEnergyOpt = Annotated[
    bool, typer.Option("--require-energy", help="Exit 2 instead of running unmeasured.")
]
IntervalOpt = Annotated[
    float, typer.Option("--interval-ms", min=1.0, help="Power sampling interval in milliseconds.")
]


def open_meter(energy: str, interval_ms: float = 10.0, require_energy: bool = False) -> EnergyMeter:
    """The meter a command asked for, or a UsageError saying why it cannot be had."""
    try:
        meter = EnergyMeter.create(energy, interval_s=interval_ms / 1000.0)
    except EnergyUnavailable as exc:
        raise UsageError(f"--energy {energy} is not available here ({exc}); use --energy auto") from None
    if require_energy and not meter.devices:
        meter.close()
        raise UsageError(
            "no energy source is readable here (no NVML GPU, no readable RAPL counter); "
            "drop --require-energy or run where one is"
        )
    return meter


# ---------------------------------------------------------------------------- doctor


@app.command()
@user_errors
def doctor() -> None:
    """What this machine can measure: GPUs, energy counters, RAPL, Ray, torch and CUDA."""
    from greenray.energy.nvml import NvmlBackend
    from greenray.energy.rapl import RaplBackend

    try:
        nvml = NvmlBackend()
    except EnergyUnavailable as exc:
        out.print(f"NVML: not available ({exc})")
        nvml = None
    if nvml is not None:
        table = Table(title=f"NVIDIA GPUs (driver {nvml.driver_version()})")
        for column in (
            "device",
            "name",
            "NVML index",
            "UUID",
            "energy counter",
            "power field",
            "power limit W",
            "power W",
        ):
            table.add_column(column)
        for device in nvml.devices():
            limit = nvml.power_limit_w(device)
            table.add_row(
                device.key,
                device.name,
                str(device.index),
                device.uuid or "",
                "yes" if nvml.has_counter(device) else "no (power samples instead)",
                nvml.power_field,
                f"{limit:.0f}" if limit else "?",
                f"{nvml.read_power_w(device):.1f}",
            )
        out.print(table if nvml.devices() else "NVML: no GPU visible to this process")
        nvml.close()
    try:
        rapl = RaplBackend()
        out.print("RAPL: " + ", ".join(d.key for d in rapl.devices()))
    except EnergyUnavailable as exc:
        out.print(f"RAPL: not available ({exc})")
    out.print(f"energy source with --energy auto: {_auto_source()}")
    for name, version in _versions().items():
        out.print(f"{name}: {version}")


def _auto_source() -> str:
    with EnergyMeter.create("auto") as meter:
        sources = sorted(meter.sources)
    return ", ".join(sources) if sources else "none (energy is not measured)"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("greenray", "ray", "torch", "torchvision", "bayesian-optimization", "nvidia-ml-py"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import torch

        cuda = torch.version.cuda or "none (CPU build)"
        versions["CUDA"] = f"{cuda}, available: {torch.cuda.is_available()}"
    except ImportError:
        pass
    return versions


# ----------------------------------------------------------------------------- meter


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def meter(
    command: Annotated[list[str] | None, typer.Argument(help="The command to measure, after --.")] = None,
    idle: Annotated[
        float | None, typer.Option("--idle", help="Measure idle power for SECONDS first.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the command's stdout goes to stderr).")
    ] = False,
    energy: EnergyOpt = "auto",
    interval_ms: IntervalOpt = 10.0,
    require_energy: RequireEnergyOpt = False,
) -> None:
    """Run a command and print its time and energy per device: greenray meter -- CMD ARGS..."""
    if idle is not None and idle <= 0:
        raise UsageError(f"--idle needs a positive number of seconds, not {idle:g}")
    if not command and idle is None:
        raise UsageError(
            "give a command to measure after --, e.g. greenray meter -- python train.py, or --idle SECONDS"
        )
    if command and shutil.which(command[0]) is None:
        raise UsageError(f"command not found: {command[0]!r}; give a program on PATH or a path to one")
    with open_meter(energy, interval_ms, require_energy) as power:
        idle_w = power.measure_idle(idle) if idle is not None else {}
        if not command:
            _print_idle(idle_w, power, as_json)
            return
        with power.window("command") as window:
            code = subprocess.run(command, stdout=sys.stderr if as_json else None).returncode
    _print_measurement(window.measurement, command, code, idle_w, as_json)
    if require_energy and window.measurement.energy_source == "none":
        raise UsageError("the energy source stopped answering during the command (see the warning above)")
    raise typer.Exit(code)


def _print_idle(idle_w: dict[str, float], power: EnergyMeter, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"idle_w": idle_w, "energy_sources": sorted(power.sources)}))
        return
    if not idle_w:
        out.print("idle power: nothing measurable here (energy source: none)")
    for key, watts in idle_w.items():
        out.print(f"idle power {key}: {watts:.1f} W")


def _print_measurement(m: Measurement, command: list[str], code: int, idle_w: dict, as_json: bool) -> None:
    if as_json:
        data = m.to_dict() | {"command": command, "exit_code": code, "idle_w": idle_w}
        print(json.dumps(data, default=str))
        return
    label = " (simulated, not a measurement)" if m.energy_source == "simulated" else ""
    table = Table(title=f"{' '.join(command)}: {m.seconds:.3f} s, exit code {code}{label}")
    for column in ("device", "name", "J", "idle-free J", "avg W", "peak W", "samples", "source"):
        table.add_column(column)
    for d in m.devices:
        table.add_row(
            d.device.key,
            d.device.name,
            _fmt(d.joules),
            _fmt(d.idle_free_joules),
            _fmt(d.avg_power_w),
            _fmt(d.peak_power_w),
            str(d.samples),
            d.source,
        )
    err.print(
        table if m.devices else f"{' '.join(command)}: {m.seconds:.3f} s; energy not measured (source: none)"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ------------------------------------------------------------------------------- hpo

# ----------------------------------------------------------------------- serve-bench

# -------------------------------------------------------------------- report and run


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    app()


if __name__ == "__main__":
    main()
