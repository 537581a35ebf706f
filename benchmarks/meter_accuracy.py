"""Meter accuracy against a stand-in NVML whose true power is known (tests/nvml_standin.py).

    python benchmarks/meter_accuracy.py [--windows 200] [--json PATH] [--ramp-ms 0] [--interval-ms 10]

A bursty load (300 W bursts of 30-300 ms, 70 W between, 135 W on average; steps, or first-order
ramps of --ramp-ms), a counter that moves every 100 ms and costs 4 ms a read, a sensor 1% low;
windows of 0.2, 0.5, 1, 2 and 5 s placed at random (gaps uniform in 0-0.6 s), in virtual time
driven as the meter's threads would (10 ms samples with up to 2 ms of jitter, a counter read a
second). For each power field and length: median and p95 of greenray's error, how often it
stayed within the window's stated `uncertainty_j`, the median stated uncertainty, and the
error of the counter read at the two window edges (Zeus's way, and greenray's before). These
are stand-in results, not GPU measurements: the truth is the stand-in's model.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the stand-in NVML

from nvml_standin import Driver, Load, VirtualClock, standin  # noqa: E402

from greenray.energy import EnergyMeter  # noqa: E402
from greenray.energy.nvml import NvmlBackend  # noqa: E402

LENGTHS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
GAP_S = (0.0, 0.6)


def accuracy(
    seconds: float,
    *,
    windows: int = 200,
    instant: bool = True,
    counter: bool = True,
    gain: float = 0.99,
    ramp_s: float = 0.0,
    interval_s: float = 0.01,
    warmup_s: float = 60.0,
    seed: int = 0,
) -> dict:
    """Errors of `windows` windows of `seconds` on the stand-in (relative, as fractions)."""
    clock = VirtualClock()
    span = warmup_s + windows * (seconds + sum(GAP_S) / 2) * 1.2 + 10.0
    load = Load.bursty(span, seed=seed, ramp_s=ramp_s)
    nvml, (gpu,) = standin(1, clock=clock, load=load, instant=instant, gain=gain)
    meter = EnergyMeter([NvmlBackend(nvml=nvml)], clock=clock, interval_s=interval_s, sleep=clock.sleep)
    driver = Driver(meter, clock, interval_s=interval_s, jitter_s=0.002, seed=seed)
    rng = np.random.default_rng(seed)
    driver.run_to(warmup_s)
    ours, edges, stated, approximate, sources = [], [], [], [], []
    for _ in range(windows):
        driver.run_for(rng.uniform(*GAP_S))
        meter.begin_window("w", counter=counter)
        driver.run_for(seconds)
        m = meter.end_window("w")
        t0, t1 = m.clock_start, m.clock_start + m.seconds
        truth = gpu.true_j(t0, t1)
        ours.append((m.joules - truth) / truth)
        edges.append((gpu.counter_j(t1) - gpu.counter_j(t0) - truth) / truth)
        stated.append(m.uncertainty_j / truth)
        approximate.append(m.approximate)
        sources.append(m.energy_source)
    ours, edges, stated = np.abs(ours), np.abs(edges), np.array(stated)
    return {
        "seconds": seconds,
        "windows": windows,
        "field": "instant" if instant else "average",
        "counter_at_edges": counter and not instant,
        "median_error": float(np.median(ours)),
        "p95_error": float(np.percentile(ours, 95)),
        "within_stated": float((ours <= stated).mean()),
        "median_stated": float(np.median(stated)),
        "approximate": float(np.mean(approximate)),
        "sources": sorted(set(sources)),
        "edges_median_error": float(np.median(edges)),
        "edges_p95_error": float(np.percentile(edges, 95)),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| field | window | median error | p95 error | within stated | median stated | approximate "
        "| counter at edges: median | p95 |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        cells = [r["label"], f"{r['seconds']:g} s"]
        cells += [f"{100 * r[k]:.2f}%" for k in ("median_error", "p95_error")]
        cells += [f"{100 * r['within_stated']:.0f}%", f"{100 * r['median_stated']:.2f}%"]
        cells += [f"{100 * r['approximate']:.0f}%"]
        cells += [f"{100 * r[k]:.2f}%" for k in ("edges_median_error", "edges_p95_error")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--ramp-ms", type=float, default=0.0)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configs = [
        ("instant, warm (60 s)", {"instant": True}),
        ("instant, cold (0 s)", {"instant": True, "warmup_s": 0.0}),
        ("average, counter at edges", {"instant": False}),
        ("average, counter=False", {"instant": False, "counter": False}),
    ]
    rows = []
    for label, config in configs:
        for seconds in LENGTHS_S:
            found = accuracy(
                seconds,
                windows=args.windows,
                ramp_s=args.ramp_ms / 1000,
                interval_s=args.interval_ms / 1000,
                **config,
            )
            rows.append({"label": label, **found})
            print(table([rows[-1]]).splitlines()[-1], flush=True)
    machine = f"{platform.node()} {platform.machine()}, python {platform.python_version()}"
    print(f"\nmachine: {machine}; stand-in NVML, not a GPU")
    print(
        f"ramp {args.ramp_ms:g} ms, sampling every {args.interval_ms:g} ms, {args.windows} windows per row\n"
    )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
