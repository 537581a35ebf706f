"""`greenray serve` against a plain one-deployment Ray Serve app (benchmarks/plain_serve_app.py:
FastAPI ingress, PIL + torchvision transforms, @serve.batch, as Ray's docs show), side by side,
same model (shufflenet_v2_x0_5 at 64 px, CPU, random weights; greenray's energy simulated),
same JPEG, an open-loop client at fixed rates.

    python benchmarks/serve_vs_plain.py [--rates 16,32,64,128,192,256,384,512] [--seconds 8]

Each system runs in a process of its own with its own local Ray, all up throughout: greenray
in its two shapes, both on Serve's fast path where the Ray has it (greenray-ingress: an ingress
replica in front of the model replica, `--ingress-replicas 1`; greenray-direct: the model
replica answers HTTP itself, `--ingress-replicas 0`), plain as the docs write it (through
Serve's proxy) and plain with Serve's throughput-optimised mode and its replica's own port
(plain-fast). At each rate they run in the order A B C D D C B A. The client (asyncio + aiohttp, in
this process) sends on a constant schedule whatever the answers do; a latency is from the
scheduled send time; 10 s timeout. CPU per request: the system's whole process tree (its Ray
included, idle included), user + system, per 200 answer. Goodput: 200 answers per second from
the first send to the last answer. Results go to --out as JSON lines as each run ends, then a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 10.0
WARMUP_S = 4.0


def jpeg(width: int = 320, height: int = 240) -> bytes:
    """A photo-sized JPEG: gradients with grain, about 48 KB (the reference's photo: 58 KB)."""
    from PIL import Image

    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    smooth = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    grain = np.random.default_rng(0).normal(0, 32, smooth.shape)
    pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class System:
    """One server process and its address."""

    def __init__(self, name: str, command: list[str], ready: re.Pattern, env: dict | None = None) -> None:
        self.name, self.command, self.ready = name, command, ready
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")} | (env or {})
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.text = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.text += line

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (found := self.ready.search(self.text)) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not come up:\n{self.text[-3000:]}")
            time.sleep(0.5)
        self.url = found.group(1)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process tree so far (from /proc)."""
        return sum(cpu_s(pid) for pid in tree(self.process.pid))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def open_loop(url: str, body: bytes, rate: float, seconds: float) -> dict:
    """Send at `rate` for `seconds` on a fixed schedule; every answer's status and latency."""
    import aiohttp

    results: list[tuple[int, float, float]] = []  # (status or 0 for a timeout/error, latency s, when)

    async def one(session, due: float) -> None:
        status = 0
        try:
            async with session.post(url + "/predict", data=body, headers={"Content-Type": "image/jpeg"}) as r:
                await r.read()
                status = r.status
        except Exception:
            pass
        now = time.perf_counter()
        results.append((status, now - due, now))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
    ) as s:
        start, tasks = time.perf_counter(), []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(s, due)))
        await asyncio.gather(*tasks)
    ok = np.array([lat for status, lat, _ in results if status == 200])
    span = max(max(when for _, _, when in results) - start, seconds)  # to the last answer
    return {
        "sent": len(results),
        "ok": len(ok),
        "503": sum(1 for status, _, _ in results if status == 503),
        "failed": sum(1 for status, _, _ in results if status not in (200, 503)),
        "p50_ms": float(np.percentile(ok, 50) * 1000) if len(ok) else None,
        "p99_ms": float(np.percentile(ok, 99) * 1000) if len(ok) else None,
        "goodput_hz": len(ok) / span,  # 200s per second, from the first send to the last answer
    }


def settle(system: System, quiet_core: float = 0.35, longest_s: float = 40.0) -> None:
    """Wait until `system` has worked off what it still holds (a backlog past saturation that
    its clients gave up on keeps its CPU busy, and the next run, whoever's, would pay for it)."""
    deadline = time.monotonic() + longest_s
    while time.monotonic() < deadline:
        before = system.cpu_s()
        time.sleep(1.0)
        if system.cpu_s() - before < quiet_core:
            return


def measure(system: System, body: bytes, rate: float, seconds: float) -> dict:
    cpu0 = system.cpu_s()
    row = asyncio.run(open_loop(system.url, body, rate, seconds))
    cpu = system.cpu_s() - cpu0
    return row | {"cpu_ms_per_ok": cpu / row["ok"] * 1000 if row["ok"] else None, "load": os.getloadavg()[0]}


