"""One trial of the training study: build the net and the data, train E epochs with Adam, test
after every epoch, and report accuracy and energy (a "trial" window around everything, an
"epoch" window around each epoch's training) to Ray Tune."""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from greenray.data import TensorData, load_on, shuffled_batches
from greenray.energy import EnergyMeter, Measurement
from greenray.nets import build_net
from greenray.tune.idle import worker_meter
from greenray.tune.settings import TrialSettings
from greenray.tune.sharing import gpu_sharing
from greenray.tune.space import adam_kwargs

# Keys Repeater and the study add to a configuration beside the hyperparameters.
REPETITION_KEY = "__trial_index__"
ROUND_KEY = "__round__"
EVAL_BATCH = 4096


class TrialFailed(RuntimeError):
    """A trial that cannot go on (NaN loss, out of GPU memory). `row` holds what it measured
    before failing (energy columns, epochs done), so the failure is recorded with its cost."""

    def __init__(self, message: str, row: dict | None = None) -> None:
        super().__init__(message)
        self.row = row or {}

    def __reduce__(self):  # Ray pickles the error to the driver; keep the row
        return (type(self), (str(self), self.row))


@dataclass(frozen=True)
class EpochResult:
    loss: float
    accuracy: float
    test_loss: float


def trial_seed(study_seed: int, round_: int, repetition: int) -> int:
    """A seed for torch from (study seed, round, repetition): the same trial trains the same."""
    return int(np.random.SeedSequence([study_seed, round_, repetition]).generate_state(1)[0])


def train_trial(config: dict, settings: TrialSettings) -> None:
    """Ray Tune's entry point (wrap with tune.with_parameters(train_trial, settings=...))."""
    from ray import tune

    run_trial(config, settings, tune.report)


def run_trial(config: dict, settings: TrialSettings, report: Callable[[dict], None]) -> dict:
    """Train and test one configuration, calling `report` once per epoch; returns the last
    report. Raises TrialFailed on a NaN loss or CUDA out-of-memory."""
    round_, repetition = int(config.get(ROUND_KEY, 0)), int(config.get(REPETITION_KEY, 0))
    seed = trial_seed(settings.seed, round_, repetition)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_on(settings.dataset, str(device), settings.data_dir, settings.download, settings.synthetic)
    torch.manual_seed(seed)
    model = build_net(
        settings.net,
        data.input_shape,
        data.n_classes,
        n_conv=settings.n_conv,
        n_linear=settings.n_linear,
        relu=settings.relu,
    ).to(device)
    # fused Adam: one kernel per step for all parameters on CUDA (torch's fast path there)
    optimizer = torch.optim.Adam(model.parameters(), **adam_kwargs(config), fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(seed)
    fixed = {"trial_seed": seed, "train_device": str(device), "epochs": settings.epochs} | _placement()
    counter = settings.share_counter if fixed["node_id"] is not None else None
    with (
        worker_meter(settings.energy, settings.interval_ms) as meter,
        gpu_sharing(counter, uuid.uuid4().hex) as sharers,
    ):
        meter.use_baseline(settings.baseline.get(socket.gethostname(), {}))
        return _train(model, optimizer, data, generator, settings, meter, report, fixed, sharers)


def _placement() -> dict:
    """Where Ray put this trial: its node (Ray's id: hostnames may repeat) and GPU ids."""
    import ray

    if not ray.is_initialized():
        return {"node_id": None, "gpu_ids": None}
    gpus = ray.get_gpu_ids()
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in gpus) if gpus else None,
    }


def _train(model, optimizer, data, generator, settings, meter, report, fixed, sharers) -> dict:
    # The trial window holds no work of its own (busy=False): its work is in the epoch and test
    # windows, and the waits for Tune between reports are idle (the simulated backend draws
    # idle W then, as a GPU would).
    meter.begin_window("trial", busy=False)
    train = {"seconds": 0.0, "energy_j": 0.0, "idle_free_energy_j": 0.0}
    epoch = 0
    try:
        for epoch in range(1, settings.epochs + 1):
            with meter.window("epoch") as window:
                loss = train_epoch(model, optimizer, data, settings.batch_size, generator).item()
            if not math.isfinite(loss):
                raise TrialFailed(f"the training loss became {loss} in epoch {epoch}")
            with meter.window("test", counter=False):
                accuracy, test_loss = evaluate(model, data)
            row = fixed | _epoch_row(epoch, loss, accuracy, test_loss, window.measurement, train)
            if epoch < settings.epochs:
                report(row)
    except torch.cuda.OutOfMemoryError as exc:
        failure = TrialFailed(f"CUDA out of memory in epoch {epoch}: {str(exc).splitlines()[0]}")
        raise _closed(failure, meter, fixed | {"gpu_sharers_max": sharers()}, epoch) from None
    except TrialFailed as failure:
        raise _closed(failure, meter, fixed | {"gpu_sharers_max": sharers()}, epoch) from None
    trial = meter.end_window("trial")
    row |= trial.to_row() | {f"train_{k}": v for k, v in train.items()}
    row["gpu_sharers_max"] = sharers()
    row["images_per_s"] = data.train_x.shape[0] * settings.epochs / train["seconds"]
    report(row)
    return row


def _closed(failure: TrialFailed, meter: EnergyMeter, fixed: dict, epoch: int) -> TrialFailed:
    """Close the trial window and put what it measured on the failure."""
    failure.row = fixed | meter.end_window("trial").to_row() | {"epochs_done": max(epoch - 1, 0)}
    return failure


def _epoch_row(epoch, loss, accuracy, test_loss, m: Measurement, train: dict) -> dict:
    """One epoch's report; `train` accumulates the training-only totals (the study's energy)."""
    train["seconds"] += m.seconds
    for key, value in (("energy_j", m.joules), ("idle_free_energy_j", m.idle_free_joules)):
        train[key] = None if value is None or train[key] is None else train[key] + value
    return {
        "epoch": epoch,
        "epochs_done": epoch,
        "accuracy": accuracy,
        "loss": loss,
        "test_loss": test_loss,
        "epoch_seconds": m.seconds,
        "epoch_energy_j": m.joules,
        "epoch_idle_free_energy_j": m.idle_free_joules,
        "energy_source": m.energy_source,
        "device": m.to_row()["device"],
    }


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TensorData,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One pass over the shuffled training split; the mean loss stays on the device (no
    per-batch sync), so the caller reads it once."""
    model.train()
    total = torch.zeros((), device=data.device)
    for x, y in shuffled_batches(data.train_x, data.train_y, batch_size, generator):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * y.shape[0]
    return total / data.train_y.shape[0]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: TensorData) -> tuple[float, float]:
    """(accuracy, mean loss) on the test split, in eval mode (BatchNorm's running statistics)."""
    model.eval()
    correct = torch.zeros((), device=data.device, dtype=torch.int64)
    total_loss = torch.zeros((), device=data.device)
    for start in range(0, data.test_y.shape[0], EVAL_BATCH):
        x, y = data.test_x[start : start + EVAL_BATCH], data.test_y[start : start + EVAL_BATCH]
        logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum()
        total_loss += F.cross_entropy(logits, y, reduction="sum")
    n = data.test_y.shape[0]
    return correct.item() / n, total_loss.item() / n
