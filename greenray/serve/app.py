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
import json
import logging
import time
import uuid

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from greenray.config import EnergyConfig, ServingConfig
from greenray.serve import images, metrics
from greenray.serve.ingress import Feeder, ModelUnavailable
from greenray.serve.loadgen import error_line
from greenray.serve.options import (
    GRACEFUL_SHUTDOWN_S,
    MAX_ONGOING_REQUESTS,
    REPLICA_ENV,
    REQUEST_ID_HEADER,
    SERVE_LOGGING,
)
from greenray.serve.starting import RETRY_AFTER_S, STARTING

log = logging.getLogger("greenray.serve")

PUSH_S = 1.0  # an ingress replica sends its counts to the hub this often (and on every scrape)
OPEN_CHECK_S = 0.5  # until the server opens, an ingress replica asks the hub at most this often
STATS_TIMEOUT_S = 30.0  # a model replica that does not answer a scrape by then shows as down
DRAIN_BYTES = images.DRAIN_BYTES
# Calls an ingress replica takes beyond its share of --max-queue: the 503s it answers at once,
# /metrics, /healthz. Past that Serve's proxy itself answers 503 (not counted in /metrics).
INGRESS_HEADROOM = 256

HUB = "hub"  # the Hub's deployment name

api = FastAPI(title="greenray", docs_url=None, redoc_url=None, openapi_url=None)


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def _read_body(request: Request) -> bytes:
    """The body, or a 413 once it passes the limit. An oversized body is still read (and
    dropped) up to DRAIN_BYTES, so that a client which sends it all before reading gets the 413
    rather than a connection reset; beyond that the connection is cut."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_BYTES:
            break
        if size <= images.MAX_BODY_BYTES:
            chunks.append(chunk)
    if size > images.MAX_BODY_BYTES:
        raise images.too_large(size)
    return b"".join(chunks)


def _request_id(request: Request) -> int | None:
    """serve-bench's number of an HTTP request (its header), so the replica records it for the run."""
    value = request.headers.get(REQUEST_ID_HEADER)
    return int(value) if value is not None and value.isdigit() else None


