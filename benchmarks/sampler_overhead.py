"""Sampler overhead: a CPU-bound Python loop with the 10 ms power sampler on vs off.

    python benchmarks/sampler_overhead.py [--energy auto|nvml|simulated|standin] [--gpus 1] [--repeats 15]

`--energy standin` runs the NVML backend over the stand-in NVML of tests/nvml_standin.py on the
real clock (`--gpus` of them; its reads are Python calls, NVML's are C calls): a stand-in
result, not a GPU measurement. On a GPU machine use `--energy nvml`.

On and off runs are shuffled together so drift in the machine hits both; the slowdown is
given for medians and for minima (noise only ever adds time, so the minima are the cleaner
estimate). Target: <= 1%.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

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


def make_meter(energy: str, interval_s: float, gpus: int) -> EnergyMeter:
    if energy != "standin":
        return EnergyMeter.create(energy, interval_s=interval_s)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from nvml_standin import Load, RealClock, standin

    from greenray.energy.nvml import NvmlBackend

    nvml, _ = standin(gpus, clock=RealClock(), load=Load.steady(135.0))
    return EnergyMeter([NvmlBackend(nvml=nvml)], interval_s=interval_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--energy", default="simulated")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--gpus", type=int, default=1, help="stand-in GPUs (--energy standin)")
    args = parser.parse_args()

    busy_loop(200_000)  # warm caches
    times: dict[bool, list[float]] = {False: [], True: []}
    meter = make_meter(args.energy, args.interval_ms / 1000, args.gpus)
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
    label = f"stand-in NVML x {args.gpus} (not a GPU)" if args.energy == "standin" else backend
    print(f"energy backend: {label}; interval {args.interval_ms} ms; {samples} samples kept")
    print(f"loop off: median {statistics.median(off):.4f} s, min {min(off):.4f} s (n={args.repeats})")
    print(f"loop on:  median {statistics.median(on):.4f} s, min {min(on):.4f} s")
    print(
        f"slowdown: median {100 * (statistics.median(on) / statistics.median(off) - 1):+.2f}%, "
        f"min {100 * (min(on) / min(off) - 1):+.2f}%"
    )


if __name__ == "__main__":
    main()
