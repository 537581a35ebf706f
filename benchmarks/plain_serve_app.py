"""A plain one-deployment Ray Serve image classifier written as Ray's docs show one (FastAPI
ingress, PIL + torchvision transforms, @serve.batch), for benchmarks/serve_vs_plain.py to
compare `greenray serve` with. Runs its own local Ray until SIGINT; prints "ready URL".

    python benchmarks/plain_serve_app.py --port 8001 [--image-size 64] [--batch 32] [--wait-ms 0]

With RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in its environment (and --direct-port), Serve's fast path:
the replica answers on --direct-port itself and Serve's proxy stays on --port.
"""

# No `from __future__ import annotations`: FastAPI reads the route's `Request` annotation itself.
import argparse
import io
import os
import signal
import time

import torch
import torchvision
from fastapi import FastAPI, Request
from PIL import Image
from ray import serve
from torchvision import transforms

app = FastAPI()


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(app)
class Classifier:
    def __init__(self, image_size: int, batch: int, wait_s: float) -> None:
        self.model = torchvision.models.shufflenet_v2_x0_5(weights=None).eval()
        self.preprocess = transforms.Compose(
            [
                transforms.Resize(image_size),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )
        self.classify.set_max_batch_size(batch)
        self.classify.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def classify(self, images: list[torch.Tensor]) -> list[int]:
        with torch.inference_mode():
            return self.model(torch.stack(images)).argmax(dim=1).tolist()

    @app.post("/predict")
    async def predict(self, request: Request) -> dict:
        image = Image.open(io.BytesIO(await request.body())).convert("RGB")
        return {"class": await self.classify(self.preprocess(image))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--direct-port", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=0.0)
    args = parser.parse_args()
    if args.direct_port is not None:  # read by Serve's controller when Ray starts
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(args.direct_port)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(args.direct_port + 1)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "0"
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local Ray, as greenray's
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    serve.start(
        http_options={"host": "127.0.0.1", "port": args.port},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    serve.run(
        Classifier.bind(args.image_size, args.batch, args.wait_ms / 1000), name="plain", route_prefix="/"
    )
    port = args.direct_port or args.port
    print(f"ready http://127.0.0.1:{port}", flush=True)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.5)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
