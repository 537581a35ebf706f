"""Sampler overhead: a CPU-bound Python loop with the 10 ms power sampler on vs off.

    python benchmarks/sampler_overhead.py [--energy auto|simulated] [--repeats 15]

On and off runs are shuffled together so drift in the machine hits both; the slowdown is
given for medians and for minima (noise only ever adds time, so the minima are the cleaner
estimate). Target: <= 1%.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

from greenray.energy import EnergyMeter


def busy_loop(n: int = 3_000_000) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--energy", default="simulated")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    args = parser.parse_args()

    busy_loop(200_000)  # warm caches
    times: dict[bool, list[float]] = {False: [], True: []}
    meter = EnergyMeter.create(args.energy, interval_s=args.interval_ms / 1000)
    order = [False, True] * args.repeats
    random.Random(0).shuffle(order)
    for sampling in order:
        if sampling:
            meter.start()
        times[sampling].append(timed(busy_loop))
        meter.stop()
    samples = len(meter.trace()[0])
    meter.close()
    off, on = times[False], times[True]
    cpu = platform.processor() or platform.machine()
    print(f"machine: {platform.node()} {cpu}, python {platform.python_version()}")
    backend = ",".join(sorted(meter.sources)) or "none"
    print(f"energy backend: {backend}; interval {args.interval_ms} ms; {samples} samples kept")
    print(f"loop off: median {statistics.median(off):.4f} s, min {min(off):.4f} s (n={args.repeats})")
    print(f"loop on:  median {statistics.median(on):.4f} s, min {min(on):.4f} s")
    print(
        f"slowdown: median {100 * (statistics.median(on) / statistics.median(off) - 1):+.2f}%, "
        f"min {100 * (min(on) / min(off) - 1):+.2f}%"
    )


if __name__ == "__main__":
    main()
