"""Whether cheap huge images stall `greenray serve` for everyone else (the reliability probe's case,
issue 19): --clients closed-loop clients post a 47 KB PNG of 7000 x 7000 pixels (49 MP, under the
50 MP cap) for --seconds, while an open-loop client sends a normal JPEG (640 x 480) every
--every seconds, each on a thread of its own so that a slow answer delays no later send.

    python benchmarks/serve_image_stall.py                       # the tree on PYTHONPATH
    PYTHONPATH=/path/to/other/tree python benchmarks/serve_image_stall.py

Prints the normal requests' latency idle and under the huge ones, and the huge ones' rate.
The server runs as `greenray serve` in a process of its own, as the probe ran it
(shufflenet_x0_5, CPU, random weights, simulated energy).
"""

from __future__ import annotations

import argparse
import io
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from serve_common import wait_up


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between normal requests")
    parser.add_argument("--port", type=int, default=18437)
    args = parser.parse_args()
    huge, normal = _png(7000), _jpeg(640, 480)
    url = f"http://127.0.0.1:{args.port}"
    flags = [
        "--model", "shufflenet_x0_5", "--device", "cpu", "--weights", "none", "--energy", "simulated",
        "--port", str(args.port), "--out", tempfile.mkdtemp(prefix="greenray-stall-"),
    ]  # fmt: skip
    print(f"machine: {platform.node()}, {platform.machine()}; the huge PNG has {len(huge)} bytes")
    with tempfile.TemporaryFile() as log:  # not a pipe: a full one would block the server
        server = subprocess.Popen([sys.executable, "-m", "greenray.cli", "serve", *flags], stderr=log)
        try:
            wait_up(url, server, log)
            _measure(args, url, huge, normal)
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=120)


def _measure(args, url: str, huge: bytes, normal: bytes) -> None:
    for _ in range(5):  # not kept: a just-opened server's first requests are slow
        _post(url, normal, "image/jpeg")
    idle = _timed_normals(url, normal, args.every, 10 * args.every)
    print(f"idle: normal request median {_ms(np.median(idle))}, max {_ms(max(idle))} ({len(idle)} requests)")
    stop = threading.Event()
    codes: Counter = Counter()
    with ThreadPoolExecutor(args.clients) as pool:
        for _ in range(args.clients):
            pool.submit(_hammer, url, huge, stop, codes)
        loaded = _timed_normals(url, normal, args.every, args.seconds)
        stop.set()
    answers = sum(codes.values())
    print(
        f"{args.clients} clients x 7000x7000 PNG for {args.seconds:g} s: {answers} answers "
        f"({answers / args.seconds:.1f}/s) {dict(codes)}; normal request median "
        f"{_ms(np.median(loaded))}, max {_ms(max(loaded))} ({len(loaded)} requests)"
    )


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 90).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _post(url: str, body: bytes, kind: str) -> int:
    request = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def _hammer(url: str, body: bytes, stop: threading.Event, codes: Counter) -> None:
    while not stop.is_set():
        codes[_post(url, body, "image/png")] += 1


def _timed_normals(url: str, body: bytes, every: float, seconds: float) -> list[float]:
    """Latencies of normal requests sent every `every` s for `seconds` (open loop)."""
    latencies: list[float] = []

    def one() -> None:
        started = time.perf_counter()
        status = _post(url, body, "image/jpeg")
        latencies.append(time.perf_counter() - started if status == 200 else float("inf"))

    threads = []
    start = time.perf_counter()
    for k in range(int(seconds / every)):
        time.sleep(max(0.0, start + k * every - time.perf_counter()))
        threads.append(threading.Thread(target=one))
        threads[-1].start()
    for thread in threads:
        thread.join()
    return latencies


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


if __name__ == "__main__":
    main()
