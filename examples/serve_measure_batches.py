"""A Ray Serve user's own deployment, measured by greenray: a torchvision classifier behind
Serve's batching, its batch method decorated with `greenray.serve.measure_batches`, and the
replica's `EnergyReport` read through the deployment handle.

    python examples/serve_measure_batches.py --energy simulated   # a CPU: model numbers, labelled so
    python examples/serve_measure_batches.py                      # NVML on a GPU machine, else RAPL
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import numpy as np
import ray
import torch
import torchvision
from ray import serve

from greenray.serve import EnergyReport, energy_report, measure_batches, replica_meter


# No access log: a line per request would bury the result this example prints.
@serve.deployment(
    max_ongoing_requests=128,
    ray_actor_options={"num_cpus": 0.5},  # a 2-core machine: room beside a Tune run winding down
    logging_config={"log_level": "WARNING", "enable_access_log": False},
)
class Classifier:
    def __init__(self, model: str, energy: str) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = torchvision.models.get_model(model, weights=None).eval().to(self.device)
        replica_meter(self, energy=energy)  # the backend this replica measures with

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    @measure_batches
    async def classify(self, images: list[np.ndarray]) -> list[int]:
        batch = torch.from_numpy(np.stack(images)).to(self.device).float().div_(255)
        with torch.inference_mode():
            return self.model(batch).argmax(dim=1).tolist()

    async def __call__(self, image: np.ndarray) -> int:
        return await self.classify(image)

    async def energy(self) -> EnergyReport:
        return energy_report(self)


def main(argv: list[str] | None = None) -> EnergyReport:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--energy", default="auto", help="auto, nvml, rapl, simulated or none")
    parser.add_argument("--model", default="shufflenet_v2_x0_5")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local Ray needs no token
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's start-up notes on the driver
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    handle = serve.run(Classifier.bind(args.model, args.energy), name="classifier", route_prefix=None)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, args.image_size, args.image_size), dtype=np.uint8) for _ in range(8)]

    async def send() -> list[int]:
        return await asyncio.gather(*(handle.remote(images[i % 8]) for i in range(args.requests)))

    try:
        asyncio.run(send())
        report = handle.energy.remote().result()
    finally:
        serve.delete("classifier")
    print(
        f"{report.items} images in {report.batch_count} batches on {report.device or 'nothing measured'}: "
        f"{report.energy_j or 0:.2f} J ({report.energy_source}), {report.joules_per_item or 0:.4f} J/image, "
        f"peak {report.peak_power_w or 0:.0f} W"
    )
    return report


if __name__ == "__main__":
    main()
