"""greenray's pareto objective (PI-Bayes with ParEGO's random scalarisation) against Optuna's
NSGA-II and multi-objective TPE, on the same budget of real trainings: the hypervolume of the
accuracy / energy front each finds, median over seeds.

Every searcher proposes configurations of the study's space with the batch size and the epoch
count searchable (`--params 3+batch+epochs`: lr, beta1, beta2, batch size 16-1024, 1 to
--epochs epochs); each configuration is trained once by the study's own trial (`run_trial`:
DensePolyNN on scikit-learn's digits by default), in this process, one at a time, and measured
on the meter the study uses. Objectives: test accuracy (max) and the trial's idle-free energy
(min). Energy on a machine without a GPU comes from the simulated backend, whose busy-time model
makes Joules proportional to compute time: it is labelled SIMULATED, never a measurement.

Hypervolume: the area a searcher's front dominates, both objectives scaled to [0, 1] between
the ideal and the nadir point of the front of every trial of every searcher and seed together,
up to a reference 10% beyond that nadir (a front at the nadir scores 0.01, one at the ideal
1.21): the same reference for every searcher and seed, and one where the fronts differ.
Optuna is not a greenray dependency (`pip install -e ".[examples]"` installs it).

    python benchmarks/pareto_vs_optuna.py --seeds 6 --trials 20 --energy simulated
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread for the searchers: the VM is shared

import numpy as np  # noqa: E402
import torch  # noqa: E402

from greenray.config import TrialConfig  # noqa: E402
from greenray.energy import open_meter  # noqa: E402
from greenray.tune.objectives import hypervolume, non_dominated  # noqa: E402
from greenray.tune.searchers import PIBayesSearch, RandomSearch  # noqa: E402
from greenray.tune.space import BATCH_BOUNDS, BOUNDS, search_space, trained_with  # noqa: E402
from greenray.tune.trainable import run_trial  # noqa: E402

try:
    import optuna
except ImportError:  # pragma: no cover - depends on the machine
    optuna = None

METRICS, MODES = ["accuracy", "idle_free_energy_j"], ["max", "min"]


class Trainer:
    """Trains one configuration with the study's trial and measures it as with_energy would:
    a window around the whole trial (not busy), the epochs and test passes busy inside it."""

    def __init__(self, energy: str, trial: TrialConfig) -> None:
        self.meter = open_meter(energy, quiet=True).start()
        self.trial = trial
        self.calls = 0

    def __call__(self, config: dict) -> tuple[float, float]:
        self.calls += 1
        self.meter.begin_window("trial", busy=False)
        last = run_trial(config | {"__round__": self.calls}, self.trial, 0, lambda row: None, self.meter)
        joules = self.meter.end_window("trial").idle_free_joules
        return float(last["accuracy"]), float(joules)


def greenray_search(searcher, train: Trainer, trials: int) -> list[tuple[float, float]]:
    points = []
    for i in range(trials):
        config = searcher.suggest(str(i))
        accuracy, joules = train(trained_with(config))
        searcher.on_trial_complete(str(i), {"accuracy": accuracy, "idle_free_energy_j": joules})
        points.append((accuracy, joules))
    return points


def optuna_search(sampler, train: Trainer, trials: int, max_epochs: int) -> list[tuple[float, float]]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    points = []
    for _ in range(trials):
        ask = study.ask()
        config = {
            "lr": ask.suggest_float("lr", *BOUNDS["lr"], log=True),
            "beta1": ask.suggest_float("beta1", *BOUNDS["beta1"]),
            "beta2": ask.suggest_float("beta2", *BOUNDS["beta2"]),
            "batch_size": ask.suggest_float("batch_size", *BATCH_BOUNDS, log=True),
            "epochs": ask.suggest_float("epochs", 1.0, float(max_epochs)),
        }
        accuracy, joules = train(trained_with(config))
        study.tell(ask, [accuracy, joules])
        points.append((accuracy, joules))
    return points


def searchers(seed: int, max_epochs: int) -> dict:
    space = search_space("3+batch+epochs", max_epochs=max_epochs)
    found = {
        "greenray pareto (PI-Bayes, ParEGO)": lambda: PIBayesSearch(
            space, metric=METRICS, mode=MODES, seed=seed
        ),
        "greenray random": lambda: RandomSearch(space, metric=METRICS, mode=MODES, seed=seed),
    }
    if optuna is not None:
        found["Optuna NSGA-II"] = lambda: optuna.samplers.NSGAIISampler(seed=seed)
        found["Optuna TPE (multi-objective)"] = lambda: optuna.samplers.TPESampler(seed=seed)
    return found


def front_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    gains = np.array([(a, -e) for a, e in points])
    return [p for p, keep in zip(points, non_dominated(gains), strict=True) if keep]


def scaled_volume(points: list[tuple[float, float]], ideal, nadir) -> float:
    """The hypervolume of `points` on objectives scaled to [0, 1] between ideal and nadir, up to
    a reference 10% beyond the nadir."""
    span_a, span_e = (ideal[0] - nadir[0]) or 1.0, (nadir[1] - ideal[1]) or 1.0
    scaled = [((a - nadir[0]) / span_a, (e - ideal[1]) / span_e) for a, e in points]
    return hypervolume(scaled, (-0.1, 1.1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--trials", type=int, default=20, help="trainings per searcher and seed (the budget)")
    parser.add_argument("--epochs", type=int, default=6, help="the most epochs a configuration may train")
    parser.add_argument("--net", default="dense-poly")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--energy", default="simulated", help="auto, nvml, rapl or simulated")
    parser.add_argument("--save", default=None, help="write every searcher's points to this JSON file")
    parser.add_argument("--load", default=None, help="score the points a --save wrote instead of training")
    args = parser.parse_args(argv)
    if optuna is None:
        print(
            "Optuna is not installed: pip install -e '.[examples]'; only greenray's searchers run",
            file=sys.stderr,
        )
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    trial = TrialConfig(net=args.net, dataset=args.dataset, epochs=args.epochs)
    runs: dict[str, list[list[tuple[float, float]]]] = {}
    started = time.monotonic()
    if args.load:
        with open(args.load) as handle:
            saved = json.load(handle)
        runs = {k: [[tuple(p) for p in s] for s in v] for k, v in saved["runs"].items()}
        source = saved["source"]
        vars(args).update({k: saved["args"][k] for k in ("seeds", "trials", "epochs", "net", "dataset")})
    else:
        train = Trainer(args.energy, trial)
        source = ", ".join(sorted(train.meter.sources)) or "none"
    for seed in range(0 if args.load else args.seeds):
        for name, make in searchers(seed, args.epochs).items():
            made = make()
            if name.startswith("Optuna"):
                points = optuna_search(made, train, args.trials, args.epochs)
            else:
                points = greenray_search(made, train, args.trials)
            runs.setdefault(name, []).append(points)
            print(f"seed {seed} {name}: best accuracy {max(a for a, _ in points):.4f}", file=sys.stderr)
    if args.save:
        with open(args.save, "w") as handle:
            json.dump({"runs": runs, "source": source, "args": vars(args)}, handle)
    union = front_points([p for seeds in runs.values() for points in seeds for p in points])
    ideal = (max(a for a, _ in union), min(e for _, e in union))
    nadir = (min(a for a, _ in union), max(e for _, e in union))
    label = " [SIMULATED energy, not a measurement]" if "simulated" in source else ""
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    versions += f", optuna {getattr(optuna, '__version__', 'not installed')}"
    print(f"machine: {platform.machine()}, {versions}; energy source: {source}{label}")
    print(
        f"{args.trials} trainings per searcher and seed, seeds 0-{args.seeds - 1}, {args.net} on "
        f"{args.dataset}, 1-{args.epochs} epochs; front of all: accuracy {nadir[0]:.3f}-{ideal[0]:.3f}, "
        f"{ideal[1]:.1f}-{nadir[1]:.1f} J; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print("| searcher | median hypervolume (scaled) | IQR | median front size | median best accuracy |")
    print("|---|---|---|---|---|")
    table = {}
    for name, seeds in runs.items():
        volumes = [scaled_volume(p, ideal, nadir) for p in seeds]
        sizes = [len(front_points(p)) for p in seeds]
        best = [max(a for a, _ in p) for p in seeds]
        q1, _, q3 = statistics.quantiles(volumes, n=4) if len(volumes) > 1 else (volumes[0],) * 3
        table[name] = volumes
        print(f"| {name} | {statistics.median(volumes):.4g} | {q1:.4g}-{q3:.4g} | "
              f"{statistics.median(sizes):g} | {statistics.median(best):.4f} |")  # fmt: skip
    ours = table["greenray pareto (PI-Bayes, ParEGO)"]
    for name, volumes in table.items():
        if name.startswith("Optuna"):
            wins = sum(a > b for a, b in zip(ours, volumes, strict=True))
            print(f"greenray pareto beats {name} on {wins} of {len(ours)} seeds")
    return table


if __name__ == "__main__":
    main()
