"""A model replica that is its own HTTP ingress (`greenray serve`, `--ingress-replicas 0`): no
second replica and no actor call per request. It checks and decodes each POST /predict itself
(greenray.serve.front: on threads under its pixel budget, never on its event loop, the same
bounded queue, 503s and /metrics as an ingress replica) and puts the image straight into its own
batch queue, as a handle's `infer` does. Its forward passes run on a thread of their own (a frozen
TorchScript graph where the model traces: no GIL held per op), so the loop keeps reading, counting
and refusing requests while a batch runs: past saturation the overload gets fast 503s. On
Serve's fast path each such replica answers on a port of its own; the driver reaches it through
its handle as it reaches a ModelServer.

Serve gives a direct port to an application's ingress deployment only, so each model replica is
an application of its own: the first holds the Hub (and takes "/" on Serve's proxy), the others
find the Hub by its application's name."""

# No `from __future__ import annotations`: FastAPI reads the routes' `Request` annotation itself.
import asyncio
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from greenray.config import BatchPolicy, EnergyConfig, ServingConfig
from greenray.serve.app import HUB, Hub
from greenray.serve.deployment import FIRST_POLICY, ModelReplica, actor_options, timed
from greenray.serve.front import HEADROOM, HttpFront
from greenray.serve.groups import Item
from greenray.serve.options import (
    GRACEFUL_SHUTDOWN_S,
    HEALTH_CHECK_TIMEOUT_S,
    MAX_ONGOING_REQUESTS,
    SERVE_LOGGING,
)

log = logging.getLogger("greenray.serve")


def traced(model: torch.nn.Module, size: int, device: torch.device, precision: str):
    """The model as a frozen TorchScript graph, or None (not fp32, or it does not trace). An eager
    forward takes the GIL back at every op, so on a thread beside a busy loop it ran 2-7x slower
    here; a graph runs its whole forward without the GIL."""
    if precision != "fp32":
        return None
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values in the graph
            return torch.jit.freeze(torch.jit.trace(model, torch.zeros((1, 3, size, size), device=device)))
    except Exception as exc:  # the eager model still serves, holding the GIL per op
        log.warning("the model does not trace (%s); its forward passes run eagerly", str(exc)[:200])
        return None


api = FastAPI(title="greenray", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(logging_config=SERVE_LOGGING)
@serve.ingress(api)
class ModelIngress(HttpFront, ModelReplica):
    """ModelReplica answering HTTP: holds at most `limit` admitted requests (its share of
    --max-queue, None: no limit); `hub` is the Hub's handle, or the name of the application
    that holds it."""

    def __init__(
        self,
        model: str,
        serving: ServingConfig,
        energy: EnergyConfig,
        index: int,
        policy: BatchPolicy,
        hub,
        limit: int | None,
    ) -> None:
        # Batches compute on a thread of their own, so the loop keeps reading, counting and
        # shedding requests while one runs (on the loop, past saturation, requests waited in
        # the socket and Serve's HTTP layer, where --max-queue cannot see them).
        self._batch_thread = ThreadPoolExecutor(1, thread_name_prefix="greenray-batch")
        self._graph = None
        self._computing, self._idle = False, None  # the Event is made on the loop that uses it
        super().__init__(model, serving, energy, index, policy)
        if self.setup_error is None:
            self._graph = traced(self.model, self.spec.image_size, self.device, serving.precision)
        if isinstance(hub, str):
            hub = serve.get_deployment_handle(HUB, app_name=hub)
        self._front_init(hub, limit, 1)
        if self.setup_error is None:  # else the driver says what went wrong and stops
            self._image_size, self._class_names = self.spec.image_size, self._labels()

    async def _ready(self) -> None:
        self._start_pushing()

    async def _compute(self, work, *args) -> tuple:
        if work == self._prepare:  # stacking small images: cheap, on the loop
            return timed(work, *args)
        self._idle = self._idle or asyncio.Event()
        self._idle.clear()
        self._computing = True
        try:
            return await asyncio.get_running_loop().run_in_executor(self._batch_thread, timed, work, *args)
        finally:
            self._computing = False
            self._idle.set()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self._graph is None:
            return super()._forward(batch)
        with torch.inference_mode():
            return self._graph(batch)

    async def _answer_image(self, pixels: np.ndarray, request_id: int | None):
        # Serve's batcher forms the next batch as soon as one image waits, then holds it until
        # the running batch ends: images that arrive while a forward pass runs on the thread
        # wait here instead, and all join the queue together when it ends (one full batch).
        self._idle = self._idle or asyncio.Event()
        if self._computing:
            await self._idle.wait()
        # the decoded array is this request's own: no copy on its way into the batch
        return await self._infer(Item(torch.from_numpy(pixels), request_id, time.time()))

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        return await super().predict(request)

    @api.get("/metrics")
    async def scrape(self) -> Response:
        return await super().scrape()

    @api.get("/healthz")
    async def healthz(self) -> Response:
        return await super().healthz()


def model_ingress_apps(
    model: str,
    serving: ServingConfig,
    energy: EnergyConfig,
    *,
    names: list[str],
    num_cpus: float,
    num_gpus: float,
    max_queue: int | None,
    policy: BatchPolicy | None = None,
) -> list:
    """One application per name: replica i of `model` (deployment f"{model}-{i}", one device
    each, batching under `policy`, None: FIRST_POLICY) answering HTTP itself; the first also
    holds the Hub. `max_queue` (None: no limit) is split evenly over the replicas."""
    limit = None if max_queue is None else -(-max_queue // len(names))
    ongoing = MAX_ONGOING_REQUESTS if limit is None else limit + HEADROOM
    deployments = [f"{model}-{i}" for i in range(len(names))]
    hub = Hub.options(name=HUB, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind(
        list(zip(deployments, names, strict=True))
    )
    return [
        ModelIngress.options(
            name=deployment,
            num_replicas=1,
            max_ongoing_requests=ongoing,
            max_queued_requests=-1 if limit is None else ongoing,
            ray_actor_options=actor_options(num_cpus, num_gpus),
            health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
            graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        ).bind(model, serving, energy, i, policy or FIRST_POLICY, hub if i == 0 else names[0], limit)
        for i, deployment in enumerate(deployments)
    ]
