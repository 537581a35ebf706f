"""serve-tune against an exhaustive sweep: at each request rate, the J/image the search saves
against Serve's default policy (greedy, no wait) under the same p99 target, the live runs it used,
and the best policy of a cap x max-wait sweep that meets the target (runs: the whole grid).

    python benchmarks/serve_tune.py                                   # CPU, simulated energy
    python benchmarks/serve_tune.py --rates 32,128 --slo-ms 100 --energy auto --device cuda --model convnext

One deployment (behind one ingress replica) serves every run of both rates, as serve-tune's own
deployment does. With --energy simulated every Joule is a model's, not a measurement.
"""

from __future__ import annotations

import argparse
import tempfile
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

import pandas as pd
from rich.progress import Progress
from serve_common import machine, markdown

from greenray.config import PolicyTuneConfig, parse_policy
from greenray.results import ResultStore
from greenray.serve import zoo
from greenray.serve.driver import deploy, record_run, start
from greenray.serve.loop import on_loop
from greenray.serve.replicas import IngressOptions
from greenray.serve.run import RunPlan
from greenray.serve.server import search_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shufflenet_x0_5")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rates", default="32,96")
    parser.add_argument("--slo-ms", type=float, default=150.0)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--caps", default="1,4,16,64")
    parser.add_argument("--waits", default="0,25,50,100", help="max waits of the sweep, ms (0: greedy)")
    parser.add_argument("--energy", default="simulated")
    args = parser.parse_args()

    caps = [int(c) for c in args.caps.split(",")]
    waits = [float(w) for w in args.waits.split(",")]
    grid = [f"greedy:{c}" if w == 0 or c == 1 else f"fixed:{c}@{w:g}" for c in caps for w in waits]
    grid = list(dict.fromkeys(grid))  # a cap of 1 never waits: one policy
    settings = {
        "model": args.model,
        "weights": "none",
        "image_size": args.image_size,
        "device": args.device,
        "energy": args.energy,
        "idle_seconds": 0 if args.device == "cpu" else 5,
        "requests": args.requests,
        "slo_ms": args.slo_ms,
        "runs": args.runs,
        "max_batch_size": max(caps),
    }
    first = PolicyTuneConfig.from_flat(settings | {"frequency": float(args.rates.split(",")[0])})
    model_name = zoo.resolve(args.model)
    root = Path(tempfile.mkdtemp(prefix="greenray-tune-"))
    print(
        f"machine: {machine()}; {model_name} at {args.image_size} px on {args.device}, energy {args.energy}"
    )
    print(
        f"target p99 <= {args.slo_ms:g} ms; search: {args.runs} runs; sweep: {len(grid)} runs; "
        f"{args.requests} requests each"
    )
    progress = Progress(disable=True)
    replicas = deploy(model_name, first.deploy, args.device, ingress=IngressOptions(1))
    rows = []
    try:
        model = on_loop(start(model_name, replicas, first.deploy, progress, seed=first.target.seed))
        for rate in (float(r) for r in args.rates.split(",")):
            config = PolicyTuneConfig.from_flat(settings | {"frequency": rate})
            result = search_policy(model, config.target, root / f"tune-{rate:g}", progress, {})
            store = ResultStore(root / f"sweep-{rate:g}")
            target = config.target
            plans = [
                RunPlan(rate, parse_policy(p), target.requests, target.arrival, target.seed) for p in grid
            ]
            sweep = pd.DataFrame([record_run(model, plan, store, progress) for plan in plans])
            feasible = sweep[(sweep["status"] == "ok") & (sweep["p99_latency_s"] * 1000 <= args.slo_ms)]
            best = feasible.loc[feasible["energy_per_image_j"].idxmin()] if len(feasible) else None
            default = sweep.set_index("policy").loc[f"greedy:{max(caps)}"]
            rows.append(
                {
                    "rate Hz": rate,
                    "default J/image": result.baseline.energy_per_image_j,
                    "default p99 ms": result.baseline.p99_ms,
                    "chosen": result.best.policy if result.best else "-",
                    "chosen J/image": result.best.energy_per_image_j if result.best else None,
                    "chosen p99 ms": result.best.p99_ms if result.best else None,
                    "saved": result.saving,
                    "saved idle-free": result.idle_free_saving,
                    "search runs": result.live_runs,
                    "sweep best": best["policy"] if best is not None else "-",
                    "sweep best J/image": best["energy_per_image_j"] if best is not None else None,
                    "sweep runs": len(grid),
                    "sweep default J/image": default["energy_per_image_j"],
                }
            )
            print(markdown(pd.DataFrame([rows[-1]])))
    finally:
        replicas.delete()
    print(markdown(pd.DataFrame(rows)))
    print(f"results: {root}" + (" (energy simulated, not measured)" if args.energy == "simulated" else ""))


if __name__ == "__main__":
    main()
