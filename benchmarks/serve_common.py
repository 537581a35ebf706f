"""What the serving benchmarks share: a bare PyTorch loop to compare against, and a serve-bench
run whose tables come back as data frames."""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

from greenray.config import BenchConfig
from greenray.serve import zoo
from greenray.serve.bench import run_bench


def bare_batch_s(
    model: str,
    batch: int,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    image_size: int | None = None,
    threads: int | None = None,
    seconds: float = 2.0,
) -> float:
    """Median seconds of one forward pass (with argmax and the answers copied back), the model
    fed one float batch back to back as reference/h100.md measured it."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    loaded = zoo.load_model(model, "none", image_size)
    net = loaded.model.to(device)
    size = loaded.spec.image_size
    x = torch.rand((batch, 3, size, size), device=device)
    times = []
    with torch.inference_mode(), zoo.autocast(precision, torch.device(device).type):
        for _ in range(3):
            net(x).argmax(dim=1).tolist()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            start = time.perf_counter()
            net(x).argmax(dim=1).tolist()
            times.append(time.perf_counter() - start)
    return float(pd.Series(times).median())


def serve(config: BenchConfig, out: Path | None = None) -> dict[str, pd.DataFrame]:
    """Run serve-bench (into a new temporary folder unless `out`) and read its tables back."""
    out = out or Path(tempfile.mkdtemp(prefix="greenray-bench-"))
    run_bench(config, out)
    return {t: pd.read_parquet(out / f"{t}.parquet") for t in ("runs", "requests", "batches")} | {"out": out}


def idle_cpu_per_s(model: str, config: BenchConfig, seconds: float = 5.0) -> float:
    """CPU seconds per second a model replica spends with no request at all (its power sampler,
    Ray's and Serve's own threads): the background the per-image overhead includes."""
    import time

    from greenray.ray_setup import connect
    from greenray.serve.driver import deploy
    from greenray.serve.loop import on_loop

    connect()
    replicas = deploy(model, config.deploy, config.deploy.serving.device)
    try:
        before = on_loop(replicas.call("cpu_s"))[0]
        time.sleep(seconds)
        return (on_loop(replicas.call("cpu_s"))[0] - before) / seconds
    finally:
        replicas.delete()


def steady_images_per_s(batches: pd.DataFrame) -> float:
    """Served images per second between the first and the last batch of a run (the queue's
    filling before the first batch left is not serving time)."""
    counted = batches[batches["in_run"]].sort_values("started_s")
    return counted["size"].iloc[1:].sum() / (counted["ended_s"].iloc[-1] - counted["ended_s"].iloc[0])


def markdown(frame: pd.DataFrame) -> str:
    """A data frame as a markdown table (pandas' to_markdown needs tabulate, not a dependency)."""

    def cell(value) -> str:
        return "-" if pd.isna(value) else f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def machine() -> str:
    import torch

    python = platform.python_version()
    return f"{platform.node()} ({platform.machine()}), Python {python}, torch {torch.__version__}"


def wait_up(url: str, server: subprocess.Popen, log, timeout_s: float = 300.0) -> None:
    """Wait for a `greenray serve` process to answer /healthz with 200; exit with the tail of its
    log (a file, not a pipe: a full pipe would block the server) if it stops or never comes up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            sys.exit(f"the server stopped: {log.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("the server did not come up")
