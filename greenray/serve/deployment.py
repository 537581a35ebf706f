"""The Serve deployment that hosts one model on one device behind Serve's own batching queue, and
measures that device's energy where it runs: one window per batch (greenray's public
`measure_batches`, the same any deployment can use) and one per bench run.

Requests come one image a call (the study's path: a handle call per request), or in groups from
ingress replicas (`submit` / `collect`, greenray.serve.ingress), which take Serve's per-call
cost off this replica's one thread; either way every image joins Serve's batch queue on its
own, so a policy counts images and times waits as it always did."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from ray import serve

from greenray.config import EnergyConfig, ServingConfig
from greenray.energy import EnergyRequestError, Measurement, combined_source
from greenray.errors import UsageError
from greenray.serve import zoo
from greenray.serve.loadgen import error_line
from greenray.serve.measure import BatchEnergy, batch_ledger, energy_report, measure_batches, replica_meter
from greenray.serve.options import (
    GRACEFUL_SHUTDOWN_S,
    HEALTH_CHECK_TIMEOUT_S,
    MAX_ONGOING_REQUESTS,
    REPLICA_ENV,
    SERVE_LOGGING,
)

# How long `submit` waits for the batch its images may start before it answers "send more": a
# batch starts a few loop turns after its images are queued; longer than this, the queue is
# waiting for more images (a fixed:N batch not yet full, or its max wait).
SETTLE_S = 0.002
# An ingress's `collect` returns empty after this long without an answer (and asks again).
COLLECT_POLL_S = 10.0
# Device energy for /metrics is summed over back-to-back windows of about this length, so no
# window stays open for a server's lifetime (the meter keeps samples for open windows).
TALLY_S = 5.0
JOURNAL_KEEP = 100_000  # batch records a serving replica holds for the driver to take
# Batch-size buckets of the /metrics histogram (upper bounds, images).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class _Item:
    image: torch.Tensor
    request_id: int | None
    enqueued_s: float
    grouped: bool = False  # came in a group from an ingress replica (counted in _queued)


class Answer(NamedTuple):
    """One image's answer with its batch's numbers: what the request waited for and cost."""

    label: int
    batch_id: int
    batch_size: int
    queue_s: float  # batch start minus the image's arrival at this replica
    compute_s: float  # the batch's energy window (forward and argmax)
    energy_j: float | None  # the batch's Joules over its size: this image's share
    energy_source: str


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
    idle_free_energy_j: float | None  # less the idle baseline (None without one)
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
    cpu_s: float = 0.0  # the replica process's CPU seconds over the window, every thread
    batch_cpu_s: float = 0.0  # of which its loop thread spent on batches (tensor, forward, argmax)


@dataclass
class _RunState:
    run_id: str
    batches: list[BatchRecord] = field(default_factory=list)
    # request_id -> (enqueued_s, batch_id), for requests the bench numbered
    requests: dict[int, tuple[float, int]] = field(default_factory=dict)
    open: bool = True
    cpu0: float = field(default_factory=time.process_time)
    batch_cpu_s: float = 0.0


class _Outbox:
    """Answers finished for one ingress replica, until its next submit or collect takes them."""

    def __init__(self) -> None:
        self.ready: list[tuple[int, Answer | None, str | None]] = []  # (ticket, answer, error)
        self.event = asyncio.Event()

    def put(self, ticket: int, answer: Answer | None, error: str | None) -> None:
        self.ready.append((ticket, answer, error))
        self.event.set()

    def take(self) -> list[tuple[int, Answer | None, str | None]]:
        ready, self.ready = self.ready, []
        self.event.clear()
        return ready


class _Tally:
    """Device energy since the replica started, per device: the sum of back-to-back meter
    windows, each closed after about TALLY_S (a window left open for days would keep every
    power sample), plus what the open one holds so far; a closed window's mean power is the
    device's recent power. Counter reads may take milliseconds on NVML: call it off the loop."""

    def __init__(self, meter) -> None:
        self.meter = meter
        self.closed: dict[str, float | None] = {d.key: 0.0 for d in meter.devices}
        self.power_w: dict[str, float | None] = {}
        self._index = 0
        self._opened = time.monotonic()
        meter.begin_window(self._name(), counter=True, busy=False)

    def _name(self) -> str:
        return f"tally-{id(self)}-{self._index}"

    def due(self) -> bool:
        return time.monotonic() - self._opened >= TALLY_S

    def tick(self) -> None:
        """Close the open window into the totals once it is TALLY_S old, and open the next."""
        if not self.due():
            return
        measured = self.meter.end_window(self._name())
        self._index += 1
        self._opened = time.monotonic()
        self.meter.begin_window(self._name(), counter=True, busy=False)
        for reading in measured.devices:
            self.closed[reading.device.key] = _add(self.closed.get(reading.device.key, 0.0), reading.joules)
            self.power_w[reading.device.key] = reading.avg_power_w

    def devices(self) -> list[dict]:
        """Per device: Joules so far, recent Watts, and where they come from."""
        self.tick()
        now = self.meter.read_window(self._name())
        return [
            {
                "device": reading.device.key,
                "energy_j": _add(self.closed.get(reading.device.key, 0.0), reading.joules),
                # the open window's mean until one has closed
                "power_w": self.power_w.get(reading.device.key, reading.avg_power_w),
                "energy_source": reading.source,
            }
            for reading in now.devices
        ]


