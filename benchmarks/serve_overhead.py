"""Serving overhead: greenray's served images/s at saturation with fixed batches of 128, against a
bare PyTorch loop on the same model, device, precision and thread count. Target: >= 0.9.

    python benchmarks/serve_overhead.py                                  # CPU, shufflenet_v2_x0_5
    python benchmarks/serve_overhead.py --device cuda --model convnext   # on a GPU

The request rate is set to 1.1x the bare loop's images/s so the queue never runs dry; each
request is a uint8 224x224 image sent through a Serve handle, converted in the replica.
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
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=24, help="batches served per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--energy", default="auto")
    args = parser.parse_args()

    # Ray gives a replica of 0.5 CPU one torch thread: the bare loop gets the same.
    threads = 1 if args.device == "cpu" else None
    options = {"device": args.device, "precision": args.precision, "threads": threads, "seconds": 4.0}
    bare = [args.batch / bare_batch_s(args.model, args.batch, **options)]
    frequency = round(1.1 * bare[0])
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
            "energy": args.energy,
            "idle_seconds": 0 if args.device == "cpu" else 5,
        }
    )
    print(f"machine: {machine()}; model {args.model}, {args.device}, {args.precision}, batch {args.batch}")
    print(f"requests sent at {frequency} Hz (1.1x the first bare loop)")
    ratios = []
    for _ in range(args.repeats):
        # The bare loop runs before and after each served run: a shared machine's load drifts.
        served = steady_images_per_s(serve(settings)["batches"])
        bare.append(args.batch / bare_batch_s(args.model, args.batch, **options))
        ratios.append(served / ((bare[-2] + bare[-1]) / 2))
        print(f"bare before/after {bare[-2]:.1f}/{bare[-1]:.1f} images/s", end=", ")
        print(f"served {served:.1f} images/s: ratio {ratios[-1]:.3f}")
    print(f"ratio: median {sorted(ratios)[len(ratios) // 2]:.3f}, best {max(ratios):.3f}")


if __name__ == "__main__":
    main()
