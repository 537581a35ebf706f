"""Serving overhead: greenray's served images/s at saturation with fixed batches, against a bare
PyTorch loop on the same model, device, precision, input size and thread count; and the model
replica's own CPU time per image outside its forward passes.

    python benchmarks/serve_overhead.py                                       # CPU, 224 px, batch 128
    python benchmarks/serve_overhead.py --image-size 64 --batch 32 --ingress-replicas 0,1
    python benchmarks/serve_overhead.py --device cuda --model convnext        # on a GPU

The request rate is 1.1x the bare loop's images/s so the queue never runs dry (a generator that
cannot send that fast sends as fast as it can); each request is a uint8 image sent through a
Serve handle: to the model replica itself (--ingress-replicas 0, the study's path), or to N
ingress replicas that check requests and hand them to the model replica in groups. Targets:
served/bare >= 0.9 (>= 0.5 on a 2-core machine, where the load generator shares the cores), and
the model replica's CPU outside the forward <= 0.1 ms per image.
"""

from __future__ import annotations

import argparse
from argparse import RawDescriptionHelpFormatter

from serve_common import bare_batch_s, machine, serve, steady_images_per_s

from greenray.config import BenchConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shufflenet_x0_5")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--image-size", type=int, default=None, help="pixels (default: the weights' 224)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=24, help="batches served per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingress-replicas", default="0", help="comma-separated: one set of runs each")
    parser.add_argument("--energy", default="auto")
    args = parser.parse_args()

    # Ray gives a replica of 0.5 CPU one torch thread: the bare loop gets the same.
    threads = 1 if args.device == "cpu" else None
    options = {
        "device": args.device,
        "precision": args.precision,
        "threads": threads,
        "seconds": 4.0,
        "image_size": args.image_size,
    }
    bare = [args.batch / bare_batch_s(args.model, args.batch, **options)]
    frequency = round(1.1 * bare[0])
    size = args.image_size or "224"
    print(
        f"machine: {machine()}; model {args.model}, {args.device}, {args.precision}, {size} px, "
        f"batch {args.batch}"
    )
    print(f"requests sent at {frequency} Hz (1.1x the first bare loop)")
    for ingress in (int(n) for n in args.ingress_replicas.split(",")):
        settings = BenchConfig.from_flat(
            {
                "models": args.model,
                "policies": f"fixed:{args.batch}",
                "frequencies": [float(frequency)],
                "requests": args.batches * args.batch,
                "warmup_batches": 8,
                "weights": "none",
                "precision": args.precision,
                "device": args.device,
                "image_size": args.image_size,
                "energy": args.energy,
                "idle_seconds": 0 if args.device == "cpu" else 5,
                "ingress_replicas": ingress,
            }
        )
        ratios, overheads = [], []
        for _ in range(args.repeats):
            # The bare loop runs before and after each served run: a shared machine's load drifts.
            tables = serve(settings)
            served = steady_images_per_s(tables["batches"])
            run = tables["runs"].iloc[0]
            bare.append(args.batch / bare_batch_s(args.model, args.batch, **options))
            ratios.append(served / ((bare[-2] + bare[-1]) / 2))
            overheads.append(run["overhead_cpu_per_image_ms"])
            print(
                f"ingress replicas {ingress}: bare before/after {bare[-2]:.1f}/{bare[-1]:.1f} images/s, "
                f"served {served:.1f} images/s (sent {run['achieved_rate_hz']:.0f} Hz): "
                f"ratio {ratios[-1]:.3f}; "
                f"model replica CPU outside the forward {overheads[-1]:.3f} ms/image"
            )
        median = sorted(ratios)[len(ratios) // 2]
        print(
            f"ingress replicas {ingress}: ratio median {median:.3f}, best {max(ratios):.3f}; overhead median "
            f"{sorted(overheads)[len(overheads) // 2]:.3f} ms/image"
        )


if __name__ == "__main__":
    main()
