"""The replicas of one model: one ModelServer per device, each measuring its own device. Without
an ingress each is a Serve application of its own and requests go to them round robin; with one
(`Ingress`), a single application holds the ingress replicas, the model replicas and the metrics
hub, and requests go to the ingress, which groups them for the model replicas. A server without
ingress replicas makes each model replica its own HTTP ingress (greenray.serve.model_ingress,
an application each). Control calls go to every model replica, from an event loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from greenray.config import BatchPolicy, EnergyConfig, ServingConfig


@dataclass(frozen=True)
class IngressOptions:
    """Ingress replicas in front of the model replicas, and whether Serve takes HTTP for them.
    With no ingress replica and HTTP, each model replica is its own ingress; with neither,
    requests come through the model replicas' handles only."""

    replicas: int
    cpus: float = 0.25
    max_queue: int | None = None  # admitted requests over all ingress replicas; None: no limit
    http: dict | None = None  # Serve's http_options ({"host", "port"}); None: handles only


class Replicas:
    def __init__(self, handles: list, app_names: list[str], ingress=None, hub=None) -> None:
        self.handles = handles  # one per model replica
        self.app_names = app_names
        self.ingress = ingress  # the ingress deployment's handle, if there is one
        self.hub = hub  # and its hub's (greenray.serve.app.Hub)

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
        ingress: IngressOptions | None = None,
        policy: BatchPolicy | None = None,
    ) -> Replicas:
        """`count` model replicas of `model` (and the ingress, if any), batching under `policy`
        (None: ModelServer's first policy) until set_policy changes it."""
        from ray import serve

        from greenray.serve.deployment import server_app
        from greenray.serve.options import SERVE_LOGGING

        # Serve logs warnings only (its driver logger is set up when ray.serve is imported, so
        # only now can it be quieted).
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        if ingress is not None and ingress.http is not None:
            serve.start(http_options=ingress.http, logging_config=SERVE_LOGGING)
        else:  # requests come through handles only: no HTTP proxy
            serve.start(proxy_location="Disabled", logging_config=SERVE_LOGGING)
        tag = uuid.uuid4().hex[:6]
        if ingress is not None and ingress.replicas == 0 and ingress.http is not None:
            return cls._deploy_answering_http(
                model, serving, energy, count, num_cpus, num_gpus, ingress, tag, policy
            )
        if ingress is not None and ingress.replicas > 0:
            return cls._deploy_with_ingress(
                model, serving, energy, count, num_cpus, num_gpus, ingress, tag, policy
            )
        handles, names = [], []
        for index in range(count):
            name = f"greenray-{tag}-{index}"
            app = server_app(
                model,
                serving,
                energy,
                name=f"{model}-{index}",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                policy=policy,
            )
            handles.append(serve.run(app, name=name, route_prefix=None))
            names.append(name)
        return cls(handles, names)

    @classmethod
    def _deploy_with_ingress(
        cls, model, serving, energy, count, num_cpus, num_gpus, ingress, tag, policy
    ) -> Replicas:
        from ray import serve

        from greenray.serve.app import HUB, serving_app

        name = f"greenray-{tag}"
        app = serving_app(
            model,
            serving,
            energy,
            replicas=count,
            replica_cpus=num_cpus,
            num_gpus=num_gpus,
            ingress_replicas=ingress.replicas,
            ingress_cpus=ingress.cpus,
            max_queue=ingress.max_queue,
            policy=policy,
        )
        front = serve.run(app, name=name, route_prefix="/" if ingress.http is not None else None)
        handles = [serve.get_deployment_handle(f"{model}-{i}", app_name=name) for i in range(count)]
        return cls(handles, [name], ingress=front, hub=serve.get_deployment_handle(HUB, app_name=name))

    @classmethod
    def _deploy_answering_http(
        cls, model, serving, energy, count, num_cpus, num_gpus, ingress, tag, policy
    ) -> Replicas:
        """Model replicas that are their own ingress (greenray.serve.model_ingress), one
        application each; the first takes "/" on Serve's proxy and holds the Hub."""
        from ray import serve

        from greenray.serve.app import HUB
        from greenray.serve.model_ingress import model_ingress_apps

        names = [f"greenray-{tag}-{i}" for i in range(count)]
        apps = model_ingress_apps(
            model,
            serving,
            energy,
            names=names,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_queue=ingress.max_queue,
            policy=policy,
        )
        handles = [
            serve.run(app, name=name, route_prefix="/" if i == 0 else None)
            for i, (app, name) in enumerate(zip(apps, names, strict=True))
        ]
        return cls(handles, names, hub=serve.get_deployment_handle(HUB, app_name=names[0]))

    def __len__(self) -> int:
        return len(self.handles)

    async def call(self, method: str, *args) -> list:
        """`method(*args)` on every model replica at once; their answers, in replica order. Async
        only: a handle is called from an event loop (greenray.serve.loop), never from sync code."""
        return list(await asyncio.gather(*(getattr(h, method).remote(*args) for h in self.handles)))

    @property
    def send_window(self) -> int | None:
        """Requests a caller may keep in flight (None: no limit; the study's path, where the
        backlog is the model replica's own batch queue)."""
        from greenray.serve.ingress import IN_FLIGHT_PER_MODEL

        return None if self.ingress is None else IN_FLIGHT_PER_MODEL * len(self.handles)

    def delete(self) -> None:
        from ray import serve

        for name in self.app_names:
            serve.delete(name)
