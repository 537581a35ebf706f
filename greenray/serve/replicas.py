"""The replicas of one model: one Serve application of one replica per device, each measuring its
own device. Requests go round robin; control calls go to all."""

from __future__ import annotations

import asyncio
import logging
import uuid

from greenray.config import EnergyConfig, ServingConfig


class Replicas:
    def __init__(self, handles: list, app_names: list[str]) -> None:
        self.handles = handles
        self.app_names = app_names

    @classmethod
    def deploy(
        cls,
        model: str,
        serving: ServingConfig,
        energy: EnergyConfig,
        count: int,
        *,
        num_cpus: float,
        num_gpus: float,
    ) -> Replicas:
        from ray import serve

        from greenray.serve.deployment import SERVE_LOGGING, server_app

        # Requests come through handles only: no HTTP proxy; Serve logs warnings only (its
        # driver logger is set up when ray.serve is imported, so only now can it be quieted).
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        serve.start(proxy_location="Disabled", logging_config=SERVE_LOGGING)
        tag = uuid.uuid4().hex[:6]
        handles, names = [], []
        for index in range(count):
            name = f"greenray-{tag}-{index}"
            app = server_app(
                model, serving, energy, name=f"{model}-{index}", num_cpus=num_cpus, num_gpus=num_gpus
            )
            handles.append(serve.run(app, name=name, route_prefix=None))
            names.append(name)
        return cls(handles, names)

    def __len__(self) -> int:
        return len(self.handles)

    def call(self, method: str, *args) -> list:
        responses = [getattr(handle, method).remote(*args) for handle in self.handles]
        return [response.result() for response in responses]

    async def acall(self, method: str, *args) -> list:
        return list(await asyncio.gather(*(getattr(h, method).remote(*args) for h in self.handles)))

    def send(self, request_id: int, image):
        """Request `request_id` to replica request_id mod N; returns Serve's response (awaitable)."""
        return self.handles[request_id % len(self.handles)].remote(image, request_id=request_id)

    def delete(self) -> None:
        from ray import serve

        for name in self.app_names:
            serve.delete(name)
