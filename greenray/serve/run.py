"""The one API every driver of a deployment uses (serve-bench, serve-tune, `greenray serve`'s
search): `await model.run(RunPlan(rate, policy, requests))` sets the policy on the running
replicas, opens their run windows, sends requests at the rate until enough are served, closes
the windows, drains what is still queued (outside the run) and gives back every request's
timing at the caller, every batch the replicas ran and each replica's run window. Async: every
handle call it makes is on the caller's event loop (greenray.serve.loop for sync callers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import numpy as np

from greenray.config import BatchPolicy, ServingConfig
from greenray.serve.http_client import HttpPath
from greenray.serve.loadgen import LoadGenerator, RequestTiming, SendStats, arrival_offsets
from greenray.serve.records import RunEnd
from greenray.serve.replicas import Replicas
from greenray.serve.sender import HandleSender

DRAIN_TIMEOUT_S = 600.0
SETTLE_REQUESTS = 64  # requests of a settling run (see ServedModel.settle)


@dataclass(frozen=True)
class RunPlan:
    """One run: `requests` served requests at `frequency_hz` under `policy`, with arrivals of
    `arrival` (constant, jitter or poisson) seeded by `seed`."""

    frequency_hz: float
    policy: BatchPolicy
    requests: int
    arrival: str = "constant"
    seed: int = 0


@dataclass
class RunResult:
    timings: list[RequestTiming]  # every request, at the caller
    ends: list[RunEnd]  # per replica: its run window
    records: list[dict]  # per replica: its batches and numbered requests (RunRecorder.take)
    send_stats: SendStats
    still_pending: int
    errors: int = 0
    failure: str | None = None
    request_path: str = "handle"  # what the timings are of: handle (the replica's) or http (a client's)


@dataclass
class ServedModel:
    """One deployed model, ready for runs (greenray.serve.driver.start): what every run of it
    shares, and what its rows say of the deployment."""

    name: str
    replicas: Replicas
    infos: list[dict]  # each model replica's `info`
    images: list  # the images requests cycle through
    filler: np.ndarray  # an image that fills a partial batch at a drain
    about: dict  # what bench.json (or tune.json, serve.json) says of it
    serving: ServingConfig
    ingress_replicas: int
    g_per_kwh: float | None = None  # the grid's carbon intensity its rows' co2e_g is counted at
    http: HttpPath | None = None  # serve-bench --request-path http: requests go over HTTP

    @property
    def request_path(self) -> str:
        """Which path a run's requests take (and so what its response times describe)."""
        return "http" if self.http is not None else "handle"

    async def use(self, policy: BatchPolicy) -> None:
        """Batch under `policy` on every model replica from now on."""
        await self.replicas.call("set_policy", policy)

    async def run(
        self, plan: RunPlan, run_id: str, on_progress: Callable[[int], None] = lambda served: None
    ) -> RunResult:
        """One run of `plan`; `on_progress` sees the served count as answers come."""
        replicas = self.replicas
        await self.use(plan.policy)
        await replicas.call("begin_run", run_id)
        stop = asyncio.Event()
        answered = {"ok": 0, "failed": 0}
        failure_limit = max(10, plan.requests // 10)

        def on_answer(timing: RequestTiming, ok: bool) -> None:
            answered["ok" if ok else "failed"] += 1
            on_progress(min(answered["ok"], plan.requests))
            if answered["ok"] >= plan.requests or answered["failed"] >= failure_limit:
                stop.set()

        async with self._sender(plan.policy) as send:
            generator = LoadGenerator(
                send,
                arrival_offsets(plan.arrival, plan.frequency_hz, plan.seed),
                on_answer=on_answer,
                max_in_flight=replicas.send_window,
            )
            await generator.run(stop)
            ends = await replicas.call("end_run", run_id)
            still_pending = await self._drain(generator, plan.policy)
        await self.use(plan.policy)
        records = await replicas.call("take_records")
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
            request_path=self.request_path,
        )

    @asynccontextmanager
    async def _sender(self, policy: BatchPolicy) -> AsyncIterator[Callable[[int], Awaitable]]:
        """How request i is sent: over HTTP (the client's path), through the ingress replicas'
        handle, or to the model replicas' handles (in groups past two batches' worth of backlog)."""
        if self.http is not None:
            async with self.http.sender() as send:
                yield send
        elif self.replicas.ingress is not None:
            ingress, images = self.replicas.ingress, self.images
            yield lambda i: ingress.infer.remote(images[i % len(images)], request_id=i)
        else:
            yield HandleSender(self.replicas.handles, self.images, lambda: policy.max_batch_size)

    async def settle(self, plan: RunPlan) -> None:
        """A short run of `plan` whose numbers are dropped. The first requests through a fresh
        deployment's path (handles, the ingress replicas' groups) are far slower than the rest
        (a p99 of 2.9 s against 0.15 s on cpu-vm), and a search's first measured run is the one
        its saving is counted against."""
        quick = replace(plan, requests=min(plan.requests, SETTLE_REQUESTS))
        await self.run(quick, f"settle-{uuid.uuid4().hex[:8]}")

    async def _drain(self, generator: LoadGenerator, policy: BatchPolicy) -> int:
        """Let every request still queued be answered (outside the run). Serve reads a batch's
        timeout when its first request arrives, so a fixed:N partial batch already waiting stays
        until full whatever the new timeout: it is filled with extra images."""
        if not generator.pending:
            return 0
        await self.use(BatchPolicy("greedy", policy.max_batch_size))  # no wait for what comes next
        fillers = []
        if policy.waits_forever:
            extra = range(policy.size - 1)
            fillers = [h.infer.remote(self.filler) for h in self.replicas.handles for _ in extra]
        missing = await generator.drain(DRAIN_TIMEOUT_S)
        await asyncio.gather(*fillers, return_exceptions=True)
        return missing
