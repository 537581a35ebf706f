"""Serving, as configs. `DeployConfig` is how one model is deployed on Ray Serve (model replicas,
the ingress replicas in front of them, warm-up, how a replica runs its model, energy); it is
nested whole in the bench (`BenchConfig`: `greenray serve-bench`), the server (`ServeConfig`:
`greenray serve`) and the policy search (`PolicyTuneConfig`: `greenray serve-tune`, aiming at a
`TargetConfig`). Where the bench and a server need other defaults (the study's warm-up and its
path without ingress replicas), the bench's default DeployConfig says so."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BeforeValidator, Field, PlainSerializer, PlainValidator, Strict, model_validator

from greenray.config.base import Config
from greenray.config.jobs import EnergyConfig
from greenray.config.policy import DEFAULT_GREEDY_CAP, BatchPolicy, PolicyError, parse_policy
from greenray.config.vocab import (
    ARRIVALS,
    DEVICES,
    PRECISIONS,
    Arrival,
    Count,
    Device,
    Flag,
    Frequency,
    Listed,
    MaybePixels,
    Positive,
    Precision,
    Text,
    Unique,
    Weights,
    WholeNumber,
    choice,
    number,
    problem,
    sentence,
    worded,
)

AUTO = "auto"  # --policy auto: search a policy first (serve-tune), then serve with it
STUDY_POLICIES = "fixed:16,fixed:32,fixed:64,fixed:128,greedy"
STUDY_FREQUENCIES = (16.0, 32.0, 64.0, 128.0)
REQUEST_PATHS = ("handle", "http")  # how serve-bench's load generator reaches the model


def _policy(value: Any) -> BatchPolicy:
    try:
        return parse_policy(value)
    except PolicyError as exc:
        raise problem(f"a batching policy ({exc})") from None


def _serve_policy(value: Any) -> str:
    """'auto' or a batching policy's canonical text."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return str(parse_policy(value))
    except PolicyError as exc:
        raise problem(f"auto or a batching policy ({exc})") from None


Policy = Annotated[BatchPolicy, PlainValidator(_policy), PlainSerializer(str, return_type=str)]
ServePolicy = Annotated[str, BeforeValidator(_serve_policy)]
Port = Annotated[int, Strict(), Ge(1), Le(65535), worded("a TCP port, 1 to 65535")]