def table(path: Path) -> str:
    """The runs of `path` (runs.jsonl) as a markdown table: per rate and system, each repeat's
    p50 / p99 (ms), CPU ms per 200, 503s, other failures and goodput (200s/s)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    names = list(dict.fromkeys(r["system"] for r in rows))
    lines = ["| Hz | system | p50 ms | p99 ms | CPU ms/200 | 503s | failed | goodput Hz | load |"]
    lines.append("|" + "---|" * 9)

    def each(runs: list[dict], key: str, fmt: str = "{:.0f}") -> str:
        return " / ".join("-" if r[key] is None else fmt.format(r[key]) for r in runs)

    for rate in sorted({r["rate_hz"] for r in rows}):
        for name in names:
            runs = sorted(
                (r for r in rows if r["rate_hz"] == rate and r["system"] == name), key=lambda r: r["repeat"]
            )
            if runs:
                cpu, load = each(runs, "cpu_ms_per_ok", "{:.1f}"), each(runs, "load", "{:.1f}")
                lines.append(
                    f"| {rate:g} | {name} | {each(runs, 'p50_ms')} | {each(runs, 'p99_ms')} | {cpu} | "
                    f"{each(runs, '503')} | {each(runs, 'failed')} | {each(runs, 'goodput_hz')} | {load} |"
                )
    return "\n".join(lines)


def systems(args, tmp: Path) -> list[System]:
    py = sys.executable

    def greenray(name: str, ingress_replicas: int, port: int) -> System:
        command = [
            py, "-m", "greenray.cli", "serve", "--model", "shufflenet_x0_5", "--weights", "none",
            "--image-size", str(args.image_size), "--device", "cpu", "--energy", "simulated",
            "--policy", f"greedy:{args.batch}", "--port", str(port), "--max-queue", "256",
            "--ingress-replicas", str(ingress_replicas), "--out", str(tmp / name),
        ]  # fmt: skip
        return System(name, command, re.compile(r"serving \S+ with \S+ on (http://\S+):"))

    plain = [
        py,
        str(HERE / "plain_serve_app.py"),
        "--image-size",
        str(args.image_size),
        "--batch",
        str(args.batch),
    ]
    return [
        greenray("greenray-ingress", 1, args.port),
        greenray("greenray-direct", 0, args.port + 30),
        System("plain", [*plain, "--port", str(args.port + 10)], re.compile(r"ready (http://\S+)")),
        System(
            "plain-fast",
            [*plain, "--port", str(args.port + 20), "--direct-port", str(args.port + 21)],
            re.compile(r"ready (http://\S+)"),
            env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="16,32,64,128,192,256,384,512")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--port", type=int, default=18600)
    parser.add_argument("--systems", default="greenray-ingress,greenray-direct,plain,plain-fast")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="greenray-vs-plain-")))
    parser.add_argument("--table", type=Path, help="only print the table of a runs.jsonl")
    args = parser.parse_args()
    if args.table is not None:
        print(table(args.table))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    body = jpeg()
    chosen = [s for s in systems(args, args.out) if s.name in args.systems.split(",")]
    print(f"JPEG {len(body)} bytes; results in {args.out}", flush=True)
    try:
        for system in chosen:  # one at a time: Rays starting together on 2 cores time out
            system.start()
            system.wait_ready()
            asyncio.run(open_loop(system.url, body, 16, WARMUP_S))  # not kept: first requests are slow
            print(f"{system.name} up at {system.url}", flush=True)
        for rate in (float(r) for r in args.rates.split(",")):
            for repeat, system in enumerate([*chosen, *reversed(chosen)]):
                row = {"system": system.name, "rate_hz": rate, "repeat": repeat // len(chosen)}
                row |= measure(system, body, rate, args.seconds)
                print(json.dumps(row), flush=True)
                with (args.out / "runs.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                settle(system)
    finally:
        for system in chosen:
            system.stop()
    if (args.out / "runs.jsonl").exists():
        print(table(args.out / "runs.jsonl"))


if __name__ == "__main__":
    main()
