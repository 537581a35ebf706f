"""A fixed HPO study on 1, 2 and 3 local Ray nodes (ray.cluster_utils.Cluster): wall time and
its ratio to one node.

    python benchmarks/scale_nodes.py [--nodes 1,2,3] [--trials 32] [--epochs 5] [--cpus-per-node 1]

Each worker node offers --cpus-per-node CPUs and trials take one CPU each, so n nodes run n
trials at once; the head offers none (it runs the driver, as in cluster.yaml). On a machine
with fewer cores than the nodes' CPUs the nodes share the cores: say so with the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def one(nodes: int, args) -> tuple[float, int]:
    import ray
    from ray.cluster_utils import Cluster

    from greenray.config import StudyConfig
    from greenray.results import ResultStore
    from greenray.tune.study import start_study

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=args.cpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    settings = StudyConfig.from_flat(
        {
            "strategy": "random",
            "net": args.net,
            "dataset": "digits",
            "rounds": args.trials // 2,
            "repetitions": 2,
            "epochs": args.epochs,
            "energy": "none",
            "idle_seconds": 0,
            "cpus_per_trial": 1.0,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        start_study(settings, Path(out), address=cluster.address, say=lambda *a: None)
        wall = time.perf_counter() - started
        trials = ResultStore(out).read("trials")
        used = trials["node_id"].nunique()
    ray.shutdown()
    cluster.shutdown()
    return wall, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--net", default="cnn")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"study: {args.trials} trials ({args.net} on digits, {args.epochs} epochs), 1 CPU per trial")
    base = None
    for nodes in (int(n) for n in args.nodes.split(",")):
        wall, used = one(nodes, args)
        base = base or wall
        print(
            f"{nodes} node(s): {wall:.1f} s wall, trials ran on {used} node(s), speed-up x{base / wall:.2f}"
        )


if __name__ == "__main__":
    main()
