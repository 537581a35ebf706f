"""The study's cells as a surrogate, for benchmarks/pareto_vs_optuna.py: a table of real short
trainings (the study's own trial, `run_trial`, on scikit-learn's digits, each of the three nets,
energy from the SIMULATED backend: labelled, never a measurement) and a random-forest model of
accuracy and log energy fitted to it (the surrogate of HPOBench and Eggensperger et al. 2015),
which the searchers then query instead of training: 10 seeds x 64 trials x 4 searchers x 6 cells
would take hours of training on this shared 2-core machine.

The space is the study's with the batch size and epochs searchable (`--params 5+batch+epochs`:
lr, beta1, beta2, eps, weight decay, batch 16-1024, 1-6 epochs); a 3-parameter cell fixes eps and
weight decay at Adam's defaults (1e-8, 0), so half the table's points are drawn there.

    python benchmarks/pareto_cells.py --per-net 80 --out benchmarks/data/digits_cells.csv   # ~10 min
"""

from __future__ import annotations

import argparse
import csv
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from greenray.tune.searchers import cube_of  # noqa: E402
from greenray.tune.space import search_space, trained_with  # noqa: E402

NETS = ("dense-linear", "dense-poly", "cnn")
MAX_EPOCHS = 6
SPACE = search_space("5+batch+epochs", max_epochs=MAX_EPOCHS)
CUBE = cube_of(SPACE)
# Adam's defaults in the unit cube: eps = 1e-8 over 1e-9..1e-7, weight decay 0 over 0..0.1
DEFAULT_EPS = (1e-8 - 1e-9) / (1e-7 - 1e-9)
THREE = {"eps": DEFAULT_EPS, "weight_decay": 0.0}
DIMS = {3: ("lr", "beta1", "beta2", "batch_size", "epochs"), 5: CUBE.names}
SURROGATE_SAMPLE = 20_000  # uniform points of a cell's inputs at which its best accuracy is sought


def full_point(unit: np.ndarray, params: int) -> np.ndarray:
    """A cell's unit point (its own dimensions) as a point of the 7-D table space."""
    values = dict(THREE) | dict(zip(DIMS[params], unit, strict=True))
    return np.array([values[name] for name in CUBE.names])


def collect(per_net: int, out: str, seed: int = 0) -> None:
    import torch
    from scipy.stats import qmc

    from greenray.config import TrialConfig
    from greenray.energy import open_meter
    from greenray.tune.trainable import run_trial

    torch.set_num_threads(1)
    meter = open_meter("simulated", quiet=True).start()
    half = per_net // 2
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["net", *CUBE.names, "accuracy", "idle_free_energy_j", "energy_source"])
        for n, net in enumerate(NETS):
            trial = TrialConfig(net=net, dataset="digits", epochs=MAX_EPOCHS)
            three = qmc.LatinHypercube(d=5, rng=np.random.default_rng(seed + n)).random(half)
            five = qmc.LatinHypercube(d=7, rng=np.random.default_rng(seed + 10 + n)).random(per_net - half)
            points = [full_point(u, 3) for u in three] + list(five)
            for i, unit in enumerate(points):
                config = trained_with(CUBE.to_config(unit))
                meter.begin_window("trial", busy=False)
                last = run_trial(config | {"__round__": i}, trial, 0, lambda row: None, meter)
                joules = meter.end_window("trial").idle_free_joules
                writer.writerow([net, *map(float, unit), float(last["accuracy"]), float(joules), "simulated"])
                handle.flush()
                print(net, i, round(float(last["accuracy"]), 3), round(joules, 1), flush=True)


class Cell:
    """One study cell (net, 3 or 5 parameters) as a function of its unit point: (accuracy,
    SIMULATED idle-free Joules) from the random forests fitted to that net's rows."""

    def __init__(self, rows: list[dict], net: str, params: int) -> None:
        from sklearn.ensemble import RandomForestRegressor

        mine = [r for r in rows if r["net"] == net]
        x = np.array([[float(r[name]) for name in CUBE.names] for r in mine])
        self.net, self.params, self.dim = net, params, len(DIMS[params])
        self.accuracy = RandomForestRegressor(50, min_samples_leaf=2, random_state=0, n_jobs=1)
        self.energy = RandomForestRegressor(50, min_samples_leaf=2, random_state=0, n_jobs=1)
        self.accuracy.fit(x, [float(r["accuracy"]) for r in mine])
        self.energy.fit(x, np.log([float(r["idle_free_energy_j"]) for r in mine]))
        self.best_accuracy = max(float(r["accuracy"]) for r in mine)  # of the net's real trainings
        # The surrogate's own best, over a large seeded sample of the cell's inputs: a target
        # defined from it is one the cell can meet (the forest smooths the table's few best
        # trainings below best_accuracy, so 95% of that can lie above everything it predicts).
        sample = np.random.default_rng(0).uniform(size=(SURROGATE_SAMPLE, self.dim))
        full = np.array([full_point(u, params) for u in sample])
        self.best_surrogate_accuracy = float(self.accuracy.predict(full).max())

    @property
    def name(self) -> str:
        return f"digits {self.net} {self.params} params (+batch, epochs)"

    def __call__(self, unit: np.ndarray) -> tuple[float, float]:
        x = full_point(np.asarray(unit, float), self.params)[None, :]
        return float(self.accuracy.predict(x)[0]), float(np.exp(self.energy.predict(x)[0]))


def cells(path: str) -> list[Cell]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return [Cell(rows, net, params) for net in NETS for params in (3, 5)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-net", type=int, default=80)
    parser.add_argument("--out", default="benchmarks/data/digits_cells.csv")
    args = parser.parse_args()
    collect(args.per_net, args.out)
