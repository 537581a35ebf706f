"""The batching replica: one model on one device behind Serve's own batching queue, measuring
that device's energy where it runs (greenray's public `measure_batches`, one window per batch,
the same any deployment can use). ModelReplica (deployed as ModelServer) does the forward pass
and holds the batching policy; every other job it serves through its handle is a part of its
own, each reading the replica's one batch ledger (greenray.serve.ledger.BatchLedger):

- groups of images from ingress replicas: `GroupInbox` (greenray.serve.groups);
- a bench run's bookkeeping (`begin_run` / `end_run` / `take_records`): `RunRecorder` and a live
  server's journal (`begin_serving` / `take_journal`): `Journal` (greenray.serve.records);
- /metrics (`stats`): the ledger's totals and the devices' `RunningTally` (greenray.energy),
  shaped by greenray.serve.metrics."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import numpy as np
import torch
from ray import serve

from greenray.config import BatchPolicy, EnergyConfig, ServingConfig
from greenray.energy import EnergyRequestError, RunningTally
from greenray.errors import UsageError
from greenray.serve import metrics, zoo
from greenray.serve.groups import GroupInbox, Item
from greenray.serve.measure import batch_ledger, energy_report, measure_batches, replica_meter
from greenray.serve.options import (
    GRACEFUL_SHUTDOWN_S,
    HEALTH_CHECK_TIMEOUT_S,
    MAX_ONGOING_REQUESTS,
    REPLICA_ENV,
    SERVE_LOGGING,
)
from greenray.serve.records import Answer, BatchDetail, Journal, RunEnd, RunRecorder

# Serve takes a batch method's parameters when the class is defined, before any deployment has a
# policy: the decorator gets this one, and each replica sets its deployment's own in __init__
# (set_policy changes it between runs; Serve reads it when a batch's first request arrives).
FIRST_POLICY = BatchPolicy("greedy", 1)


class ModelReplica:
    """One model on one device. `infer` takes an image (uint8 CHW, or float CHW already
    normalised; torch tensor or numpy array) and answers the class index; a request of the
    wrong shape or dtype gets an error answer alone. The driver (greenray.serve.driver) does the
    rest through the handle: info, set_policy, measure_idle, warmup, the run and journal calls.
    Deployed as ModelServer (handles only), or as greenray.serve.model_ingress.ModelIngress (its
    own HTTP ingress too); it has no __call__, which an HTTP ingress keeps for Serve's ASGI app."""

    def __init__(
        self,
        model: str,
        serving: ServingConfig,
        energy: EnergyConfig,
        index: int = 0,
        policy: BatchPolicy = FIRST_POLICY,
    ) -> None:
        self.model_name, self.serving, self.energy, self.index = model, serving, energy, index
        self.setup_error: str | None = None
        self.notice: str | None = None
        try:
            self.meter = replica_meter(
                self, energy=energy.backend, interval_ms=energy.interval_ms, require=energy.require
            )
        except EnergyRequestError as exc:  # greenray.energy's one sentence: the driver says it
            self.setup_error = str(exc)
            self.meter = replica_meter(self, energy="none")
        self.ledger = batch_ledger(self)
        self.runs = RunRecorder(self.meter, self.ledger)
        self.journal = Journal(self.ledger)
        self.tally = RunningTally(self.meter)
        self.inbox: GroupInbox | None = None  # once the model's input size is known
        self._use(policy)
        # "auto" is resolved by the driver before it deploys: a replica is given cpu or cuda.
        self.device = torch.device("cuda" if serving.device == "cuda" else "cpu")
        self.setup_error = self._load(model, serving) or self.setup_error

    def _load(self, model: str, serving: ServingConfig) -> str | None:
        """Load the model onto the device; returns what went wrong, in one sentence."""
        try:
            zoo.check_precision(serving.precision, self.device.type)
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise UsageError("the replica was given no GPU it can use; use --device cpu")
            loaded = zoo.load_model(model, serving.weights, serving.image_size)
        except UsageError as exc:
            return str(exc)
        self.spec = loaded.spec
        self.weights_source, self.notice = loaded.weights_source, loaded.notice
        self.model = loaded.model.to(self.device)
        self.inbox = GroupInbox(self._infer, self.spec.image_size, lambda: self.policy.max_batch_size)
        shape = (1, 3, self.spec.image_size, self.spec.image_size)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        try:  # a model that cannot take this input size says so now, not on the first request
            self._forward(torch.zeros(shape, device=self.device))
        except RuntimeError as exc:
            return (
                f"{self.spec.name} does not accept {self.spec.image_size}px images "
                f"({str(exc).splitlines()[0][:120]}); change --image-size"
            )
        return None

    # ---- serving ---------------------------------------------------------------------

    async def infer(self, image, request_id: int | None = None) -> int:
        # Only checks here: the handler runs on the loop the batches hold, so its work is
        # serial with the model's; preprocessing is done a batch at a time.
        answer = await self._infer(Item(self._validate(image), request_id, time.time()))
        return answer.label

    @serve.batch(
        max_batch_size=FIRST_POLICY.max_batch_size,
        batch_wait_timeout_s=FIRST_POLICY.batch_wait_timeout_s,
        max_concurrent_batches=1,
    )
    async def _infer(self, items: list[Item]) -> list[Answer]:
        # A ModelServer's batch never suspends (its `_compute` never awaits): it holds the
        # replica's event loop until its answers are known, so a control call (end_run) always
        # falls between two batches. A ModelIngress computes on a thread while its loop answers
        # HTTP; a run that ends during a batch counts that batch as drained.
        started = time.time()
        if self.inbox is not None:
            self.inbox.batch_started(items)
        # The batch's own CPU (the computing thread's): preparing the tensor, forward, argmax. What
        # the replica spends outside it is the request path's (RunEnd.cpu_s - batch_cpu_s).
        batch, cpu_s = (None, 0.0)
        if not self.serving.preprocess_in_window:
            batch, cpu_s = await self._compute(self._prepare, items)
        labels, classify_cpu_s = await self._classify(items, batch)
        measured = self.ledger.describe_last(_detail(items, started, cpu_s + classify_cpu_s))
        share = measured.energy_j / measured.size if measured.energy_j is not None else None
        return [
            Answer(
                label,
                measured.batch_id,
                measured.size,
                started - item.enqueued_s,
                measured.seconds,
                share,
                measured.energy_source,
            )
            for label, item in zip(labels, items, strict=True)
        ]

    @measure_batches
    async def _classify(self, items: list[Item], batch: torch.Tensor | None) -> tuple[list[int], float]:
        """The batch's energy window: preprocessing (when `batch` is None), forward, argmax;
        the labels and the CPU seconds they took."""
        return await self._compute(self._labels_for, items, batch)

    def _labels_for(self, items: list[Item], batch: torch.Tensor | None) -> list[int]:
        return self._forward(self._prepare(items) if batch is None else batch).argmax(dim=1).tolist()

    async def _compute(self, work, *args) -> tuple:
        """A batch's work and its CPU seconds, run here on the replica's loop, holding it
        (ModelIngress runs it on a thread of its own)."""
        return timed(work, *args)

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

    def _prepare(self, items: list[Item]) -> torch.Tensor:
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

    # ---- control, called by the driver through the handle ------------------------------

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
            "replica": self.index,
            "labels": self._labels(),
        }

    def _labels(self) -> list[str] | None:
        """Class names, where the weights are torchvision's (random weights have no meaning)."""
        source = getattr(self, "weights_source", None) or ""
        return zoo.categories(self.spec.name) if source.startswith("torchvision:") else None

    async def set_policy(self, policy: BatchPolicy) -> None:
        """Serve's batch parameters, changed at run time: one deployment serves every policy.
        Serve reads them when a batch's first request arrives."""
        self._use(policy)

    def _use(self, policy: BatchPolicy) -> None:
        self._infer.set_max_batch_size(policy.max_batch_size)
        self._infer.set_batch_wait_timeout_s(policy.batch_wait_timeout_s)
        self.policy = policy

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

    async def cpu_s(self) -> float:
        """The replica process's CPU seconds so far, every thread (a benchmark's idle baseline)."""
        return time.process_time()

    async def energy_report(self, reset: bool = False):
        """Every measured batch's energy since the replica started (greenray.serve.EnergyReport)."""
        return energy_report(self, reset=reset)

    # ---- each other job, a part of its own -----------------------------------------------

    async def submit(self, feeder: str, images: np.ndarray, tickets: list[int], request_ids: list) -> list:
        """A group of images from an ingress replica (GroupInbox.submit)."""
        return await self.inbox.submit(feeder, images, tickets, request_ids)

    async def collect(self, feeder: str) -> list:
        """The answers finished for an ingress replica (GroupInbox.collect)."""
        return await self.inbox.collect(feeder)

    async def begin_run(self, run_id: str) -> float:
        """Open a bench run's energy window; returns its Unix start time (RunRecorder.begin)."""
        return self.runs.begin(run_id)

    async def end_run(self, run_id: str) -> RunEnd:
        """Close the run's window; batches that end later (the drain) are kept, not counted."""
        return self.runs.end(run_id)

    async def take_records(self) -> dict:
        """The run's batches and numbered requests, drained ones included (RunRecorder.take)."""
        return self.runs.take()

    async def begin_serving(self) -> None:
        """Keep every batch from now on for the driver (`take_journal`)."""
        self.journal.begin()

    async def take_journal(self) -> dict:
        """The batches since the last take (Journal.take); the device tally's windows roll over
        here too, so that none stays open long when nothing scrapes /metrics."""
        taken = self.journal.take()
        if self.tally.due():
            await asyncio.to_thread(self.tally.tick)  # counter reads off the loop
        return taken

    async def stats(self) -> dict:
        """What /metrics shows of this replica (greenray.serve.metrics.replica_stats)."""
        devices = await asyncio.to_thread(self.tally.totals)  # counter reads off the loop
        return metrics.replica_stats(self.index, self.model_name, self.ledger.totals, self.policy, devices)

    def __del__(self) -> None:
        self.meter.close()


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
class ModelServer(ModelReplica):
    """A model replica reached through handles: calling it is `infer`."""

    async def __call__(self, image, request_id: int | None = None) -> int:
        return await self.infer(image, request_id)


