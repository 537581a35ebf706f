"""Ray overhead of the training study: the wall time of a study of short trials (16 by default:
8 rounds x 2 repetitions on digits) against the sum of their training times.

    python benchmarks/ray_overhead.py [--rounds 8] [--repetitions 2] [--epochs 10] [--max-concurrent N]

Ray is started first and timed apart. The study's wall time then covers everything `greenray hpo`
does after Ray is up: the idle-baseline task, the Tuner, worker start-up (actors are reused
between trials), reports after every epoch, and the rows written as trials end. Training time
is the trials' epoch windows (train_seconds); the trial windows (seconds) add the test passes and
the waits for Tune between reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from greenray.config import StudyConfig
from greenray.ray_setup import connect
from greenray.tune.study import start_study


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--net", default="dense-poly")
    parser.add_argument("--max-concurrent", type=int, default=None)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()

    start = time.perf_counter()
    connect(num_cpus=args.cpus)
    ray_start = time.perf_counter() - start
    settings = StudyConfig.from_flat(
        {
            "strategy": "random",
            "net": args.net,
            "rounds": args.rounds,
            "repetitions": args.repetitions,
            "epochs": args.epochs,
            "energy": "none",
            "idle_seconds": 0,
            "max_concurrent": args.max_concurrent,
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = start_study(settings, Path(folder) / "study", say=lambda line: None)
        wall = time.perf_counter() - start
        trials = pd.read_parquet(run.root / "trials.parquet")
    n = len(trials)
    slots = min(args.max_concurrent or args.cpus, args.cpus)
    train, windows = trials["train_seconds"].sum(), trials["seconds"].sum()
    print(
        f"machine: {platform.node()} {platform.machine()}, python",
        platform.python_version(),
        f"{args.cpus} CPUs",
    )
    print(f"Ray start: {ray_start:.2f} s")
    print(
        f"{n} trials ({args.net}, digits, {args.epochs} epochs), {slots} at a time: study wall {wall:.2f} s"
    )
    print(f"sum of training times {train:.3f} s, of trial windows {windows:.3f} s")
    print(
        f"overhead per trial: {(wall * slots - train) / n:.2f} s of a CPU slot; wall / (training / slots) = "
        f"{wall / (train / slots):.0f}x"
    )


if __name__ == "__main__":
    main()
