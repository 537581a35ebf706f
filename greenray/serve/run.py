"""One serving run: set the policy on the running replicas, open their run windows, send requests
at the rate asked until enough are served, close the windows, then drain what is still queued
(outside the run) and collect every replica's batch records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from greenray.config import BatchPolicy, BenchConfig
from greenray.serve.deployment import RunEnd
from greenray.serve.loadgen import LoadGenerator, RequestTiming, SendStats, arrival_offsets
from greenray.serve.replicas import Replicas

DRAIN_TIMEOUT_S = 600.0


@dataclass
class RunResult:
    timings: list[RequestTiming]
    ends: list[RunEnd]  # per replica
    records: list[dict]  # per replica: take_records' answer
    send_stats: SendStats
    still_pending: int
    errors: int = 0
    failure: str | None = None


async def serve_run(
    replicas: Replicas,
    config: BenchConfig,
    run_id: str,
    frequency: float,
    policy: BatchPolicy,
    images: list,
    filler,
    on_progress: Callable[[int], None] = lambda served: None,
) -> RunResult:
    """One run of `config.requests` served requests at `frequency` Hz under `policy`."""
    await replicas.acall("set_policy", policy.max_batch_size, policy.batch_wait_timeout_s)
    await replicas.acall("begin_run", run_id)
    stop = asyncio.Event()
    answered = {"ok": 0, "failed": 0}
    failure_limit = max(10, config.requests // 10)

    def on_answer(timing: RequestTiming, ok: bool) -> None:
        answered["ok" if ok else "failed"] += 1
        on_progress(min(answered["ok"], config.requests))
        if answered["ok"] >= config.requests or answered["failed"] >= failure_limit:
            stop.set()

    generator = LoadGenerator(
        lambda i: replicas.send(i, images[i % len(images)]),
        arrival_offsets(config.arrival, frequency, config.seed),
        on_answer=on_answer,
        max_in_flight=replicas.send_window,
    )
    await generator.run(stop)
    ends = await replicas.acall("end_run", run_id)
    still_pending = await drain(replicas, generator, policy, filler)
    await replicas.acall("set_policy", policy.max_batch_size, policy.batch_wait_timeout_s)
    records = await replicas.acall("take_records")
    failure = None
    if answered["failed"] >= failure_limit:
        errors = [t.error for t in generator.timings if t.error]
        failure = f"{answered['failed']} requests failed, e.g. {errors[0]}"
    return RunResult(
        timings=generator.timings,
        ends=ends,
        records=records,
        send_stats=generator.stats(),
        still_pending=still_pending,
        errors=answered["failed"],
        failure=failure,
    )


async def drain(replicas: Replicas, generator: LoadGenerator, policy: BatchPolicy, filler) -> int:
    """Let every request still queued be answered (outside the run). Serve reads a batch's
    timeout when its first request arrives, so a fixed:N partial batch already waiting stays
    until full whatever the new timeout: it is filled with extra images."""
    if not generator.pending:
        return 0
    await replicas.acall("set_policy", policy.max_batch_size, 0.0)
    fillers = []
    if policy.waits_forever:
        fillers = [h.remote(filler) for h in replicas.handles for _ in range(policy.size - 1)]
    missing = await generator.drain(DRAIN_TIMEOUT_S)
    await asyncio.gather(*fillers, return_exceptions=True)
    return missing
