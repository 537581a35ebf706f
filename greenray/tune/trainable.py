"""One trial of the training study: build the net and the data, train E epochs with Adam, test
after each, report to Ray Tune. The study is one user of greenray's public Tune API: energy
comes from `with_energy` (every report carries the trial's Joules so far), and each epoch's
training is a window of its own on the trial's meter (the study's training energy)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable

import torch
import torch.nn.functional as F

from greenray.config import TrialConfig
from greenray.energy import EnergyMeter, Measurement, Tally, add_work
from greenray.tune.data import SyntheticSpec, TensorData, load_on, shuffled_batches
from greenray.tune.keys import TrialFailed, slot, trial_seed
from greenray.tune.measure import trial_meter
from greenray.tune.nets import build_net
from greenray.tune.sharing import gpu_sharing
from greenray.tune.space import adam_kwargs, trained_with

EVAL_BATCH = 4096
# The work the simulated power model counts (greenray.energy.add_work; with_energy's
# modelled_work): per sample, 6 FLOPs per parameter to train (forward and backward) and 2 to
# evaluate, run at a nominal simulated throughput. A model of the work, not the net's true
# FLOPs (a convolution reuses its weights at every position), and never a measurement: it makes
# a study's simulated Joules a function of its configuration and data, not of the machine's load.
TRAIN_FLOPS_PER_PARAM, EVAL_FLOPS_PER_PARAM = 6, 2
NOMINAL_FLOPS_PER_S = 1e9


def modelled_seconds(samples: int, params: int, flops_per_param: int) -> float:
    """Modelled busy seconds of `samples` through a net of `params` parameters."""
    return samples * params * flops_per_param / NOMINAL_FLOPS_PER_S


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_trial(config: dict, trial: TrialConfig, seed: int, counter: str | None = None) -> None:
    """Ray Tune's entry point, under with_energy (see greenray.tune.study.study_trainable);
    `counter` names the study's GPU-share counter when trials hold GPUs."""
    from ray import tune

    run_trial(config, trial, seed, tune.report, trial_meter(), counter)


class EpochTotals(Tally):
    """The epochs' training windows summed: the energy the study reports for training."""

    def columns(self) -> dict:
        return {
            "train_seconds": self.seconds,
            "train_energy_j": self.joules,
            "train_idle_free_energy_j": self.idle_free_joules,
        }


def run_trial(
    config: dict,
    trial: TrialConfig,
    seed: int,
    report: Callable[[dict], None],
    meter: EnergyMeter,
    counter: str | None = None,
) -> dict:
    """Train and test one configuration, calling `report` once per epoch with the epoch's own
    energy (`meter` windows); returns the last report. Raises TrialFailed on a NaN loss or
    CUDA out-of-memory. A searched `batch_size` or `epochs` in `config` replaces the trial's."""
    searched = trained_with(config)
    trial = trial.model_copy(update={k: searched[k] for k in ("batch_size", "epochs") if k in searched})
    round_, repetition = slot(config)
    seed_ = trial_seed(seed, round_, repetition)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    synthetic = SyntheticSpec(shape=trial.synthetic_shape, seed=seed)
    data = load_on(trial.dataset, str(device), trial.data_dir, trial.download, synthetic)
    torch.manual_seed(seed_)
    model = build_net(
        trial.net,
        data.input_shape,
        data.n_classes,
        n_conv=trial.n_conv,
        n_linear=trial.n_linear,
        relu=trial.uses_relu,
    ).to(device)
    # fused Adam: one kernel per step for all parameters on CUDA (torch's fast path there)
    optimizer = torch.optim.Adam(model.parameters(), **adam_kwargs(config), fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(seed_)
    # with_energy adds where the trial ran (node, node_id, device); the GPU ids are Ray's own.
    fixed = {"trial_seed": seed_, "train_device": str(device), "epochs": trial.epochs, "gpu_ids": _gpu_ids()}
    with gpu_sharing(counter, uuid.uuid4().hex) as sharers:
        fixed_now = lambda: fixed | {"gpu_sharers_max": sharers()}  # noqa: E731
        return _train(model, optimizer, data, generator, trial, meter, report, fixed_now)


def _gpu_ids() -> str | None:
    """The GPUs Ray gave this trial, as Ray numbers them on its node."""
    import ray

    gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    return ",".join(str(g) for g in gpus) if gpus else None


def _train(model, optimizer, data, generator, trial: TrialConfig, meter, report, fixed) -> dict:
    totals = EpochTotals()
    epoch = 0
    try:
        for epoch in range(1, trial.epochs + 1):
            with meter.window("epoch") as window:
                loss = train_epoch(model, optimizer, data, trial.batch_size, generator).item()
            if not math.isfinite(loss):
                raise TrialFailed(f"the training loss became {loss} in epoch {epoch}")
            with meter.window("test", counter=False):
                accuracy, test_loss = evaluate(model, data)
            totals.add(window.measurement)
            row = _epoch_row(epoch, loss, accuracy, test_loss, window.measurement)
            if epoch < trial.epochs:
                report(fixed() | row)
    except torch.cuda.OutOfMemoryError as exc:
        message = f"CUDA out of memory in epoch {epoch}: {str(exc).splitlines()[0]}"
        raise TrialFailed(message, fixed() | {"epochs_done": epoch - 1}) from None
    except TrialFailed as failure:
        failure.row = fixed() | {"epochs_done": epoch - 1}
        raise
    row = fixed() | row | totals.columns()
    row["images_per_s"] = data.train_x.shape[0] * trial.epochs / totals.seconds
    report(row)
    return row


def _epoch_row(epoch: int, loss: float, accuracy: float, test_loss: float, m: Measurement) -> dict:
    return {
        "epoch": epoch,
        "epochs_done": epoch,
        "accuracy": accuracy,
        "loss": loss,
        "test_loss": test_loss,
        "epoch_seconds": m.seconds,
        "epoch_energy_j": m.joules,
        "epoch_idle_free_energy_j": m.idle_free_joules,
    }


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TensorData,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One pass over the shuffled training split; the mean loss stays on the device (no
    per-batch sync), so the caller reads it once. Each step adds its modelled work."""
    model.train()
    total = torch.zeros((), device=data.device)
    params = n_params(model)
    for x, y in shuffled_batches(data.train_x, data.train_y, batch_size, generator):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * y.shape[0]
        add_work(modelled_seconds(y.shape[0], params, TRAIN_FLOPS_PER_PARAM))
    return total / data.train_y.shape[0]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: TensorData) -> tuple[float, float]:
    """(accuracy, mean loss) on the test split, in eval mode (BatchNorm's running statistics)."""
    model.eval()
    correct = torch.zeros((), device=data.device, dtype=torch.int64)
    total_loss = torch.zeros((), device=data.device)
    params = n_params(model)
    for start in range(0, data.test_y.shape[0], EVAL_BATCH):
        x, y = data.test_x[start : start + EVAL_BATCH], data.test_y[start : start + EVAL_BATCH]
        logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum()
        total_loss += F.cross_entropy(logits, y, reduction="sum")
        add_work(modelled_seconds(y.shape[0], params, EVAL_FLOPS_PER_PARAM))
    n = data.test_y.shape[0]
    return correct.item() / n, total_loss.item() / n
