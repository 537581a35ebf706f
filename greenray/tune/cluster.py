"""What a study needs of the Ray cluster before any trial starts: each GPU's (or node's) idle
power, measured where the trials will run; how many trials fit at once; whether the resources
asked for exist; and the counter of trials sharing a GPU."""

from __future__ import annotations

import hashlib
import math
import socket
from dataclasses import dataclass, field
from pathlib import Path

from greenray.config import EnergyConfig, ResourceConfig, StudyConfig
from greenray.energy import EnergyRequestError, nothing_readable
from greenray.errors import UsageError

PLACEMENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class IdleReading:
    """What one idle task saw: its node, the idle W per device UUID and the energy sources;
    `refusal` when the backend asked for cannot be had there (a UsageError's sentence)."""

    node: str
    watts: dict[str, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    refusal: str | None = None


def measure_here(energy: EnergyConfig) -> IdleReading:
    """Idle power of the devices this process sees (the task's GPU, the node's CPUs)."""
    node = socket.gethostname()
    try:
        meter = energy.model_copy(update={"require": False}).open_meter(quiet=True)
    except EnergyRequestError as exc:
        return IdleReading(node, refusal=str(exc))
    with meter:
        if energy.idle_seconds > 0 and meter.devices:
            meter.measure_idle(energy.idle_seconds)
        return IdleReading(node, meter.baseline(), tuple(sorted(meter.sources)))


def measure_cluster(energy: EnergyConfig, use_gpus: bool) -> list[IdleReading]:
    """One reading per GPU of the cluster (each task holds a whole GPU, all at once, so each
    measures a different one) or, without GPUs, one per alive node."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import (
        NodeAffinitySchedulingStrategy,
        PlacementGroupSchedulingStrategy,
    )

    task = ray.remote(measure_here)
    if not use_gpus:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        strategies = [NodeAffinitySchedulingStrategy(n, soft=False) for n in nodes]
        return ray.get([task.options(num_cpus=0, scheduling_strategy=s).remote(energy) for s in strategies])
    gpus = int(ray.cluster_resources().get("GPU", 0))
    group = placement_group([{"GPU": 1}] * gpus, strategy="PACK")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
        refs = [
            task.options(
                num_cpus=0,
                num_gpus=1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
            ).remote(energy)
            for i in range(gpus)
        ]
        return ray.get(refs)
    except ray.exceptions.GetTimeoutError:  # busy GPUs: the trials go on without a baseline
        return [IdleReading("cluster")]
    finally:
        remove_placement_group(group)


def baseline_by_node(readings: list[IdleReading]) -> dict[str, dict[str, float]]:
    """{node: {device UUID: idle W}}, the form with_energy's `baseline` takes."""
    baseline: dict[str, dict[str, float]] = {}
    for reading in readings:
        baseline.setdefault(reading.node, {}).update(reading.watts)
    return {node: watts for node, watts in baseline.items() if watts}


def idle_baseline(config: StudyConfig, say) -> list[IdleReading]:
    """Each GPU's (or node's) idle power where the study's trials will run, before any starts;
    a UsageError where the energy asked for cannot be had there."""
    energy = config.energy
    readings = measure_cluster(energy, use_gpus=(config.resources.gpus_per_trial or 0) > 0)
    measured = [r for r in readings if r.sources]
    refused = [r.refusal for r in readings if r.refusal]
    if refused or (energy.require and not measured):
        raise UsageError(refused[0] if refused else _nothing_measurable(readings))
    if not measured:
        say("idle baseline: skipped, nothing is measurable where the trials run (energy source: none)")
    for reading in measured:
        label = " (simulated, not a measurement)" if "simulated" in reading.sources else ""
        watts = ", ".join(f"{uuid} {w:.1f} W" for uuid, w in reading.watts.items())
        say(f"idle baseline on {reading.node}: {watts}{label}" if watts else _skipped(reading))
    return readings


def _nothing_measurable(readings: list[IdleReading]) -> str:
    return nothing_readable(", ".join(sorted({r.node for r in readings})))


def _skipped(reading: IdleReading) -> str:
    return f"idle baseline on {reading.node}: skipped (--idle-seconds 0), so idle-free energy is not reported"


# --------------------------------------------------------------------------- resources


def with_resources(config: StudyConfig) -> StudyConfig:
    """The config with --gpus-per-trial decided (1 where the cluster has GPUs, else 0) and
    checked against the cluster."""
    import ray

    gpus = config.resources.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    check_resources(config.resources.model_copy(update={"gpus_per_trial": gpus}))
    return config.replace(gpus_per_trial=gpus)


def check_resources(resources: ResourceConfig) -> None:
    """A UsageError when no alive node could ever hold one trial."""
    import ray

    gpus, cpus = resources.gpus_per_trial or 0.0, resources.cpus_per_trial
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    if gpus > 0 and most_gpus == 0:
        raise UsageError(f"--gpus-per-trial {gpus:g} asks for a GPU, but this Ray cluster has none: use 0")
    if gpus > most_gpus:
        raise UsageError(
            f"--gpus-per-trial {gpus:g} is more than any node has ({most_gpus:g}): use at most that"
        )
    if cpus > most_cpus:
        raise UsageError(
            f"--cpus-per-trial {cpus:g} is more than any node has ({most_cpus:g}): use at most that"
        )


def trial_slots(resources: ResourceConfig) -> int:
    """How many trials the cluster's alive nodes can run at once with these resources."""
    import ray

    cpus, gpus = resources.cpus_per_trial, resources.gpus_per_trial or 0.0
    slots = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        available = node.get("Resources", {})
        fits = math.floor(available.get("CPU", 0) / cpus + 1e-9)
        if gpus > 0:
            fits = min(fits, math.floor(available.get("GPU", 0) / gpus + 1e-9))
        slots += fits
    return max(slots, 1)


@dataclass(frozen=True)
class ShareCounter:
    """The study's counter of trials per GPU: its name (trials look it up) and the handle that
    keeps it alive while the trials run (Ray collects an actor nobody holds)."""

    name: str
    handle: object


def share_counter(config: StudyConfig, out: Path) -> ShareCounter | None:
    """The counter for a study whose trials hold GPUs, on this node; None otherwise."""
    from greenray.tune.sharing import start_counter

    if not (config.resources.gpus_per_trial or 0) > 0:
        return None
    name = f"greenray-gpu-shares-{hashlib.sha1(str(out).encode()).hexdigest()[:12]}"
    return ShareCounter(name, start_counter(name))
