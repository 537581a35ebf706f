"""Load generator accuracy: achieved rate against the target and the spread of inter-arrival times,
sending to a fake sink whose answers take 50 ms (so answers and sends overlap, as in a real run).
Target: achieved rate within 1% of 128 Hz.

    python benchmarks/serve_loadgen.py [--frequency 128] [--seconds 30] [--arrival constant]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
from argparse import RawDescriptionHelpFormatter

import numpy as np

from greenray.serve.loadgen import LoadGenerator, arrival_offsets


async def measure(frequency: float, seconds: float, arrival: str) -> LoadGenerator:
    async def sink(request_id: int) -> int:
        await asyncio.sleep(0.05)
        return request_id

    generator = LoadGenerator(sink, arrival_offsets(arrival, frequency, seed=0))
    await generator.run(asyncio.Event(), max_requests=int(frequency * seconds))
    await generator.drain()
    return generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--frequency", type=float, default=128.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--arrival", default="constant")
    args = parser.parse_args()
    generator = asyncio.run(measure(args.frequency, args.seconds, args.arrival))
    stats = generator.stats()
    intervals = np.diff([t.submitted_s for t in generator.timings])
    print(f"machine: {platform.node()} ({platform.machine()}), Python {platform.python_version()}")
    print(f"{args.arrival} arrivals at {args.frequency:g} Hz for {args.seconds:g} s: {stats.sent} sent")
    error = 100 * (stats.achieved_rate_hz / args.frequency - 1)
    print(f"achieved rate: {stats.achieved_rate_hz:.3f} Hz ({error:+.3f}% from {args.frequency:g} Hz)")
    error = 100 * (stats.achieved_rate_hz / stats.scheduled_rate_hz - 1)
    print(f"scheduled rate of this draw: {stats.scheduled_rate_hz:.3f} Hz (achieved: {error:+.3f}%)")
    print(f"send lateness: p99 {1000 * stats.p99_lateness_s:.3f} ms")
    print(f"inter-arrival: p99 |actual - scheduled| {1000 * stats.p99_interval_error_s:.3f} ms")
    p1, p99 = 1000 * np.percentile(intervals, [1, 99])
    print(f"intervals: p1 {p1:.3f} ms, p99 {p99:.3f} ms (scheduled {1000 / args.frequency:.3f} ms)")


if __name__ == "__main__":
    main()
