"""A real HTTP client for the server tests (urllib: no test depends on a load tool)."""

import io
import json
import socket
import time
import urllib.error
import urllib.request

from PIL import Image

# A tiny model on the CPU, random weights, simulated energy, no idle baseline: the server tests'
# deployment (each adds what it is about: policy, queue, rate).
TINY_SERVER = {
    "model": "shufflenet_x0_5",
    "weights": "none",
    "image_size": 32,
    "device": "cpu",
    "energy": "simulated",
    "idle_seconds": 0,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def image_bytes(fmt: str = "JPEG", size=(64, 48), seed: int = 0) -> bytes:
    color = (seed * 37 % 256, seed * 91 % 256, 128)
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def request(url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 60.0):
    """(status, parsed JSON or text, seconds) of one request; a 4xx/5xx is an answer too."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            status, raw, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
    seconds = time.perf_counter() - started
    text = raw.decode()
    return status, (json.loads(text) if kind.startswith("application/json") else text), seconds


def wait_until_up(url: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if request(url + "/healthz", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout_s:g} s")