def timed(work, *args) -> tuple:
    """`work(*args)` and the CPU seconds the calling thread spent on it."""
    cpu0 = time.thread_time()
    return work(*args), time.thread_time() - cpu0


def _detail(items: list[Item], started: float, cpu_s: float) -> BatchDetail:
    waits = [started - item.enqueued_s for item in items]
    return BatchDetail(
        started_s=started,
        queue_wait_max_s=max(waits),
        queue_wait_mean_s=sum(waits) / len(waits),
        cpu_s=cpu_s,
        requests=tuple((item.request_id, item.enqueued_s) for item in items if item.request_id is not None),
    )


def _node_id() -> str | None:
    """Ray's id of this replica's node (hostnames may repeat across nodes)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def server_app(
    model: str,
    serving: ServingConfig,
    energy: EnergyConfig,
    *,
    name: str,
    num_cpus: float,
    num_gpus: float,
    index: int = 0,
    policy: BatchPolicy | None = None,
):
    """A Serve application (or a part of one) of one replica of ModelServer, pinned to one
    device, batching under `policy` (None: FIRST_POLICY) until set_policy changes it."""
    return ModelServer.options(
        name=name,
        num_replicas=1,
        ray_actor_options=actor_options(num_cpus, num_gpus),
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
    ).bind(model, serving, energy, index, policy or FIRST_POLICY)


def actor_options(num_cpus: float, num_gpus: float) -> dict:
    """Ray's options for a model replica's actor: its CPUs, its device, one thread for everything."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": REPLICA_ENV}}
