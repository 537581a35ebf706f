"""A Ray Tune user's own trainable, measured by greenray: an MLP on synthetic data, written in
plain PyTorch (nothing of greenray inside it), wrapped with `greenray.tune.with_energy`, and
searched by Optuna's multi-objective sampler over accuracy and the Joules each trial spent.

    pip install -e ".[examples]"                                  # Optuna, for this example only
    python examples/tune_with_energy.py --energy simulated        # a CPU: model numbers, labelled so
    python examples/tune_with_energy.py                           # NVML on a GPU machine, else RAPL

It ends with the trials on the accuracy / energy front.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import ray
import torch
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from greenray.tune import with_energy

FEATURES, CLASSES = 32, 8


def make_data(n: int = 3000, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Clusters around one random centre per class: learnable, and the same in every trial."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, FEATURES, generator=generator)
    labels = torch.randint(CLASSES, (n,), generator=generator)
    points = centres[labels] + 1.2 * torch.randn(n, FEATURES, generator=generator)
    split = int(0.8 * n)
    return TensorDataset(points[:split], labels[:split]), TensorDataset(points[split:], labels[split:])


def train(config: dict) -> None:
    """An ordinary Tune trainable: train, test, report after every epoch."""
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_set, test_set = make_data()
    width = config["width"]
    model = nn.Sequential(
        nn.Linear(FEATURES, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, CLASSES)
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loader = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True)
    for epoch in range(config["epochs"]):
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            x, y = test_set.tensors
            accuracy = (model(x.to(device)).argmax(1) == y.to(device)).float().mean().item()
        tune.report({"epoch": epoch, "accuracy": accuracy})


def front(points: list[dict]) -> list[dict]:
    """The trials no other beats on both accuracy (higher) and energy (lower)."""

    def beaten(p: dict) -> bool:
        return any(
            q["accuracy"] >= p["accuracy"] and q["energy_j"] <= p["energy_j"] and q != p for q in points
        )

    return sorted((p for p in points if not beaten(p)), key=lambda p: p["energy_j"])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--energy", default="auto", help="auto, nvml, rapl, simulated or none")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--storage", default=None, help="Tune's results folder (default: a temporary one)")
    args = parser.parse_args(argv)
    # A private local Ray needs no token; Tune's classic output is silent at verbose=0 (its new
    # one still prints a configuration box and hints): the results below are the output.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("optuna").setLevel(logging.WARNING)  # "A new study created in memory"
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    search = OptunaSearch(metric=["accuracy", "energy_j"], mode=["max", "min"], seed=0)
    tuner = tune.Tuner(
        tune.with_resources(with_energy(train, energy=args.energy), {"cpu": 1, "gpu": gpus}),
        param_space={
            "lr": tune.loguniform(1e-4, 3e-2),
            "width": tune.choice([16, 64, 256]),
            "batch_size": tune.choice([16, 64, 256]),
            "epochs": args.epochs,
        },
        # reuse_actors: each worker process trains trial after trial, importing torch once
        tune_config=tune.TuneConfig(
            search_alg=search, num_samples=args.trials, max_concurrent_trials=2, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=args.storage or tempfile.mkdtemp(), verbose=0),
    )
    grid = tuner.fit()
    points = [
        {
            **{k: r.config[k] for k in ("lr", "width", "batch_size")},
            **{k: r.metrics[k] for k in ("accuracy", "energy_j", "energy_source")},
        }
        for r in grid
        if r.error is None
    ]
    best = front(points)
    print(f"{len(points)} trials; on the accuracy / energy front ({points[0]['energy_source']} energy):")
    for p in best:
        print(
            f"  accuracy {p['accuracy']:.3f}  {p['energy_j']:8.1f} J  "
            f"width {p['width']}, batch {p['batch_size']}, lr {p['lr']:.2g}"
        )
    return best


if __name__ == "__main__":
    main()
