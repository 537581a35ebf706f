"""The HTTP side of a replica that answers clients itself, shared by the two serving shapes: an
ingress replica in front of the model replicas (greenray.serve.app.Ingress) and a model
replica that is its own ingress (greenray.serve.model_ingress.ModelIngress).

`HttpFront` checks and decodes each POST /predict (greenray.serve.images: on threads, never on
the replica's event loop; images over a megapixel under a budget of pixels decoding at once),
holds at most `limit` admitted requests and answers 503 beyond, answers 503 "starting" until
the hub says the server is open, and counts what it answered for /metrics (pushed to the hub).
A subclass says how a decoded image is classified (`_answer_image`) and what the first request
needs (`_ready`); its FastAPI routes (decorated on its own class, as Serve's `@serve.ingress`
wants) call `predict`, `scrape` and `healthz` here.

    POST /predict   JPEG or PNG bytes -> {"class", "label", "batch_size", "queue_ms",
                    "compute_ms", "energy_j", "energy_source"}; 4xx for a bad request, 503 when
                    the queue (--max-queue) is full, each with {"error": one sentence}
    GET /metrics    Prometheus' text format (greenray.serve.metrics)
    GET /healthz    {"status": "ok", ...}
"""

import asyncio
import json
import logging
import time
import uuid

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from greenray.serve import images, metrics
from greenray.serve.ingress import ModelUnavailable
from greenray.serve.loadgen import error_line
from greenray.serve.options import REQUEST_ID_HEADER
from greenray.serve.starting import RETRY_AFTER_S, STARTING

log = logging.getLogger("greenray.serve")

PUSH_S = 1.0  # a front sends its counts to the hub this often when they changed (and on every scrape)
OPEN_CHECK_S = 0.5  # until the server opens, a front asks the hub at most this often
DRAIN_BYTES = images.DRAIN_BYTES
# Calls a front takes beyond its share of --max-queue: the 503s it answers at once, /metrics,
# /healthz. Past that Serve itself answers 503 (not counted in /metrics).
HEADROOM = 256


def json_response(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def read_body(request: Request) -> bytes:
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


def request_id(request: Request) -> int | None:
    """serve-bench's number of an HTTP request (its header), so the replica records it for the run."""
    value = request.headers.get(REQUEST_ID_HEADER)
    return int(value) if value is not None and value.isdigit() else None


def replica_id() -> str:
    """Serve's id of this replica (a random one outside a replica: a unit test)."""
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:
        return uuid.uuid4().hex[:8]


class HttpFront:
    """POST /predict, GET /metrics and GET /healthz for a replica; `_front_init` sets it up."""

    def _front_init(self, hub, limit: int | None, models: int) -> None:
        """`hub`: the Hub's handle (None: none yet, `_ready` finds it); `limit`: admitted requests
        held at most (None: no limit); `models`: the model replicas behind this front."""
        self._hub = hub
        self._limit = limit
        self._models_behind = models
        self._id = replica_id()
        self.http_stats = metrics.IngressStats(self._id, limit)
        self._image_size: int | None = None
        self._class_names: list[str] | None = None
        self._pixel_budget: images.PixelBudget | None = None  # made on the loop that uses it
        self._pusher: asyncio.Task | None = None
        self._pushed: dict | None = None
        self._open = False  # HTTP requests are refused until the driver opens the server
        self._open_checked = 0.0

    async def _ready(self) -> None:
        """What the first request needs (the image size, class names, the hub's pusher)."""
        raise NotImplementedError

    async def _answer_image(self, pixels: np.ndarray, request_id: int | None):
        """The Answer (greenray.serve.records) for one decoded uint8 3 x S x S image."""
        raise NotImplementedError

    def _start_pushing(self) -> None:
        if self._hub is not None and self._pusher is None:
            self._pusher = asyncio.ensure_future(self._push())

    async def _is_open(self) -> bool:
        """Whether the driver has opened the server (warm-up, and a policy search, are over)."""
        if not self._open and time.monotonic() - self._open_checked >= OPEN_CHECK_S:
            self._open_checked = time.monotonic()
            try:
                self._open = await self._hub.is_open.remote()
            except Exception as exc:
                log.debug("the hub did not answer: %s", error_line(exc))
        return self._open

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        if not await self._is_open():
            return self._answered(started, 503, {"error": STARTING}, {"Retry-After": str(RETRY_AFTER_S)})
        if self._limit is not None and self.http_stats.inflight >= self._limit:
            return self._answered(
                started,
                503,
                {"error": f"the server is at capacity ({self._limit} requests waiting here); retry later"},
                {"Retry-After": "1"},
            )
        self.http_stats.inflight += 1
        try:
            status, body = await self._predict(request)
        finally:
            self.http_stats.inflight -= 1
        return self._answered(started, status, body)

    async def _predict(self, request: Request) -> tuple[int, dict]:
        try:
            images.check_content_type(request.headers.get("content-type"))
            images.check_length(request.headers.get("content-length"), DRAIN_BYTES)
            body = await read_body(request)
            await self._ready()
            answer = await self._answer_image(await self._decode(body), request_id(request))
        except images.ImageError as exc:
            return exc.status, {"error": str(exc)}
        except ModelUnavailable as exc:
            return 503, {"error": str(exc)}
        except Exception as exc:  # one line to the client, the server keeps serving
            log.warning("a request failed: %s", error_line(exc))
            return 500, {"error": f"the request failed ({error_line(exc)})"}
        return 200, {
            "class": answer.label,
            "label": self._class_names[answer.label] if self._class_names else None,
            "batch_size": answer.batch_size,
            "queue_ms": answer.queue_s * 1000.0,
            "compute_ms": answer.compute_s * 1000.0,
            "energy_j": answer.energy_j,
            "energy_source": answer.energy_source,
        }

    async def _decode(self, body: bytes) -> np.ndarray:
        """Off the replica's loop, whatever the body's size: the header on a thread (cheap, but a
        PNG's text chunks are unpacked there) and, for a small image, its decode on the same
        hop; a larger one is decoded on a thread once this replica's pixel budget has room for
        it, so huge images queue and small ones go on."""
        image, pixels = await asyncio.to_thread(images.decode_small, body, self._image_size)
        if pixels is not None:
            return pixels
        self._pixel_budget = self._pixel_budget or images.PixelBudget()
        async with self._pixel_budget.hold(images.decoded_pixels(image)):
            return await asyncio.to_thread(images.finish, image, self._image_size)

    def _answered(self, started: float, status: int, body: dict, headers: dict | None = None) -> Response:
        self.http_stats.observe(status, time.perf_counter() - started)
        return json_response(status, body, headers)

    async def scrape(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        try:
            text = await self._hub.render.remote(self.http_stats.snapshot())
        except Exception as exc:
            return json_response(503, {"error": f"the metrics are not available now ({error_line(exc)})"})
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self) -> Response:
        if not await self._is_open():
            return json_response(503, {"status": "starting"})
        return json_response(
            200,
            {
                "status": "ok",
                "inflight": self.http_stats.inflight,
                "limit": self._limit,
                "replicas": self._models_behind,
            },
        )

    async def _push(self) -> None:
        """Send the counts to the hub every PUSH_S while they change (an idle server stays quiet)."""
        while True:
            await asyncio.sleep(PUSH_S)
            snapshot = self.http_stats.snapshot()
            if snapshot == self._pushed:
                continue
            try:
                await self._hub.report.remote(snapshot)
                self._pushed = snapshot
            except Exception as exc:  # the hub restarting: the next push or scrape catches up
                log.debug("metrics push failed: %s", error_line(exc))
