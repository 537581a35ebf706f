"""The study's Adam search spaces: 3 hyperparameters (lr, beta1, beta2) or 5 (+ eps,
weight_decay), as Ray Tune domains, and how a configuration becomes Adam's arguments."""

from __future__ import annotations

from ray import tune
from ray.tune.search.sample import Domain

from greenray.config import ADAM_PARAMS

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


def adam_kwargs(config: dict) -> dict:
    """torch.optim.Adam's keyword arguments for a configuration. Unlike the study's code,
    beta2 is passed on (the study always trained with beta2 = 0.999)."""
    return {
        "lr": float(config["lr"]),
        "betas": (min(float(config["beta1"]), BETA_MAX), min(float(config["beta2"]), BETA_MAX)),
        "eps": float(config.get("eps", 1e-8)),
        "weight_decay": float(config.get("weight_decay", 0.0)),
    }
