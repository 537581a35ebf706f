"""Throughput of the HTTP path: the highest request rate a standard load tool (`hey`) sustains
against `greenray serve` with every answer 200 and p99 under 100 ms, and serve-bench's p99 at the
same rate and policy through the same ingress replicas (Serve handles instead of HTTP: the
difference is what HTTP and Serve's proxy cost).

    apt-get install -y hey
    python benchmarks/serve_http.py                                  # shufflenet_v2_x0_5, 64 px, CPU
    python benchmarks/serve_http.py --rates 50,100,200,400 --seconds 20

The server runs as `greenray serve` in a process of its own; hey runs closed-loop workers of 5
requests/s each (rate / 5 workers) for --seconds at each rate, lowest first, until a rate fails,
after a 5 s warm-up at 5 Hz that is not kept.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

from serve_common import machine, serve, wait_up

from greenray.config import BenchConfig

PER_WORKER_HZ = 5
P99_TARGET_S = 0.1
WARMUP_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shufflenet_x0_5")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--policy", default="greedy")
    parser.add_argument("--rates", default="25,50,100,150,200,300,400")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--energy", default="simulated")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        sys.exit("this benchmark drives the server with hey: apt-get install -y hey")

    image = _jpeg(args.image_size * 2)
    out = Path(tempfile.mkdtemp(prefix="greenray-http-"))
    flags = [
        "--model", args.model, "--weights", "none", "--image-size", str(args.image_size), "--device", "cpu",
        "--energy", args.energy, "--idle-seconds", "0", "--policy", args.policy, "--port", str(args.port),
        "--max-queue", "1024", "--out", str(out / "live"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{args.port}"
    print(
        f"machine: {machine()}; {args.model} at {args.image_size} px, {args.policy}, CPU; "
        f"hey {PER_WORKER_HZ}/s/worker"
    )
    with tempfile.TemporaryFile() as log:  # not a pipe: a full one would block the server
        server = subprocess.Popen([sys.executable, "-m", "greenray.cli", "serve", *flags], stderr=log)
        results = _rates(args, url, image, server, log)
    sustained = [r for r in results if r["sustained"]]
    if not sustained:
        print("no rate was sustained")
        return
    best = sustained[-1]
    print(f"highest sustained rate: {best['rate']:g} Hz (p99 {1000 * best['p99_s']:.1f} ms over HTTP)")
    bench = serve(
        BenchConfig.from_flat(
            {
                "models": args.model,
                "policies": args.policy,
                "frequencies": [best["rate"]],
                "requests": int(best["rate"] * args.seconds),
                "warmup_batches": 16,
                "weights": "none",
                "device": "cpu",
                "image_size": args.image_size,
                "energy": args.energy,
                "idle_seconds": 0,
                "arrival": "poisson",
                "ingress_replicas": 1,
            }
        )
    )
    run = bench["runs"].iloc[0]
    print(
        f"serve-bench at {best['rate']:g} Hz through 1 ingress replica (Serve handles, poisson arrivals): "
        f"p50 {1000 * run['p50_latency_s']:.1f} ms, p99 {1000 * run['p99_latency_s']:.1f} ms"
    )


def _rates(args, url: str, image: bytes, server: subprocess.Popen, log) -> list[dict]:
    """hey at each rate in turn until one is not sustained; the server is stopped after."""
    results = []
    try:
        wait_up(url, server, log)
        _hey(url, image, PER_WORKER_HZ, WARMUP_S)  # not kept: a just-opened server's first seconds are slow
        for rate in (float(r) for r in args.rates.split(",")):
            row = _hey(url, image, rate, args.seconds)
            results.append(row)
            print(
                f"{rate:g} Hz: {row['answers']} answers, {row['ok']} 200s, "
                f"achieved {row['achieved_hz']:.1f} Hz, "
                f"p50 {1000 * row['p50_s']:.1f} ms, p99 {1000 * row['p99_s']:.1f} ms: "
                + ("sustained" if row["sustained"] else "not sustained")
            )
            if not row["sustained"]:
                break
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=120)
    return results


def _jpeg(size: int) -> Path:
    import numpy as np
    from PIL import Image

    path = Path(tempfile.mkdtemp(prefix="greenray-img-")) / "image.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return path


def _hey(url: str, image: Path, rate: float, seconds: float) -> dict:
    workers = max(1, round(rate / PER_WORKER_HZ))
    command = ["hey", "-z", f"{seconds:g}s", "-c", str(workers), "-q", f"{rate / workers:g}", "-m", "POST"]
    command += ["-T", "image/jpeg", "-D", str(image), url + "/predict"]
    text = subprocess.run(command, capture_output=True, text=True, env=os.environ, check=True).stdout
    codes = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
    answers = sum(codes.values())
    p50 = float(re.search(r"50% in ([\d.]+) secs", text)[1]) if "50% in" in text else float("nan")
    p99 = float(re.search(r"99% in ([\d.]+) secs", text)[1]) if "99% in" in text else float("nan")
    achieved = float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1])
    ok = codes.get(200, 0)
    sustained = answers > 0 and ok == answers and p99 < P99_TARGET_S and achieved >= 0.95 * rate
    return {
        "rate": rate,
        "answers": answers,
        "ok": ok,
        "achieved_hz": achieved,
        "p50_s": p50,
        "p99_s": p99,
        "sustained": sustained,
    }


if __name__ == "__main__":
    main()
