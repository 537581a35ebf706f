"""serve-bench's HTTP path (--request-path http): requests go as JPEG bodies in POST /predict to
an ingress replica, the way `greenray serve` takes a client's, so a run's response times are the
ones a client sees (decode, the ingress hop and HTTP included). Each request carries its number
in a header, so the replicas' records of it join the caller's timing as on the handle path."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import numpy as np

from greenray.serve.options import REQUEST_ID_HEADER

ANSWER_TIMEOUT_S = 60.0  # a request not answered by then is a failed request
JPEG_QUALITY = 90


class HttpAnswerError(RuntimeError):
    """An answer other than 200 (a 503 from the bounded queue, a 4xx, a 500)."""


def jpeg_bodies(images: list[np.ndarray]) -> list[bytes]:
    """The pool's uint8 CHW images as JPEG files, what a client would upload."""
    from PIL import Image

    bodies = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(
            buffer, "JPEG", quality=JPEG_QUALITY
        )
        bodies.append(buffer.getvalue())
    return bodies


class HttpPath:
    """Where and what serve-bench's HTTP path sends: `url` (the ingress replica's own port on
    Serve's fast path, else Serve's proxy) and the JPEG bodies requests cycle through."""

    def __init__(self, url: str, bodies: list[bytes], fast_path: bool) -> None:
        self.url, self.bodies, self.fast_path = url, bodies, fast_path

    @asynccontextmanager
    async def sender(self) -> AsyncIterator[Callable[[int], Awaitable]]:
        """`send(request_id)` -> an awaitable of its answer, over one connection pool (no cap on
        connections: the load generator's window bounds what is in flight)."""
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield lambda request_id: self._post(session, request_id)

    async def _post(self, session, request_id: int) -> dict:
        body = self.bodies[request_id % len(self.bodies)]
        headers = {"Content-Type": "image/jpeg", REQUEST_ID_HEADER: str(request_id)}
        async with session.post(self.url + "/predict", data=body, headers=headers) as answer:
            text = await answer.text()
            if answer.status != 200:
                raise HttpAnswerError(f"HTTP {answer.status}: {_error(text)}")
            return json.loads(text)


def _error(text: str) -> str:
    try:
        return str(json.loads(text).get("error", text))[:200]
    except (ValueError, AttributeError):
        return text[:200]