class ServingConfig(Config):
    """How a replica runs its model."""

    weights: Weights = Field(
        "default",
        description="default (torchvision's pretrained weights from torch.hub's cache, or downloaded when "
        "the server answers within 3 s, else random weights with a notice), none (random) or a "
        "state-dict PATH.",
    )
    precision: Precision = Field(
        "fp32", description=f"{', '.join(PRECISIONS)} (bf16/fp16 through torch.autocast; fp16 needs a GPU)."
    )
    device: Device = Field(
        "auto", description=f"{', '.join(DEVICES)} (auto: a GPU where the cluster has one)."
    )
    image_size: MaybePixels = Field(
        None, description="Input size in pixels (default: the weights' own, 224)."
    )
    preprocess_in_window: Flag = Field(
        False, description="Convert and normalise images inside each batch's energy window."
    )

    @model_validator(mode="after")
    def _fp16_needs_a_gpu(self) -> ServingConfig:
        if self.precision == "fp16" and self.device == "cpu":
            raise sentence("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return self


class DeployConfig(Config):
    """One model behind Ray Serve: `replicas` model replicas (one GPU each with --device cuda),
    each measuring its own device, behind `ingress_replicas` replicas that take the requests,
    decode and check them, and hand them to the model replicas in groups (none: a server's model
    replicas take the requests themselves)."""

    FLAGS = {"replica_cpus": "--cpus-per-replica", "ingress_cpus": "--cpus-per-ingress"}

    replicas: Count = Field(1, description="Model replicas, one per GPU (with --device cuda), on any node.")
    replica_cpus: Positive = Field(0.5, description="CPUs Ray reserves for each model replica.")
    ingress_replicas: WholeNumber = Field(
        1,
        description="Ingress replicas that take the requests, check them and hand them to the model "
        "replicas in groups. 0: none; a server's model replicas then answer HTTP themselves (decode and "
        "batch, one port each), serve-bench's and serve-tune's runs call them through handles (the study's "
        "path).",
    )
    ingress_cpus: Positive = Field(0.25, description="CPUs Ray reserves for each ingress replica.")
    fast_path: Flag = Field(
        True,
        description="Serve's throughput-optimised mode on the local Ray the command starts: handle calls "
        "routed on the caller's event loop (1.4-1.8x serve-bench's images/s on 2 cores), and the "
        "replicas that take HTTP answer on --port (and the ports after it, one each) themselves, past "
        "Serve's proxy (2-3x the requests/s on 2 cores), which moves to a free port. Off: Serve's "
        "default mode, every HTTP request through the proxy on --port.",
    )
    warmup_batches: WholeNumber = Field(16, description="Warm-up batches through the model before its runs.")
    warmup_batch_size: Count = Field(32, description="Images per warm-up batch (the study: 32).")
    serving: ServingConfig = ServingConfig()
    energy: EnergyConfig = EnergyConfig(idle_seconds=5.0)

    @property
    def http_replicas(self) -> int:
        """The replicas a server's clients reach (one port each on Serve's fast path): the
        ingress replicas, or with none the model replicas, each its own ingress."""
        return self.ingress_replicas or self.replicas


class BenchConfig(Config):
    """A serving bench (`greenray serve-bench`): every model x frequency x policy; stored whole
    in DIR/bench.json. Its deployment keeps the study's protocol: 256 warm-up batches before each
    model and no ingress replicas unless asked."""

    FLAGS = {"models": "--model", "policies": "--policy", "frequencies": "--frequency"}

    models: Annotated[tuple[Text, ...], Listed, Unique] = Field(
        ("convnext",),
        description="Model(s), comma-separated: alexnet, densenet, shufflenet, vit, convnext (the "
        "study's), shufflenet_v2_x0_5 (the study's code), or any torchvision classification model.",
    )
    policies: Annotated[tuple[Policy, ...], Listed, Unique] = Field(
        tuple(map(parse_policy, STUDY_POLICIES.split(","))),
        description="Batching policies: fixed:N, fixed:N@MS (max wait), greedy[:CAP].",
    )
    frequencies: Annotated[tuple[Frequency, ...], Listed, Unique] = Field(
        STUDY_FREQUENCIES, description="Request rates in Hz, comma-separated."
    )
    requests: Count = Field(
        8192, description="A run ends when this many requests are served (the study's 2^13)."
    )
    arrival: Arrival = Field(
        "constant",
        description=f"{', '.join(ARRIVALS)} (jitter: the study's (1/f)*U(0.8,1.2); poisson: same mean).",
    )
    seed: WholeNumber = Field(0, description="Seeds the arrivals and the images (and a policy search).")
    request_path: choice(REQUEST_PATHS) = Field(
        "handle",
        description="handle: Serve handles carry decoded images to the replicas (the study's path; its "
        "times are the replica's). http: JPEG bodies over HTTP to an ingress replica, on Serve's fast "
        "path where the Ray has it, as `greenray serve` takes them (its times are a client's; at least "
        "one ingress replica).",
    )
    deploy: DeployConfig = DeployConfig(ingress_replicas=0, warmup_batches=256)

    @model_validator(mode="after")
    def _batches_reachable(self) -> BenchConfig:
        """A fixed batch larger than a run's requests never fills: the run would wait forever."""
        for policy in self.policies:
            if policy.kind == "fixed" and policy.size > self.requests:
                raise sentence(
                    f"--policy {policy} waits for more requests than a run sends (--requests "
                    f"{self.requests}): use a batch of at most {self.requests}, or more --requests"
                )
        return self

    @property
    def deployment(self) -> DeployConfig:
        """The deployment: the HTTP path goes through one ingress replica at least."""
        if self.request_path == "http" and self.deploy.ingress_replicas == 0:
            return self.deploy.model_copy(update={"ingress_replicas": 1})
        return self.deploy


class TargetConfig(Config):
    """What a policy search aims at: the least energy per image whose p99 response time at
    `frequency` Hz stays under `slo_ms`, found by at most `runs` live runs (the baseline,
    Serve's default greedy policy, included) of `requests` requests each."""

    frequency: Frequency = Field(64.0, description="The request rate the policy search runs at, Hz.")
    slo_ms: Positive = Field(100.0, description="The p99 response time the policy must keep, milliseconds.")
    runs: number(whole=True, ge=2) = Field(
        10, description="Live runs the search may use, Serve's default policy included."
    )
    requests: Count = Field(512, description="Served requests per search run.")
    max_batch_size: Count = Field(DEFAULT_GREEDY_CAP, description="The largest batch cap the search tries.")
    arrival: Arrival = Field("poisson", description=f"Search runs' arrivals: {', '.join(ARRIVALS)}.")
    seed: WholeNumber = Field(0, description="Seeds the searcher, the arrivals and the images.")


class LiveConfig(Config):
    """A model deployed to answer live traffic (serve, serve-tune): its deployment, and what a
    policy search on it aims at."""

    FLAGS = {"model": "--model"}

    model: Text = Field(
        "convnext", description="The model: any name serve-bench takes (convnext, vit, shufflenet_x0_5, ...)."
    )
    deploy: DeployConfig = DeployConfig()
    target: TargetConfig = TargetConfig()


class PolicyTuneConfig(LiveConfig):
    """`greenray serve-tune`: the batching policy (cap and max wait) with the least energy per
    image under a p99 target, by live runs on one running deployment; stored whole in
    DIR/tune.json."""


class ServeConfig(LiveConfig):
    """`greenray serve`: an HTTP server on Ray Serve (POST /predict, GET /metrics, GET /healthz)
    until Ctrl-C; stored whole in DIR/serve.json. `target` is for --policy auto only."""

    # Each model replica answers HTTP itself: on 2 cores it was as fast as one ingress replica
    # or faster at 16-128 Hz, and still refuses overload as fast 503s (docs/BENCHMARKS.md).
    deploy: DeployConfig = DeployConfig(ingress_replicas=0)
    policy: ServePolicy = Field(
        "greedy",
        description="Batching policy: fixed:N, fixed:N@MS, greedy[:CAP], or auto (search one first for "
        "--frequency and --slo-ms, as serve-tune does).",
    )
    host: Text = Field(
        "127.0.0.1", description="Address to listen on; 0.0.0.0 opens the server to the network."
    )
    port: Port = Field(8000, description="HTTP port.")
    max_queue: Count = Field(
        256, description="Requests admitted and not yet answered, at most; beyond, 503 at once."
    )

    @property
    def batch_policy(self) -> BatchPolicy | None:
        """The policy to serve with; None for auto (the search decides)."""
        return None if self.policy == AUTO else parse_policy(self.policy)
