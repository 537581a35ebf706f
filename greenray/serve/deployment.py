"""The Serve deployment that hosts one model on one device behind Serve's own batching queue, and
measures that device's energy where it runs: one window per batch (greenray's public
`measure_batches`, the same any deployment can use) and one per bench run."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from ray import serve

from greenray.config import EnergyConfig, ServingConfig
from greenray.energy import EnergyRequestError, Measurement
from greenray.errors import UsageError
from greenray.serve import zoo
from greenray.serve.measure import BatchEnergy, batch_ledger, energy_report, measure_batches, replica_meter

# Requests a replica takes in before the caller's router holds them back. Effectively no limit:
# the queue the study measured is the batch queue inside the replica, and a control call
# (end_run) must not wait behind a backlog at the router.
MAX_ONGOING_REQUESTS = 1 << 20
# Serve's access log writes a line per request; the driver would print them all.
SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}
# Serve's own switch (part of its throughput-optimised mode): requests, batches and control
# calls on one thread. With Serve's default second thread taking requests in, every op of
# the model's forward pass waits for the GIL (a 1-thread CPU forward ran 2-3x slower), and
# requests that arrive during a batch would be batched while it runs, not after.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
# A batch holds that thread, health checks included: a big model on a CPU may take a while.
HEALTH_CHECK_TIMEOUT_S = 600.0


@dataclass
class _Item:
    image: torch.Tensor
    request_id: int | None
    enqueued_s: float


@dataclass
class BatchRecord:
    """One batch as the replica saw it; times are Unix seconds on the replica's clock."""

    batch_id: int
    size: int
    started_s: float  # the batch left Serve's queue and reached the model
    ended_s: float  # answers computed (device synchronized)
    compute_s: float  # the batch's energy window: forward and argmax (and preprocessing, if in it)
    queue_wait_max_s: float  # started_s minus the oldest request's enqueued_s
    queue_wait_mean_s: float
    energy_j: float | None  # integrated from power samples: approximate for short batches
    uncertainty_j: float | None  # about-95% bound on the error of energy_j
    peak_power_w: float | None  # from the samples in the batch and at its edges
    power_field: str | None
    energy_source: str
    in_run: bool  # ended inside a run window: its requests count as served


@dataclass(frozen=True)
class RunEnd:
    """What a replica measured over one bench run."""

    energy: Measurement  # the run window: counter at its edges, idle included
    served: int  # requests in batches that ended inside the window
    batches: int


