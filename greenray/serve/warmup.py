"""A serve-bench warm-up that shows its progress and says, before the runs start, how long they
will take at the speed it measured: on a CPU the study's defaults (256 warm-up batches of 32, then
20 runs of 8192 requests of ConvNeXt) take hours, and a first run should say so, not sit silent."""

from __future__ import annotations

from dataclasses import dataclass

STEP_S = 2.0  # about how long one warm-up call to the replicas takes, after the first batch
LONG_S = 600.0  # beyond this, a phase is long enough to suggest smaller settings


@dataclass(frozen=True)
class WarmUp:
    seconds: list[float]  # per replica, every warm-up batch
    s_per_image: float | None  # the slowest replica's, in the last step (after the first, cold batch)


async def warm_up(model: str, replicas, deployment, progress) -> WarmUp:
    """deployment.warmup_batches batches on every replica, in steps of about STEP_S so the
    progress bar moves; after the first step, a notice if the rest will take long."""
    total, size = deployment.warmup_batches, deployment.warmup_batch_size
    task = progress.add_task(f"{model}: warm-up", total=total or 1)
    seconds = [0.0] * len(replicas.handles)
    done, step, rate = 0, 1, None
    while done < total:
        n = min(step, total - done)
        spent = await replicas.call("warmup", n, size)
        seconds = [a + b for a, b in zip(seconds, spent, strict=True)]
        first_warm = done == 1  # the first batch pays for cold caches and lazy set-up: not the speed
        rate = max(spent) / (n * size)
        done += n
        if first_warm:
            _say_if_long(progress, model, (total - done) * size * rate, "the warm-up", _WARMUP_FLAGS)
        step = max(1, int(STEP_S / (rate * size))) if done > 1 else 1
        progress.update(task, completed=done)
    progress.remove_task(task)
    return WarmUp(seconds, rate)


def runs_estimate_s(plans: list, replicas: int, s_per_image: float) -> float:
    """About how long `plans` (RunPlans) will take: each run sends its requests at its
    frequency, and cannot go faster than the replicas compute them."""
    return sum(
        max(plan.requests / plan.frequency_hz, plan.requests * s_per_image / max(1, replicas))
        for plan in plans
    )


def say_runs_estimate(progress, model: str, plans: list, replicas: int, s_per_image: float | None) -> None:
    """One line before the runs: how many, and about how long at the measured speed."""
    if s_per_image is None or not plans:
        return
    estimate = runs_estimate_s(plans, replicas, s_per_image)
    requests = ", ".join(sorted({str(plan.requests) for plan in plans}))
    progress.console.print(
        f"{model}: {len(plans)} run(s) of {requests} requests, about {_duration(estimate)} at the "
        f"warm-up's {s_per_image * 1000:.3g} ms per image",
        highlight=False,
    )
    _say_if_long(progress, model, estimate, "the runs", _RUN_FLAGS)


_WARMUP_FLAGS = "--warmup-batches 4 --warmup-batch-size 8"
_RUN_FLAGS = "fewer --requests (e.g. 64), one --policy and one --frequency, or a smaller --model"


def _say_if_long(progress, model: str, seconds: float, what: str, smaller: str) -> None:
    if seconds > LONG_S:
        progress.console.print(
            f"[yellow]notice:[/] {model}: {what} will take about {_duration(seconds)} on this device; "
            f"Ctrl-C and try {smaller} for a first look",
            highlight=False,
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
