"""with_energy's cost on a user's trainable: the images/s a plain PyTorch trainable (an MLP on
synthetic data, reporting after every epoch) reaches in Ray Tune with and without
`greenray.tune.with_energy` around it. Target: ratio >= 0.98.

    python benchmarks/with_energy_overhead.py                      # CPU: simulated backend, sampler on
    python benchmarks/with_energy_overhead.py --energy nvml        # a GPU machine

Trials run one at a time, the two kinds alternating; each trainable times its own training
loops (so Tune's scheduling is not in the number) and reports images/s and images per CPU-second
of its process (the meter's sampler thread included; it barely moves with other processes' load,
where wall time does). The meter's cost is its 10 ms sampler thread (GIL hand-offs) and a counter
read per report.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import ray
import torch
from ray import tune
from torch import nn

from greenray.tune import with_energy

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy output is silent at verbose=0


def train(config: dict) -> None:
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(config["samples"], 64, generator=generator).to(device)
    y = torch.randint(10, (config["samples"],), generator=generator).to(device)
    width = config["width"]
    model = nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    spent = cpu = 0.0
    for epoch in range(config["epochs"]):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(y), config["batch"]):
            loss = nn.functional.cross_entropy(model(x[i : i + config["batch"]]), y[i : i + config["batch"]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        spent += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        images = len(y) * (epoch + 1)
        tune.report({"epoch": epoch, "images_per_s": images / spent, "images_per_cpu_s": images / cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--energy", default="simulated")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    measured = with_energy(train, energy=args.energy)

    def either(config: dict) -> None:
        (measured if config["with_energy"] else train)(config)

    kinds = [True, False] * args.repeats  # alternating, one at a time
    space = {k: getattr(args, k) for k in ("samples", "width", "batch", "epochs")}
    rates: dict[bool, list[float]] = {True: [], False: []}
    per_cpu: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as storage:
        for kind in kinds:
            result = tune.Tuner(
                either,
                param_space=space | {"with_energy": kind},
                run_config=tune.RunConfig(storage_path=storage, verbose=0),
            ).fit()[0]
            rates[kind].append(result.metrics["images_per_s"])
            per_cpu[kind].append(result.metrics["images_per_cpu_s"])
    ratio_median = statistics.median(rates[True]) / statistics.median(rates[False])
    ratio_best = max(rates[True]) / max(rates[False])
    pairs = statistics.median(a / b for a, b in zip(rates[True], rates[False], strict=True))
    print(
        f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    print(
        f"MLP 64-{args.width}-{args.width}-10, batch {args.batch}, {args.samples} x {args.epochs} epochs, "
        f"energy {args.energy}"
    )
    for kind, label in ((False, "plain"), (True, "with_energy")):
        print(
            f"{label:12s} images/s: median {statistics.median(rates[kind]):.0f}, best {max(rates[kind]):.0f}"
        )
    print(
        f"ratio with_energy / plain: median {ratio_median:.3f}, best {ratio_best:.3f}, "
        f"median of pairs {pairs:.3f}"
    )
    by_cpu = statistics.median(per_cpu[True]) / statistics.median(per_cpu[False])
    print(f"ratio of images per CPU-second (medians): {by_cpu:.3f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
