"""Added latency per request: response time at the caller at 64 Hz under greedy batching, less the
model's bare time for a batch of the size each request rode in.

    python benchmarks/serve_latency.py                      # CPU, shufflenet_v2_x0_5, 64 Hz
    python benchmarks/serve_latency.py --frequency 128

Also splits the response time along the request's path, from the clocks the requests table keeps
(caller and replica share the clock on one machine): caller -> replica handler, queue, batch,
batch end -> caller.
"""

from __future__ import annotations

import argparse
from argparse import RawDescriptionHelpFormatter

import numpy as np
from serve_common import bare_batch_s, machine, serve

from greenray.config import BenchConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shufflenet_x0_5")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--frequency", type=float, default=64.0)
    parser.add_argument("--policy", default="greedy")
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--energy", default="auto")
    args = parser.parse_args()

    settings = BenchConfig.from_flat(
        {
            "models": args.model,
            "policies": args.policy,
            "frequencies": [args.frequency],
            "requests": args.requests,
            "warmup_batches": 16,
            "weights": "none",
            "device": args.device,
            "energy": args.energy,
            "idle_seconds": 0 if args.device == "cpu" else 5,
        }
    )
    tables = serve(settings)
    run = tables["runs"].iloc[0]
    requests = tables["requests"]
    served = requests[requests["served"]].copy()
    sizes = served.merge(tables["batches"][["batch_id", "size"]], on="batch_id")["size"]
    threads = 1 if args.device == "cpu" else None
    bare = {
        int(s): bare_batch_s(args.model, int(s), device=args.device, threads=threads, seconds=1.0)
        for s in sorted(sizes.unique())
    }
    added = served["latency_s"].to_numpy() - sizes.map(bare).to_numpy()
    parts = {
        "caller -> replica handler": served["enqueued_s"] - served["submitted_s"],
        "queue (enqueued -> batch start)": served["queue_wait_s"],
        "batch (start -> end)": served["batch_ended_s"] - served["batch_started_s"],
        "batch end -> caller": served["completed_s"] - served["batch_ended_s"],
    }
    print(f"machine: {machine()}; {args.model} on {args.device}, {args.policy} at {args.frequency:g} Hz")
    print(f"served {int(run['served'])}, mean batch {run['mean_batch_size']:.2f}, sent at", end=" ")
    print(f"{run['achieved_rate_hz']:.2f} Hz")
    print("bare batch time: " + ", ".join(f"{s}: {1000 * t:.2f} ms" for s, t in bare.items()))
    print(f"response time: {ms(served['latency_s'])}")
    print(f"added latency: {ms(added)}")
    for name, values in parts.items():
        print(f"  {name}: {ms(values)}")


def ms(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"median {1000 * np.median(values):.2f} ms, p99 {1000 * np.percentile(values, 99):.2f} ms"


if __name__ == "__main__":
    main()
