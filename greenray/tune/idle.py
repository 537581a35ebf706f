"""The idle baseline of a study, measured before any trial starts where the trials will run: one
Ray task per GPU (holding that GPU, as a trial does), or one per node when trials use no GPU."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from greenray.energy import EnergyMeter, EnergyUnavailable

PLACEMENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class IdleReading:
    """What one idle task saw: its node, the idle W per device UUID, and why nothing, if so
    (`available` False: the --energy backend asked for cannot be opened there)."""

    node: str
    watts: dict[str, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    problem: str | None = None
    available: bool = True


def worker_meter(energy: str, interval_ms: float) -> EnergyMeter:
    """A meter for a Ray worker (a trial, an idle task). Its "nothing is measurable" warning is
    left to the driver, which says it once for the study instead of once per trial."""
    logger = logging.getLogger("greenray.energy")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return EnergyMeter.create(energy, interval_s=interval_ms / 1000.0)
    finally:
        logger.setLevel(level)


def measure_here(energy: str, seconds: float, interval_ms: float) -> IdleReading:
    """Idle power of the devices this process sees (the task's GPU, the node's CPUs)."""
    node = socket.gethostname()
    try:
        meter = worker_meter(energy, interval_ms)
    except EnergyUnavailable as exc:
        return IdleReading(
            node, problem=f"--energy {energy} is not available on {node} ({exc})", available=False
        )
    with meter:
        if not meter.devices:
            return IdleReading(node, problem=f"nothing measurable on {node}")
        if seconds > 0:
            meter.measure_idle(seconds)
        return IdleReading(node, meter.baseline(), tuple(sorted(meter.sources)))


def measure_cluster(energy: str, seconds: float, interval_ms: float, use_gpus: bool) -> list[IdleReading]:
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
        refs = [
            task.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)
            ).remote(energy, seconds, interval_ms)
            for n in nodes
        ]
        return ray.get(refs)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    group = placement_group([{"GPU": 1}] * gpus, strategy="PACK")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
        refs = [
            task.options(
                num_cpus=0,
                num_gpus=1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
            ).remote(energy, seconds, interval_ms)
            for i in range(gpus)
        ]
        return ray.get(refs)
    except ray.exceptions.GetTimeoutError:
        return [
            IdleReading(
                "cluster",
                problem=f"the cluster's {gpus} GPUs were not free within {PLACEMENT_TIMEOUT_S:.0f} s",
            )
        ]
    finally:
        remove_placement_group(group)


def baseline_by_node(readings: list[IdleReading]) -> dict[str, dict[str, float]]:
    """{node: {device UUID: idle W}}, the form trials adopt (EnergyMeter.use_baseline)."""
    baseline: dict[str, dict[str, float]] = {}
    for reading in readings:
        baseline.setdefault(reading.node, {}).update(reading.watts)
    return {node: watts for node, watts in baseline.items() if watts}
