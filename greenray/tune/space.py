"""The study's Adam search spaces: 3 hyperparameters (lr, beta1, beta2) or 5 (+ eps,
weight_decay), as Ray Tune domains, optionally with the batch size and the epoch count beside
them (`--params 3+batch+epochs`), and how a configuration becomes Adam's arguments and the
batch size and epochs a trial trains with."""

from __future__ import annotations

import math

from ray import tune
from ray.tune.search.sample import Domain

from greenray.config import ADAM_PARAMS, EXTRA_DIMS, adam_count

# The study's ranges (thesis code). beta1 and beta2 are open at 1: values from the top of
# the range are clipped to BETA_MAX when Adam is built (Adam needs beta < 1).
BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (1e-5, 1e-1),
    "beta1": (0.1, 1.0),
    "beta2": (0.8, 1.0),
    "eps": (1e-9, 1e-7),
    "weight_decay": (0.0, 0.1),
}
BETA_MAX = 0.999
# The searchable batch size: log-uniform, rounded to a power of two (16 ... 1024).
BATCH_BOUNDS = (16.0, 1024.0)


def adam_space(params: int = 3, *, uniform_lr: bool = False) -> dict[str, Domain]:
    """The search space; the learning rate is log-uniform unless `uniform_lr` (the study drew
    it uniformly, which `--uniform` reproduces)."""
    if params not in ADAM_PARAMS:
        raise ValueError(f"the Adam space has 3 or 5 hyperparameters, not {params}")
    space: dict[str, Domain] = {}
    for name in ADAM_PARAMS[params]:
        low, high = BOUNDS[name]
        log = name == "lr" and not uniform_lr
        space[name] = tune.loguniform(low, high) if log else tune.uniform(low, high)
    return space


def search_space(params: int | str = 3, *, uniform_lr: bool = False, max_epochs: int = 10) -> dict:
    """The space a --params value names: Adam's (adam_space), then `batch_size` (log-uniform
    over BATCH_BOUNDS) for +batch and `epochs` (uniform over 1 .. max_epochs) for +epochs.
    Searchers propose them as floats; `trained_with` rounds them."""
    space = adam_space(adam_count(params), uniform_lr=uniform_lr)
    extras = [EXTRA_DIMS[e] for e in str(params).split("+")[1:]]
    if "batch_size" in extras:
        space["batch_size"] = tune.loguniform(*BATCH_BOUNDS)
    if "epochs" in extras:
        if max_epochs < 2:
            raise ValueError("searching the epoch count needs max_epochs of at least 2")
        space["epochs"] = tune.uniform(1.0, float(max_epochs))
    return space


def trained_with(config: dict) -> dict:
    """A configuration as the trial trains it: a searched batch size (a searcher's float)
    rounded to the nearest power of two, a searched epoch count to the nearest whole number (at
    least 1); whole numbers (greenray mutate's) and the other values as they are."""
    values = dict(config)
    batch, epochs = values.get("batch_size"), values.get("epochs")
    if isinstance(batch, float):
        values["batch_size"] = int(2 ** round(math.log2(max(batch, 1.0))))
    if isinstance(epochs, float):
        values["epochs"] = max(1, int(round(epochs)))
    return values


def as_trained(config: dict) -> dict:
    """A configuration with the values its trial trained with: `trained_with`'s rounding, and
    Adam's betas capped at BETA_MAX (a searched beta1 of 1 trains as 0.999), for what a summary
    shows."""
    values = trained_with(config)
    for name in ("beta1", "beta2"):
        if isinstance(values.get(name), int | float):
            values[name] = min(float(values[name]), BETA_MAX)
    return values


def adam_kwargs(config: dict) -> dict:
    """torch.optim.Adam's keyword arguments for a configuration. Unlike the study's code,
    beta2 is passed on (the study always trained with beta2 = 0.999)."""
    return {
        "lr": float(config["lr"]),
        "betas": (min(float(config["beta1"]), BETA_MAX), min(float(config["beta2"]), BETA_MAX)),
        "eps": float(config.get("eps", 1e-8)),
        "weight_decay": float(config.get("weight_decay", 0.0)),
    }