def _add(total: float | None, part: float | None) -> float | None:
    return None if total is None or part is None else total + part


@dataclass
class _Totals:
    """What a replica has served since it started, for /metrics."""

    batches: int = 0
    images: int = 0
    compute_s: float = 0.0
    batch_energy_j: float | None = 0.0
    batch_sources: set[str] = field(default_factory=set)
    size_counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))

    def add(self, size: int, compute_s: float, energy_j: float | None, source: str) -> None:
        self.batches += 1
        self.images += size
        self.compute_s += compute_s
        self.batch_energy_j = _add(self.batch_energy_j, energy_j)
        self.batch_sources.add(source)
        self.size_counts[bisect.bisect_left(BATCH_BUCKETS, size)] += 1


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config=SERVE_LOGGING)
class ModelServer:
    """One model on one device. Call it with an image (uint8 CHW, or float CHW already
    normalised; torch tensor or numpy array) and it answers the class index; a request of the
    wrong shape or dtype gets an error answer alone. The bench drives the rest through the
    handle: set_policy, measure_idle, warmup, begin_run / end_run, take_records."""

    def __init__(self, model: str, serving: ServingConfig, energy: EnergyConfig, index: int = 0) -> None:
        self.model_name, self.serving, self.energy, self.index = model, serving, energy, index
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
        self._journal: deque[BatchRecord] | None = None  # batches for a server's driver to take
        self._journal_dropped = 0
        self._outboxes: dict[str, _Outbox] = {}
        self._tasks: set[asyncio.Task] = set()
        self._next_batch: asyncio.Future | None = None  # resolved when the next batch starts
        self._queued = 0  # grouped images in Serve's batch queue, not yet in a batch
        self._policy = (1, 0.0)  # max_batch_size, batch_wait_timeout_s
        self._totals = _Totals()
        self._tally = _Tally(self.meter)
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
        answer = await self._infer(_Item(self._validate(image), request_id, time.time()))
        return answer.label

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0, max_concurrent_batches=1)
    async def _infer(self, items: list[_Item]) -> list[Answer]:
        # Nothing in here suspends (the awaited method never awaits): the batch holds the
        # replica's event loop until its answers are known, so a control call (end_run)
        # always falls between two batches.
        started = time.time()
        if self._next_batch is not None and not self._next_batch.done():
            self._next_batch.set_result(None)  # the submits waiting on it answer after this batch
        self._queued -= sum(item.grouped for item in items)
        # The batch's own CPU (its loop thread's): preparing the tensor, forward, argmax. What the
        # replica spends outside it is the request path's (RunEnd.cpu_s - batch_cpu_s).
        cpu0 = time.thread_time()
        batch = None if self.serving.preprocess_in_window else self._prepare(items)
        labels = await self._classify(items, batch)
        cpu_s = time.thread_time() - cpu0
        measured = batch_ledger(self).last
        self._record(items, started, measured, cpu_s)
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

    # ---- groups from ingress replicas ------------------------------------------------

    async def submit(self, feeder: str, images: np.ndarray, tickets: list[int], request_ids: list) -> list:
        """Take a group of checked uint8 images (N x 3 x S x S) from an ingress replica (`feeder`
        names it); each image joins Serve's batch queue on its own. Answers once a batch has
        taken them (a batch holds this thread, so the answer leaves when it ends, and the
        ingress's next group holds what arrived meanwhile: greedy still takes what queued
        while the model was busy) or, after SETTLE_S, when the queue waits for more images.
        While more than a batch's worth of grouped images is queued here it waits for more
        batches first (the next group would only queue behind them: fewer, bigger groups, and
        the backlog stays in the ingress, whose queue is bounded). It carries the answers ready
        for this feeder; the rest come through `collect`."""
        size = self.spec.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(
                f"a group must be N x 3 x {size} x {size} uint8, got {images.dtype} {images.shape}"
            )
        # Ray hands arrays over read-only, from its object store: one copy for the whole group
        group = torch.from_numpy(images if images.flags.writeable else np.array(images))
        outbox = self._outbox(feeder)
        started = self._batch_started()
        now = time.time()
        for i, ticket in enumerate(tickets):
            item = _Item(group[i], request_ids[i], now, grouped=True)
            task = asyncio.ensure_future(self._answer(outbox, ticket, item))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
        self._queued += len(tickets)
        await asyncio.wait([started], timeout=SETTLE_S)
        while self._queued > self._policy[0]:
            await self._batch_started()
        await asyncio.sleep(0)  # a batch that just ended hands its answers over first
        return outbox.take()

    async def collect(self, feeder: str) -> list:
        """The answers finished for `feeder`, once there is one (empty after COLLECT_POLL_S)."""
        outbox = self._outbox(feeder)
        if not outbox.ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.event.wait(), COLLECT_POLL_S)
        return outbox.take()

    async def _answer(self, outbox: _Outbox, ticket: int, item: _Item) -> None:
        try:
            answer = await self._infer(item)
        except Exception as exc:  # the image's own error answer; the others go on
            outbox.put(ticket, None, error_line(exc))
        else:
            outbox.put(ticket, answer, None)

    def _outbox(self, feeder: str) -> _Outbox:
        outbox = self._outboxes.get(feeder)
        if outbox is None:
            outbox = self._outboxes[feeder] = _Outbox()
        return outbox

    def _batch_started(self) -> asyncio.Future:
        if self._next_batch is None or self._next_batch.done():
            self._next_batch = asyncio.get_running_loop().create_future()
        return self._next_batch

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

    def _record(self, items: list[_Item], started: float, measured: BatchEnergy, cpu_s: float) -> None:
        self._totals.add(measured.size, measured.seconds, measured.energy_j, measured.energy_source)
        run, journal = self._run, self._journal
        if run is None and journal is None:
            return
        waits = [started - item.enqueued_s for item in items]
        record = BatchRecord(
            batch_id=measured.batch_id,
            size=measured.size,
            started_s=started,
            ended_s=measured.ended_s,
            compute_s=measured.seconds,
            queue_wait_max_s=max(waits),
            queue_wait_mean_s=sum(waits) / len(waits),
            energy_j=measured.energy_j,
            idle_free_energy_j=measured.idle_free_energy_j,
            uncertainty_j=measured.uncertainty_j,
            peak_power_w=measured.peak_power_w,
            power_field=measured.power_field,
            energy_source=measured.energy_source,
            in_run=run.open if run is not None else True,
        )
        if journal is not None:
            if len(journal) == journal.maxlen:
                self._journal_dropped += 1
            journal.append(record)
        if run is None:
            return
        run.batches.append(record)
        if run.open:
            run.batch_cpu_s += cpu_s
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
            "replica": self.index,
            "labels": self._labels(),
        }

    def _labels(self) -> list[str] | None:
        """Class names, where the weights are torchvision's (random weights have no meaning)."""
        source = getattr(self, "weights_source", None) or ""
        return zoo.categories(self.spec.name) if source.startswith("torchvision:") else None

    async def set_policy(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Serve's batch parameters, changed at run time: one deployment serves every policy.
        Serve reads them when a batch's first request arrives."""
        self._infer.set_max_batch_size(max_batch_size)
        self._infer.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._policy = (max_batch_size, batch_wait_timeout_s)

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
        run = self._run
        run.open = False
        counted = [b for b in run.batches if b.in_run]
        return RunEnd(
            window,
            served=sum(b.size for b in counted),
            batches=len(counted),
            cpu_s=time.process_time() - run.cpu0,
            batch_cpu_s=run.batch_cpu_s,
        )

    async def take_records(self) -> dict:
        """The run's batches and numbered requests (drained ones included), then forgets them."""
        run, self._run = self._run, None
        if run is None:
            return {"batches": [], "requests": {}}
        return {"batches": [asdict(b) for b in run.batches], "requests": run.requests}

    async def cpu_s(self) -> float:
        """The replica process's CPU seconds so far, every thread (a benchmark's idle baseline)."""
        return time.process_time()

    async def energy_report(self, reset: bool = False):
        """Every measured batch's energy since the replica started (greenray.serve.EnergyReport)."""
        return energy_report(self, reset=reset)

    # ---- a server's record and its /metrics -------------------------------------------

    async def begin_serving(self) -> None:
        """Keep every batch from now on for the driver (`take_journal`)."""
        self._journal = deque(maxlen=JOURNAL_KEEP)

    async def take_journal(self) -> dict:
        """The batches since the last take (at most JOURNAL_KEEP; `dropped` counts the older
        ones a late take lost), then forgets them."""
        journal, dropped = self._journal, self._journal_dropped
        self._journal_dropped = 0
        if journal is None:
            return {"batches": [], "dropped": 0}
        records = [asdict(b) for b in journal]
        journal.clear()
        if self._tally.due():
            await asyncio.to_thread(self._tally.tick)  # counter reads off the loop
        return {"batches": records, "dropped": dropped}

    async def stats(self) -> dict:
        """What /metrics shows of this replica: batches, images, batch sizes, and each device's
        energy since the replica started (idle included) and its recent power."""
        totals = self._totals
        return {
            "replica": str(self.index),
            "model": self.model_name,
            "node": socket.gethostname(),
            "batches": totals.batches,
            "images": totals.images,
            "compute_s": totals.compute_s,
            "batch_energy_j": totals.batch_energy_j,
            "batch_energy_source": combined_source(totals.batch_sources) if totals.batches else "none",
            "batch_buckets": list(BATCH_BUCKETS),
            "batch_size_counts": list(totals.size_counts),
            "max_batch_size": self._policy[0],
            "batch_wait_timeout_s": self._policy[1],
            "devices": await asyncio.to_thread(self._tally.devices),  # counter reads off the loop
        }

    def __del__(self) -> None:
        self.meter.close()


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
):
    """A Serve application (or a part of one) of one replica of ModelServer, pinned to one device."""
    actor = {"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": REPLICA_ENV}}
    return ModelServer.options(
        name=name,
        num_replicas=1,
        ray_actor_options=actor,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
    ).bind(model, serving, energy, index)
