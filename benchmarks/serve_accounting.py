"""What energy accounting costs a serving model replica: its CPU per answered request with the
simulated meter (sampling every --interval-ms, the real meters' default 10 ms) against the same
server with `--energy none` (no meter, no sampler, no batch windows), A B B A at each rate, and a
py-spy profile of the metered replica: the share of its active samples whose innermost greenray
frame is energy code (greenray/energy, the batch spans of greenray/serve/measure.py, the ledger,
Ray's metrics).

    python benchmarks/serve_accounting.py [--rates 64,128] [--seconds 10] [--profile-s 10]

Both servers are `greenray serve` in the default shape (the model replica answers HTTP itself,
on Serve's fast path), shufflenet_v2_x0_5 at 64 px on the CPU, greedy:32, each in a process of
its own with its own local Ray, up throughout; the open-loop client of serve_vs_plain.py sends
the same JPEG. CPU is the model replica's process only (user + system, from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from serve_vs_plain import WARMUP_S, System, cpu_s, jpeg, open_loop, settle, tree

# Frames that are energy accounting: the meter and its sampler, the per-batch windows, the ledger
ACCOUNTING = re.compile(r"greenray/energy/|greenray/serve/(measure|ledger)\.py|greenray/ray_metrics\.py")


def server(name: str, energy: str, args, out: Path) -> System:
    command = [
        sys.executable, "-m", "greenray.cli", "serve", "--model", "shufflenet_x0_5", "--weights", "none",
        "--image-size", "64", "--device", "cpu", "--energy", energy, "--interval-ms", str(args.interval_ms),
        "--policy", "greedy:32", "--port", str(args.port), "--max-queue", "256", "--out", str(out / name),
    ]  # fmt: skip
    args.port += 10
    return System(name, command, re.compile(r"serving \S+ with \S+ on (http://\S+):"))


def model_replica(system: System) -> int:
    """The pid of the server's model replica (Serve's replica process that is not the hub)."""
    for pid in tree(system.process.pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ServeReplica" in title and ":hub" not in title:
            return pid
    raise RuntimeError(f"{system.name}: no model replica among its processes")


def replica_cpu_per_ok(system: System, body: bytes, rate: float, seconds: float) -> tuple[float, dict]:
    pid = model_replica(system)
    before = cpu_s(pid)
    row = asyncio.run(open_loop(system.url, body, rate, seconds))
    return (cpu_s(pid) - before) / max(row["ok"], 1) * 1000, row


def profile(system: System, body: bytes, rate: float, seconds: float, out: Path) -> tuple[float, int]:
    """py-spy's share of the model replica's active samples in energy accounting, and the count."""
    raw = out / f"{system.name}-{rate:g}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "-r", "100", "-d", str(round(seconds)), "--nonblocking", "-f", "raw",
         "-o", str(raw), "-p", str(model_replica(system))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    asyncio.run(open_loop(system.url, body, rate, seconds + 2))
    if spy.wait() != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed: {spy.stderr.read()[-2000:]}")
    samples = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # A sample is accounting's when its innermost greenray frame is: measure_batches' wrapper
        # is on the stack of the whole batch, whose forward pass is the model's, not the meter's.
        ours = [frame for frame in stack.split(";") if "greenray/" in frame]
        samples[bool(ours) and bool(ACCOUNTING.search(ours[-1]))] += int(count)
    total = samples[True] + samples[False]
    return samples[True] / total if total else float("nan"), total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="64,128")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2, help="A B B A rounds per rate")
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--profile-s", type=float, default=10.0, help="0: no py-spy profile")
    parser.add_argument("--port", type=int, default=18700)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="greenray-accounting-"))
    body = jpeg()
    metered, bare = server("metered", "simulated", args, out), server("unmetered", "none", args, out)
    try:
        for system in (metered, bare):  # one at a time: Rays starting together on 2 cores time out
            system.start()
            system.wait_ready()
            asyncio.run(open_loop(system.url, body, 16, WARMUP_S))
        for rate in (float(r) for r in args.rates.split(",")):
            cpu = {metered.name: [], bare.name: []}
            for system in [metered, bare, bare, metered] * args.repeats:
                ms, row = replica_cpu_per_ok(system, body, rate, args.seconds)
                cpu[system.name].append(ms)
                print(
                    f"{rate:g} Hz {system.name}: replica {ms:.2f} ms CPU/200, p50 {row['p50_ms']:.1f} ms, "
                    f"p99 {row['p99_ms']:.1f} ms, {row['ok']}/{row['sent']} answered 200",
                    flush=True,
                )
                settle(system)
            with_meter, without = (sorted(cpu[s.name])[len(cpu[s.name]) // 2] for s in (metered, bare))
            print(
                f"{rate:g} Hz: median replica CPU per 200 {with_meter:.2f} ms metered, {without:.2f} ms "
                f"not: accounting {100 * (1 - without / with_meter):.1f}% of the metered replica's CPU"
            )
            if args.profile_s > 0 and shutil.which("py-spy"):
                share, total = profile(metered, body, rate, args.profile_s, out)
                print(
                    f"{rate:g} Hz: py-spy, {total} active samples of the metered replica: "
                    f"{100 * share:.1f}% in energy accounting"
                )
    finally:
        for system in (metered, bare):
            system.stop()


if __name__ == "__main__":
    main()