# Serve pickles the FastAPI app (and the routes' functions with what they use) when the class
# below is decorated: whatever they call must be defined above it.
@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
@serve.ingress(api)
class Ingress:
    """Takes requests, checks and decodes them, and feeds them to the model replicas in groups,
    round robin; holds at most `limit` admitted requests (its share of --max-queue, None: no
    limit) and answers 503 beyond."""

    def __init__(self, models: list, hub, limit: int | None) -> None:
        self._models = models  # DeploymentHandles of the ModelServers
        self._hub = hub  # the Hub's handle
        self._limit = limit
        try:
            self._id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (a unit test)
            self._id = uuid.uuid4().hex[:8]
        self.stats = metrics.IngressStats(self._id, limit)
        self._feeders: list[Feeder] | None = None
        self._round_robin = itertools.count()
        self._image_size: int | None = None
        self._labels: list[str] | None = None
        self._setup_lock: asyncio.Lock | None = None
        self._pixel_budget: images.PixelBudget | None = None  # made on the loop that uses it
        self._pusher: asyncio.Task | None = None
        self._open = False  # HTTP requests are refused until the driver opens the server
        self._open_checked = 0.0

    async def _setup(self) -> None:
        """What the first request needs: the model's input size and class names (from model
        replica 0), one feeder per model replica, and the task that reports to the hub."""
        if self._feeders is not None:
            return
        self._setup_lock = self._setup_lock or asyncio.Lock()
        async with self._setup_lock:
            if self._feeders is not None:
                return
            info = await self._models[0].info.remote()
            self._image_size, self._labels = info["image_size"], info["labels"]
            self._feeders = [Feeder(handle, f"{self._id}-{i}") for i, handle in enumerate(self._models)]
            if self._hub is not None:
                self._pusher = asyncio.ensure_future(self._push())

    def _feeder(self) -> Feeder:
        return self._feeders[next(self._round_robin) % len(self._feeders)]

    # ---- the handle path (serve-bench --ingress-replicas) -----------------------------

    async def infer(self, image, request_id: int | None = None) -> int:
        """Classify one decoded image: uint8 3 x S x S, numpy or torch."""
        await self._setup()
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

    # ---- HTTP ------------------------------------------------------------------------

    async def _is_open(self) -> bool:
        """Whether the driver has opened the server (warm-up, and a policy search, are over)."""
        if not self._open and time.monotonic() - self._open_checked >= OPEN_CHECK_S:
            self._open_checked = time.monotonic()
            try:
                self._open = await self._hub.is_open.remote()
            except Exception as exc:
                log.debug("the hub did not answer: %s", error_line(exc))
        return self._open

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        if not await self._is_open():
            return self._answered(
                started,
                503,
                {"error": STARTING},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        if self._limit is not None and self.stats.inflight >= self._limit:
            return self._answered(
                started,
                503,
                {"error": f"the server is at capacity ({self._limit} requests waiting here); retry later"},
                {"Retry-After": "1"},
            )
        self.stats.inflight += 1
        try:
            status, body = await self._predict(request)
        finally:
            self.stats.inflight -= 1
        return self._answered(started, status, body)

    async def _predict(self, request: Request) -> tuple[int, dict]:
        try:
            images.check_content_type(request.headers.get("content-type"))
            images.check_length(request.headers.get("content-length"), DRAIN_BYTES)
            body = await _read_body(request)
            await self._setup()
            pixels = await self._decode(body)
            answer = await self._feeder().put(pixels, _request_id(request))
        except images.ImageError as exc:
            return exc.status, {"error": str(exc)}
        except ModelUnavailable as exc:
            return 503, {"error": str(exc)}
        except Exception as exc:  # one line to the client, the server keeps serving
            log.warning("a request failed: %s", error_line(exc))
            return 500, {"error": f"the request failed ({error_line(exc)})"}
        return 200, {
            "class": answer.label,
            "label": self._labels[answer.label] if self._labels else None,
            "batch_size": answer.batch_size,
            "queue_ms": answer.queue_s * 1000.0,
            "compute_ms": answer.compute_s * 1000.0,
            "energy_j": answer.energy_j,
            "energy_source": answer.energy_source,
        }

    async def _decode(self, body: bytes) -> np.ndarray:
        """Off the replica's loop, whatever the body's size: the header on a thread (cheap, but a
        PNG's text chunks are unpacked there), then the decode on a thread once this replica's
        pixel budget has room for the image, so huge images queue and small ones go on."""
        self._pixel_budget = self._pixel_budget or images.PixelBudget()
        image = await asyncio.to_thread(images.open_image, body, self._image_size)
        async with self._pixel_budget.hold(images.decoded_pixels(image)):
            return await asyncio.to_thread(images.finish, image, self._image_size)

    def _answered(self, started: float, status: int, body: dict, headers: dict | None = None) -> Response:
        self.stats.observe(status, time.perf_counter() - started)
        return _json(status, body, headers)

    @api.get("/metrics")
    async def scrape(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        try:
            text = await self._hub.render.remote(self.stats.snapshot())
        except Exception as exc:
            return _json(503, {"error": f"the metrics are not available now ({error_line(exc)})"})
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    async def healthz(self) -> Response:
        if not await self._is_open():
            return _json(503, {"status": "starting"})
        return _json(
            200,
            {
                "status": "ok",
                "inflight": self.stats.inflight,
                "limit": self._limit,
                "replicas": len(self._models),
            },
        )

    async def _push(self) -> None:
        while True:
            await asyncio.sleep(PUSH_S)
            try:
                await self._hub.report.remote(self.stats.snapshot())
            except Exception as exc:  # the hub restarting: the next push or scrape catches up
                log.debug("metrics push failed: %s", error_line(exc))


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
class Hub:
    """What the ingress replicas share: whether the server is open (the driver opens it once
    warm-up and any policy search are over), and the numbers for one /metrics page: every
    ingress replica's counts (pushed) and every model replica's stats (asked at each scrape)."""

    def __init__(self, models: list) -> None:
        self._models = models
        self._ingress: dict[str, dict] = {}
        self._open = False

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
            *(asyncio.wait_for(_result(m.stats.remote()), STATS_TIMEOUT_S) for m in self._models),
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
    ongoing = MAX_ONGOING_REQUESTS if limit is None else limit + INGRESS_HEADROOM
    return Ingress.options(
        name="ingress",
        num_replicas=ingress_replicas,
        max_ongoing_requests=ongoing,
        max_queued_requests=-1 if limit is None else ongoing,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        ray_actor_options={"num_cpus": ingress_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
    ).bind(models, hub, limit)
