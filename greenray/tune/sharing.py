"""Who shares a GPU. With a fractional --gpus-per-trial several trials train on one GPU at once
and each measures the whole device (a device's energy cannot be split honestly between
processes), so each row says how many trials held its GPU at most during its window. A small
actor on the driver's node keeps the count."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ray


class GpuShares:
    """Trials on each GPU (keyed by node and Ray's GPU id) and, per trial, the most that were
    on its GPU at once since it started, itself included."""

    def __init__(self) -> None:
        self._holders: dict[str, set[str]] = {}
        self._most: dict[str, int] = {}

    def enter(self, gpu: str, trial: str) -> None:
        holders = self._holders.setdefault(gpu, set())
        holders.add(trial)
        for holder in holders:
            self._most[holder] = max(self._most.get(holder, 0), len(holders))

    def most(self, trial: str) -> int:
        return self._most.get(trial, 0)

    def leave(self, gpu: str, trial: str) -> None:
        self._holders.get(gpu, set()).discard(trial)
        self._most.pop(trial, None)


ShareCounter = ray.remote(num_cpus=0)(GpuShares)


def start_counter(name: str):
    """The study's counter, on the driver's node (a worker node may be lost mid-study). Hold the
    handle while trials run: Ray stops an actor nobody holds, named or not."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ShareCounter.options(
        name=name,
        get_if_exists=True,
        lifetime=None,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote()


@contextmanager
def gpu_sharing(counter_name: str | None, trial: str) -> Iterator[callable]:
    """Count this trial on its GPU(s) while the block runs; yields a function that says the
    most trials seen on them at once so far (None where the trial holds no GPU or nothing counts)."""
    gpus = (
        [f"{ray.get_runtime_context().get_node_id()}/{g}" for g in ray.get_gpu_ids()] if counter_name else []
    )
    if not gpus:
        yield lambda: None
        return
    counter = ray.get_actor(counter_name)
    ray.get([counter.enter.remote(gpu, trial) for gpu in gpus])
    try:
        yield lambda: ray.get(counter.most.remote(trial))
    finally:
        for gpu in gpus:
            counter.leave.remote(gpu, trial)