@dataclass
class _RunState:
    run_id: str
    batches: list[BatchRecord] = field(default_factory=list)
    # request_id -> (enqueued_s, batch_id), for requests the bench numbered
    requests: dict[int, tuple[float, int]] = field(default_factory=dict)
    open: bool = True


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
class ModelServer:
    """One model on one device. Call it with an image (uint8 CHW, or float CHW already
    normalised; torch tensor or numpy array) and it answers the class index; a request of the
    wrong shape or dtype gets an error answer alone. The bench drives the rest through the
    handle: set_policy, measure_idle, warmup, begin_run / end_run, take_records."""

    def __init__(self, model: str, serving: ServingConfig, energy: EnergyConfig) -> None:
        self.model_name, self.serving, self.energy = model, serving, energy
        self.setup_error: str | None = None
        self.notice: str | None = None
        try:
            self.meter = replica_meter(self, energy=energy.backend, interval_ms=energy.interval_ms)
        except EnergyRequestError as exc:
            self.setup_error = str(exc)
            self.meter = replica_meter(self, energy="none")
        # "auto" is resolved by the bench before it deploys: a replica is given cpu or cuda.
        self.device = torch.device("cuda" if serving.device == "cuda" else "cpu")
        self._run: _RunState | None = None
        try:
            zoo.check_precision(serving.precision, self.device.type)
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise UsageError("the replica was given no GPU it can use; use --device cpu")
            loaded = zoo.load_model(model, serving.weights, serving.image_size)
        except UsageError as exc:
            self.setup_error = str(exc)
            return
        self.spec = loaded.spec
        self.weights_source, self.notice = loaded.weights_source, loaded.notice
        self.model = loaded.model.to(self.device)
        shape = (1, 3, self.spec.image_size, self.spec.image_size)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        try:  # a model that cannot take this input size says so now, not on the first request
            self._forward(torch.zeros(shape, device=self.device))
        except RuntimeError as exc:
            self.setup_error = (
                f"{self.spec.name} does not accept {self.spec.image_size}px images "
                f"({str(exc).splitlines()[0][:120]}); change --image-size"
            )

    # ---- serving ---------------------------------------------------------------------

    async def __call__(self, image, request_id: int | None = None) -> int:
        # Only checks here: the handler runs on the loop the batches hold, so its work is
        # serial with the model's; preprocessing is done a batch at a time.
        return await self._infer(_Item(self._validate(image), request_id, time.time()))

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0, max_concurrent_batches=1)
    async def _infer(self, items: list[_Item]) -> list[int]:
        # Nothing in here suspends (the awaited method never awaits): the batch holds the
        # replica's event loop until its answers are known, so a control call (end_run)
        # always falls between two batches.
        started = time.time()
        batch = None if self.serving.preprocess_in_window else self._prepare(items)
        labels = await self._classify(items, batch)
        self._record(items, started, batch_ledger(self).last)
        return labels

    @measure_batches
    async def _classify(self, items: list[_Item], batch: torch.Tensor | None) -> list[int]:
        """The batch's energy window: preprocessing (when `batch` is None), forward, argmax."""
        return self._forward(self._prepare(items) if batch is None else batch).argmax(dim=1).tolist()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), zoo.autocast(self.serving.precision, self.device.type):
            return self.model(batch)

    def _validate(self, image) -> torch.Tensor:
        """The request's image as a CPU tensor, or a ValueError (the caller's answer) that says
        what was wrong; checked before batching so a bad request never reaches a batch."""
        size = self.spec.image_size
        if isinstance(image, np.ndarray):
            if image.dtype == object or not (image.dtype == np.uint8 or image.dtype.kind == "f"):
                raise ValueError(f"an image must be uint8 or float, not numpy {image.dtype}")
            # Ray hands arrays over read-only, straight from its object store: torch wants a copy
            image = torch.from_numpy(np.array(image) if not image.flags.writeable else image)
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"an image must be a torch tensor or numpy array, not {type(image).__name__}")
        if image.dtype != torch.uint8 and not image.is_floating_point():
            raise ValueError(f"an image must be uint8 or float, not {image.dtype}")
        if tuple(image.shape) != (3, size, size):
            raise ValueError(f"expected a 3x{size}x{size} image (CHW), got shape {tuple(image.shape)}")
        return image if image.dtype == torch.uint8 else image.to(torch.float32)

    def _prepare(self, items: list[_Item]) -> torch.Tensor:
        """One float batch on the device, in request order: uint8 images are copied over as
        they are (a quarter of the bytes) and normalised there; float ones are taken as given."""
        raw = [i for i, item in enumerate(items) if item.image.dtype == torch.uint8]
        if len(raw) == len(items):
            return self._normalise(torch.stack([item.image for item in items]))
        size = self.spec.image_size
        batch = torch.empty((len(items), 3, size, size), device=self.device)
        if raw:
            batch[raw] = self._normalise(torch.stack([items[i].image for i in raw]))
        ready = sorted(set(range(len(items))) - set(raw))
        batch[ready] = torch.stack([items[i].image for i in ready]).to(self.device)
        return batch

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).to(torch.float32)
        return images.div_(255.0).sub_(self._mean).div_(self._std)

    def _record(self, items: list[_Item], started: float, measured: BatchEnergy) -> None:
        run = self._run
        if run is None:
            return
        waits = [started - item.enqueued_s for item in items]
        run.batches.append(
            BatchRecord(
                batch_id=measured.batch_id,
                size=measured.size,
                started_s=started,
                ended_s=measured.ended_s,
                compute_s=measured.seconds,
                queue_wait_max_s=max(waits),
                queue_wait_mean_s=sum(waits) / len(waits),
                energy_j=measured.energy_j,
                uncertainty_j=measured.uncertainty_j,
                peak_power_w=measured.peak_power_w,
                power_field=measured.power_field,
                energy_source=measured.energy_source,
                in_run=run.open,
            )
        )
        for item in items:
            if item.request_id is not None:
                run.requests[item.request_id] = (item.enqueued_s, measured.batch_id)

    # ---- control, called by the bench through the handle -----------------------------

    async def info(self) -> dict:
        """What the bench must know, and say, about this replica."""
        spec = getattr(self, "spec", None)
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "setup_error": self.setup_error,
            "notice": self.notice,
            "model": spec.name if spec else self.model_name,
            "image_size": spec.image_size if spec else None,
            "weights_source": getattr(self, "weights_source", None),
            "model_device": str(self.device) + ("" if name == "cpu" else f" ({name})"),
            "node": socket.gethostname(),
            "node_id": _node_id(),
            "pid": os.getpid(),
            "energy_devices": [d.key for d in self.meter.devices],
            "energy_sources": sorted(self.meter.sources),
            "torch_threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "serving": self.serving.model_dump(mode="json"),
        }

    async def set_policy(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Serve's batch parameters, changed at run time: one deployment serves every policy.
        Serve reads them when a batch's first request arrives."""
        self._infer.set_max_batch_size(max_batch_size)
        self._infer.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def measure_idle(self, seconds: float) -> dict[str, float]:
        """The idle baseline (Watts per device UUID), before warm-up (a modelled device's is
        its model's, with nothing waited for)."""
        if self.meter.devices and seconds > 0:
            await asyncio.to_thread(self.meter.measure_idle, seconds)  # the loop stays free
        return self.meter.baseline()

    async def warmup(self, batches: int, batch_size: int) -> float:
        """`batches` forward passes of random images, outside any window; returns seconds."""
        started = time.perf_counter()
        size = self.spec.image_size
        images = torch.rand((batch_size, 3, size, size), device=self.device)
        for _ in range(batches):
            self._forward(images).argmax(dim=1).tolist()
            await asyncio.sleep(0)  # let health checks through between batches
        return time.perf_counter() - started

    async def begin_run(self, run_id: str) -> float:
        """Open the run's energy window (counter read, idle included: busy=False, only the
        batches inside it are work); returns its Unix start time."""
        if self._run is not None and self._run.open:
            raise RuntimeError(f"run {self._run.run_id} is still open")
        self._run = _RunState(run_id)
        self.meter.begin_window(f"run-{run_id}", counter=True, busy=False)
        return time.time()

    async def end_run(self, run_id: str) -> RunEnd:
        """Close the run's window; batches that end later (the drain) are kept but not counted."""
        window = self.meter.end_window(f"run-{run_id}")
        self._run.open = False
        counted = [b for b in self._run.batches if b.in_run]
        return RunEnd(window, served=sum(b.size for b in counted), batches=len(counted))

    async def take_records(self) -> dict:
        """The run's batches and numbered requests (drained ones included), then forgets them."""
        run, self._run = self._run, None
        if run is None:
            return {"batches": [], "requests": {}}
        return {"batches": [asdict(b) for b in run.batches], "requests": run.requests}

    async def energy_report(self, reset: bool = False):
        """Every measured batch's energy since the replica started (greenray.serve.EnergyReport)."""
        return energy_report(self, reset=reset)

    def __del__(self) -> None:
        self.meter.close()


def _node_id() -> str | None:
    """Ray's id of this replica's node (hostnames may repeat across nodes)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def server_app(
    model: str, serving: ServingConfig, energy: EnergyConfig, *, name: str, num_cpus: float, num_gpus: float
):
    """A Serve application of one replica of ModelServer, pinned to one device."""
    actor = {"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": REPLICA_ENV}}
    return ModelServer.options(
        name=name,
        num_replicas=1,
        ray_actor_options=actor,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
    ).bind(model, serving, energy)
