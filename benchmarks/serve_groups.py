"""The model replica's own CPU time per image outside its forward passes, at saturation: fed one
Serve call per image (the study's path), or groups of images the way an ingress replica feeds it
(greenray.serve.ingress.Feeder, here in the driver, with every image queued at once so the model
replica's batch queue never runs dry). Target: <= 0.1 ms per image.

    python benchmarks/serve_groups.py                                  # shufflenet_v2_x0_5, 64 px, fixed:32
    python benchmarks/serve_groups.py --image-size 224 --batch 128

CPU time is the replica process's (every thread: Serve's request path, the batch queue, the power
sampler) less its loop thread's inside the batch windows; the idle background (measured first,
with no request) is given too. CPU time, unlike a rate, barely moves with other jobs' load.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from argparse import RawDescriptionHelpFormatter

import numpy as np
from serve_common import machine

from greenray.config import BenchConfig, parse_policy
from greenray.ray_setup import connect
from greenray.serve.driver import deploy, image_pool
from greenray.serve.ingress import Feeder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shufflenet_x0_5")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="calls,groups", help="calls (one per image), groups, or both")
    args = parser.parse_args()

    config = BenchConfig.from_flat(
        {
            "models": args.model,
            "weights": "none",
            "device": "cpu",
            "image_size": args.image_size,
            "energy": "simulated",
            "idle_seconds": 0,
        }
    )
    connect()
    replicas = deploy(args.model, config.deploy, "cpu")
    handle = replicas.handles[0]
    try:
        policy = parse_policy(f"fixed:{args.batch}")
        handle.set_policy.remote(policy).result()
        handle.warmup.remote(8, args.batch).result()
        images, _ = image_pool(args.image_size, 0)
        before = handle.cpu_s.remote().result()
        time.sleep(5)
        idle = (handle.cpu_s.remote().result() - before) / 5
        print(
            f"machine: {machine()}; {args.model} at {args.image_size} px, fixed:{args.batch}, 1 torch thread"
        )
        print(f"idle model replica: {1000 * idle:.1f} ms CPU per second")
        paths = {"calls": "one call per image", "groups": "groups (ingress)"}
        for path in (paths[p] for p in args.paths.split(",")):
            for repeat in range(args.repeats):
                end, seconds = asyncio.run(_run(handle, images, args.images, path, f"{path}-{repeat}"))
                outside = end.cpu_s - end.batch_cpu_s
                per_image = 1000 * outside / end.served
                net = 1000 * (outside - idle * end.energy.seconds) / end.served
                print(
                    f"{path}: {end.served} images in {seconds:.2f} s ({end.served / seconds:.0f}/s), "
                    f"outside the forward {per_image:.3f} ms CPU per image ({net:.3f} less idle), "
                    f"forward {1000 * end.batch_cpu_s / end.served:.3f} ms per image"
                )
    finally:
        replicas.delete()


async def _run(handle, images: list, count: int, path: str, run_id: str):
    await handle.begin_run.remote(run_id)
    started = time.perf_counter()
    if path.startswith("one"):
        await asyncio.gather(*(handle.remote(images[i % len(images)]) for i in range(count)))
    else:
        feeder = Feeder(handle, f"bench-{run_id}")
        await asyncio.gather(*(feeder.put(np.asarray(images[i % len(images)])) for i in range(count)))
    seconds = time.perf_counter() - started
    end = await handle.end_run.remote(run_id)
    await handle.take_records.remote()
    return end, seconds


if __name__ == "__main__":
    main()
