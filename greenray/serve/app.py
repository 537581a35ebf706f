"""The Serve application of a live server: ingress replicas (FastAPI through `@serve.ingress`) in
front of one ModelServer per device, and a small hub that gathers the numbers for /metrics and
says when the server opens (HTTP requests get 503 "starting" until warm-up, and any policy
search, are over).

An ingress replica takes each request, checks and decodes it (greenray.serve.images: on threads,
under a budget of pixels decoding at once, never on the replica's event loop), and hands
it to a model replica through a `Feeder` (greenray.serve.ingress: requests go in groups, so a
model replica's one thread pays Serve's per-call cost per group). The same replicas take
already-decoded images through the handle (`infer`), which is what serve-bench sends with
--ingress-replicas.

    POST /predict   JPEG or PNG bytes -> {"class", "label", "batch_size", "queue_ms",
                    "compute_ms", "energy_j", "energy_source"}; 4xx for a bad request, 503 when
                    the queue (--max-queue) is full, each with {"error": one sentence}
    GET /metrics    Prometheus' text format (greenray.serve.metrics)
    GET /healthz    {"status": "ok", ...}
"""

import asyncio
import itertools

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from greenray.config import EnergyConfig, ServingConfig
from greenray.serve import metrics
from greenray.serve.front import HEADROOM, HttpFront
from greenray.serve.ingress import Feeder
from greenray.serve.options import GRACEFUL_SHUTDOWN_S, MAX_ONGOING_REQUESTS, REPLICA_ENV, SERVE_LOGGING

STATS_TIMEOUT_S = 30.0  # a model replica that does not answer a scrape by then shows as down
HUB = "hub"  # the Hub's deployment name

api = FastAPI(title="greenray", docs_url=None, redoc_url=None, openapi_url=None)


# Serve pickles the FastAPI app (and the routes' functions with what they use) when the class
# below is decorated: whatever they call must be defined above it.
@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
@serve.ingress(api)
class Ingress(HttpFront):
    """Takes requests, checks and decodes them, and feeds them to the model replicas in groups,
    round robin; holds at most `limit` admitted requests (its share of --max-queue, None: no
    limit) and answers 503 beyond."""

    def __init__(self, models: list, hub, limit: int | None) -> None:
        self._models = models  # DeploymentHandles of the ModelServers
        self._front_init(hub, limit, len(models))
        self._feeders: list[Feeder] | None = None
        self._round_robin = itertools.count()
        self._setup_lock: asyncio.Lock | None = None

    async def _ready(self) -> None:
        """What the first request needs: the model's input size and class names (from model
        replica 0), one feeder per model replica, and the task that reports to the hub."""
        if self._feeders is not None:
            return
        self._setup_lock = self._setup_lock or asyncio.Lock()
        async with self._setup_lock:
            if self._feeders is not None:
                return
            info = await self._models[0].info.remote()
            self._image_size, self._class_names = info["image_size"], info["labels"]
            self._feeders = [Feeder(handle, f"{self._id}-{i}") for i, handle in enumerate(self._models)]
            self._start_pushing()

    def _feeder(self) -> Feeder:
        return self._feeders[next(self._round_robin) % len(self._feeders)]

    async def _answer_image(self, pixels: np.ndarray, request_id: int | None):
        return await self._feeder().put(pixels, request_id)

    # ---- the handle path (serve-bench --ingress-replicas) -----------------------------

    async def infer(self, image, request_id: int | None = None) -> int:
        """Classify one decoded image: uint8 3 x S x S, numpy or torch."""
        await self._ready()
        answer = await self._feeder().put(self._checked_array(image), request_id)
        return answer.label

    def _checked_array(self, image) -> np.ndarray:
        if hasattr(image, "numpy") and not isinstance(image, np.ndarray):  # a torch tensor
            image = image.numpy()
        if not isinstance(image, np.ndarray):
            raise ValueError(f"an image must be a torch tensor or numpy array, not {type(image).__name__}")
        size = self._image_size
        if image.dtype != np.uint8:
            raise ValueError(f"an image through the ingress must be uint8, not {image.dtype}")
        if image.shape != (3, size, size):
            raise ValueError(f"expected a 3x{size}x{size} image (CHW), got shape {tuple(image.shape)}")
        return image

    # ---- HTTP (greenray.serve.front) ---------------------------------------------------

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        return await super().predict(request)

    @api.get("/metrics")
    async def scrape(self) -> Response:
        return await super().scrape()

    @api.get("/healthz")
    async def healthz(self) -> Response:
        return await super().healthz()


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
class Hub:
    """What the HTTP fronts (greenray.serve.front) share: whether the server is open (the driver opens it once
    warm-up and any policy search are over), and the numbers for one /metrics page: every
    front's counts (pushed) and every model replica's stats (asked at each scrape)."""

    def __init__(self, models: list) -> None:
        # DeploymentHandles, or (deployment, application) names of model replicas that are
        # their own ingress (each an application of its own; looked up at the first scrape)
        self._models = models
        self._ingress: dict[str, dict] = {}
        self._open = False

    def _handles(self) -> list:
        self._models = [serve.get_deployment_handle(*m) if isinstance(m, tuple) else m for m in self._models]
        return self._models

    async def open(self) -> None:
        self._open = True

    async def is_open(self) -> bool:
        return self._open

    async def report(self, snapshot: dict) -> None:
        self._ingress[snapshot["ingress"]] = snapshot

    async def render(self, snapshot: dict | None = None) -> str:
        if snapshot is not None:
            await self.report(snapshot)
        stats = await asyncio.gather(
            *(asyncio.wait_for(_result(m.stats.remote()), STATS_TIMEOUT_S) for m in self._handles()),
            return_exceptions=True,
        )
        return metrics.render(self._ingress.values(), stats)


async def _result(response):
    return await response


def serving_app(
    model: str,
    serving: ServingConfig,
    energy: EnergyConfig,
    *,
    replicas: int,
    replica_cpus: float,
    num_gpus: float,
    ingress_replicas: int,
    ingress_cpus: float,
    max_queue: int | None,
    policy=None,
):
    """One application: `ingress_replicas` Ingress replicas over `replicas` ModelServers named
    f"{model}-{i}" (one replica each, one device each, batching under `policy`: a BatchPolicy,
    None for ModelServer's first) and the Hub. `max_queue` (None: no limit) is split evenly
    over the ingress replicas."""
    from greenray.serve.deployment import server_app  # the driver's: the model replicas need torch

    models = [
        server_app(
            model,
            serving,
            energy,
            name=f"{model}-{i}",
            num_cpus=replica_cpus,
            num_gpus=num_gpus,
            index=i,
            policy=policy,
        )
        for i in range(replicas)
    ]
    hub = Hub.options(name=HUB, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind(models)
    limit = None if max_queue is None else -(-max_queue // ingress_replicas)
    ongoing = MAX_ONGOING_REQUESTS if limit is None else limit + HEADROOM
    return Ingress.options(
        name="ingress",
        num_replicas=ingress_replicas,
        max_ongoing_requests=ongoing,
        max_queued_requests=-1 if limit is None else ongoing,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        ray_actor_options={"num_cpus": ingress_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
    ).bind(models, hub, limit)
