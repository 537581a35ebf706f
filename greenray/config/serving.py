"""Live serving, as configs: how a served model is deployed (`DeployConfig`: model replicas, the
ingress replicas in front of them, warm-up), what a policy search aims at (`TargetConfig`: a
request rate and a p99 response-time target), and the two commands built from them:
`greenray serve` (`ServeConfig`) and `greenray serve-tune` (`PolicyTuneConfig`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from greenray.config.base import Config
from greenray.config.jobs import BenchConfig, EnergyConfig, ServingConfig
from greenray.config.policy import DEFAULT_GREEDY_CAP, BatchPolicy, PolicyError, parse_policy
from greenray.config.vocab import (
    Arrival,
    Count,
    Frequency,
    Positive,
    Text,
    WholeNumber,
    problem,
    whole,
)

AUTO = "auto"  # --policy auto: search a policy first (serve-tune), then serve with it


def _serve_policy(value: Any) -> str:
    """'auto' or a batching policy's canonical text."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return str(parse_policy(value))
    except PolicyError as exc:
        raise problem(f"auto or a batching policy ({exc})") from None


def _port(value: Any) -> int:
    port = whole(1)(value)
    if port > 65535:
        raise problem("a TCP port, 1 to 65535")
    return port


ServePolicy = Annotated[str, BeforeValidator(_serve_policy)]
Port = Annotated[int, BeforeValidator(_port)]


class DeployConfig(Config):
    """One model behind Ray Serve: `replicas` model replicas (one GPU each with --device cuda),
    each measuring its own device, behind `ingress_replicas` replicas that take the requests,
    decode and check them, and hand them to the model replicas in groups."""

    FLAGS = {
        "replica_cpus": "--cpus-per-replica",
        "ingress_cpus": "--cpus-per-ingress",
    }

    model: Text = "convnext"  # any name serve-bench takes
    replicas: Count = 1
    replica_cpus: Positive = 0.5
    ingress_replicas: Count = 1
    ingress_cpus: Positive = 0.25
    warmup_batches: WholeNumber = 16  # before the first request (a server needs fewer than the study)
    warmup_batch_size: Count = 32
    serving: ServingConfig = ServingConfig()
    energy: EnergyConfig = EnergyConfig(idle_seconds=5.0)


class TargetConfig(Config):
    """What a policy search aims at: the least energy per image whose p99 response time at
    `frequency` Hz stays under `slo_ms`, found by at most `runs` live runs (the baseline,
    Serve's default greedy policy, included) of `requests` requests each."""

    frequency: Frequency = 64.0  # Hz
    slo_ms: Positive = 100.0  # p99 response time target, milliseconds (at the caller)
    runs: Annotated[int, BeforeValidator(whole(2))] = 10  # live runs in all, the baseline included
    requests: Count = 512  # served requests per run
    max_batch_size: Count = DEFAULT_GREEDY_CAP  # the largest cap searched
    arrival: Arrival = "poisson"  # live traffic is not a metronome
    seed: WholeNumber = 0  # seeds the searcher, the arrivals and the images

    def bench(self, deploy: DeployConfig) -> BenchConfig:
        """The serve-bench settings the search's runs share (run.py and rows.py take them)."""
        return BenchConfig(
            models=(deploy.model,),
            policies=(BatchPolicy("greedy", self.max_batch_size),),
            frequencies=(self.frequency,),
            requests=self.requests,
            warmup_batches=deploy.warmup_batches,
            warmup_batch_size=deploy.warmup_batch_size,
            arrival=self.arrival,
            seed=self.seed,
            replicas=deploy.replicas,
            replica_cpus=deploy.replica_cpus,
            ingress_replicas=deploy.ingress_replicas,
            ingress_cpus=deploy.ingress_cpus,
            serving=deploy.serving,
            energy=deploy.energy,
        )


class PolicyTuneConfig(Config):
    """`greenray serve-tune`: the batching policy (cap and max wait) with the least energy per
    image under a p99 target, by live runs on one running deployment; stored whole in
    DIR/tune.json."""

    deploy: DeployConfig = DeployConfig()
    target: TargetConfig = TargetConfig()


class ServeConfig(Config):
    """`greenray serve`: an HTTP server on Ray Serve (POST /predict, GET /metrics, GET /healthz)
    until Ctrl-C; stored whole in DIR/serve.json."""

    policy: ServePolicy = "greedy"  # a batching policy, or auto (searched first, see `target`)
    host: Text = "127.0.0.1"  # 0.0.0.0 opens it to the network
    port: Port = 8000
    # Admitted requests not yet answered, over all ingress replicas; beyond it a request gets 503
    max_queue: Count = 256
    deploy: DeployConfig = DeployConfig()
    target: TargetConfig = TargetConfig()  # --policy auto only

    @property
    def batch_policy(self) -> BatchPolicy | None:
        """The policy to serve with; None for auto (the search decides)."""
        return None if self.policy == AUTO else parse_policy(self.policy)
