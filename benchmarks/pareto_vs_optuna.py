"""greenray's multi-objective and constrained searcher (PIBayesSearch: expected hypervolume
improvement over a GP per objective; constrained expected improvement) against Optuna 5's default
multi-objective sampler (TPESampler()), its GPSampler (LogEHVI; constraints_func) and random
search, on the same budget.

Problems (every searcher works in the same unit cube; lr and batch size are log-scaled there):
- the study's cells, as a SURROGATE (benchmarks/pareto_cells.py): random forests fitted to real
  short trainings of each of the three nets on digits, 3 and 5 Adam parameters plus batch size
  and epochs; energy from the SIMULATED backend, never a measurement;
- two standard problems, real: ZDT1 with 4 inputs and DTLZ2 (two objectives) with 5.

Front: accuracy (max) and Joules (min) (-f1 and f2 for the standard problems). Hypervolume on both
objectives scaled to [0, 1] between the ideal and nadir points of the front of every run of every
searcher on that problem, up to a reference 10% beyond the nadir; median over seeds with a 95%
bootstrap interval of the median. Constrained (cells only): least Joules with accuracy at least a
target (95% of the best accuracy the surrogate predicts over 20,000 uniform points of the cell's
inputs, so that every cell can meet it): the Joules spent until the search first met
the target, that configuration's Joules, and the least feasible Joules found in the budget.

    nice python benchmarks/pareto_vs_optuna.py --seeds 10 --trials 64 --save /tmp/points.json
    python benchmarks/pareto_vs_optuna.py --load /tmp/points.json        # re-score only
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from multiprocessing import Pool

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread per process: the VM is shared

import numpy as np  # noqa: E402
from pareto_cells import cells  # noqa: E402
from ray import tune  # noqa: E402

from greenray.tune.objectives import hypervolume, non_dominated  # noqa: E402
from greenray.tune.searchers import PIBayesSearch  # noqa: E402

try:
    import optuna
except ImportError:  # pragma: no cover - depends on the machine
    optuna = None

TABLE = os.path.join(os.path.dirname(__file__), "data", "digits_cells.csv")
TARGET_SHARE = 0.95  # the constrained question's target: this share of the surrogate's best accuracy


class Zdt1:
    def __init__(self, dim: int) -> None:
        self.dim, self.name = dim, f"ZDT1 {dim} inputs"

    def __call__(self, x: np.ndarray) -> tuple[float, float]:
        g = 1 + 9 * float(np.mean(x[1:]))
        return -float(x[0]), g * (1 - math.sqrt(x[0] / g))


class Dtlz2:
    def __init__(self, dim: int) -> None:
        self.dim, self.name = dim, f"DTLZ2 {dim} inputs"

    def __call__(self, x: np.ndarray) -> tuple[float, float]:
        g = float(np.sum((x[1:] - 0.5) ** 2))
        return -(1 + g) * math.cos(x[0] * math.pi / 2), (1 + g) * math.sin(x[0] * math.pi / 2)


@functools.cache
def problems() -> list:
    standard = [Zdt1(4), Dtlz2(5)]
    return (cells(TABLE) if os.path.exists(TABLE) else []) + standard


def _space(dim: int) -> dict:
    return {f"x{i}": tune.uniform(0.0, 1.0) for i in range(dim)}


def greenray_run(problem, seed: int, trials: int, target: float | None = None) -> dict:
    if target is None:
        metric, mode, threshold = ["accuracy", "energy"], ["max", "min"], None
    else:
        metric, mode, threshold = ["energy", "accuracy"], ["min", "max"], target
    searcher = PIBayesSearch(_space(problem.dim), metric=metric, mode=mode, seed=seed, threshold=threshold)
    points, seconds = [], []
    for i in range(trials):
        started = time.process_time()
        config = searcher.suggest(str(i))
        seconds.append(time.process_time() - started)
        accuracy, energy = problem(np.array(list(config.values())))
        searcher.on_trial_complete(str(i), {"accuracy": accuracy, "energy": energy})
        points.append((accuracy, energy))
    return {"points": points, "seconds": seconds}


def random_run(problem, seed: int, trials: int, target: float | None = None) -> dict:
    rng = np.random.default_rng(seed)
    return {"points": [problem(rng.uniform(size=problem.dim)) for _ in range(trials)], "seconds": []}


def optuna_run(kind: str, problem, seed: int, trials: int, target: float | None = None) -> dict:
    constraints = None if target is None else (lambda frozen: [target - frozen.user_attrs["accuracy"]])
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    else:
        sampler = optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    directions = ["maximize", "minimize"] if target is None else ["minimize"]
    study = optuna.create_study(directions=directions, sampler=sampler)
    points, seconds = [], []
    for _ in range(trials):
        started = time.process_time()
        ask = study.ask()
        x = np.array([ask.suggest_float(f"x{i}", 0.0, 1.0) for i in range(problem.dim)])
        seconds.append(time.process_time() - started)
        accuracy, energy = problem(x)
        ask.set_user_attr("accuracy", accuracy)
        study.tell(ask, [accuracy, energy] if target is None else energy)
        points.append((accuracy, energy))
    return {"points": points, "seconds": seconds}


SEARCHERS = {
    "greenray (EHVI / constrained EI)": greenray_run,
    "Optuna TPE (default)": lambda *a: optuna_run("tpe", *a),
    "Optuna GPSampler": lambda *a: optuna_run("gp", *a),
    "random": random_run,
}


def target_of(problem) -> float | None:
    """The constrained question's accuracy target (cells only): a share of the best accuracy the
    surrogate predicts over a large uniform sample of the cell's inputs, so every cell can meet it."""
    best = getattr(problem, "best_surrogate_accuracy", None)
    return None if best is None else TARGET_SHARE * best


def job(args: tuple) -> tuple:
    index, name, seed, trials, constrained = args
    if optuna is not None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = problems()[index]
    target = target_of(problem) if constrained else None
    return (problem.name, name, seed, constrained, target, SEARCHERS[name](problem, seed, trials, target))


def front_of(points) -> list:
    gains = np.array([(a, -e) for a, e in points])
    return [tuple(p) for p, keep in zip(points, non_dominated(gains), strict=True) if keep]


def scaled_volume(points, ideal, nadir) -> float:
    span_a, span_e = (ideal[0] - nadir[0]) or 1.0, (nadir[1] - ideal[1]) or 1.0
    scaled = [((a - nadir[0]) / span_a, (e - ideal[1]) / span_e) for a, e in points]
    return hypervolume(scaled, (-0.1, 1.1))


def median_interval(values, rng=np.random.default_rng(0)) -> tuple[float, float, float]:
    """The median and a 95% percentile-bootstrap interval of it."""
    values = np.asarray(values, float)
    boot = np.median(rng.choice(values, (2000, len(values))), axis=1)
    return float(np.median(values)), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def hypervolume_table(runs: list) -> list[str]:
    lines = ["| problem | " + " | ".join(SEARCHERS) + " | greenray beats TPE / GP (seeds) |"]
    lines.append("|---" * (len(SEARCHERS) + 2) + "|")
    for problem in dict.fromkeys(r[0] for r in runs if not r[3]):
        mine = [r for r in runs if r[0] == problem and not r[3]]
        union = front_of([p for r in mine for p in r[5]["points"]])
        ideal = (max(a for a, _ in union), min(e for _, e in union))
        nadir = (min(a for a, _ in union), max(e for _, e in union))
        volumes = {
            name: {r[2]: scaled_volume(front_of(r[5]["points"]), ideal, nadir) for r in mine if r[1] == name}
            for name in SEARCHERS
        }
        cells_text = []
        for name in SEARCHERS:
            if volumes[name]:
                m, low, high = median_interval(list(volumes[name].values()))
                cells_text.append(f"{m:.3f} ({low:.3f}-{high:.3f})")
            else:
                cells_text.append("-")
        ours = volumes[next(iter(SEARCHERS))]
        wins = [
            f"{sum(ours[s] > other[s] for s in ours if s in other)}/{len(set(ours) & set(other))}"
            for other in (volumes["Optuna TPE (default)"], volumes["Optuna GPSampler"])
        ]
        seeds = max(len(v) for v in volumes.values())
        row = f"| {problem} ({seeds} seeds) | " + " | ".join(cells_text)
        lines.append(f"{row} | {wins[0]}, {wins[1]} |")
    return lines


def constrained_table(runs: list) -> list[str]:
    lines = [
        "| cell (target) | searcher | J spent to first feasible | its J | least feasible J | runs feasible |",
        "|---|---|---|---|---|---|",
    ]
    for problem in dict.fromkeys(r[0] for r in runs if r[3]):
        for name in SEARCHERS:
            mine = [r for r in runs if r[0] == problem and r[3] and r[1] == name]
            if not mine:
                continue
            target = mine[0][4]
            spent, first, least = [], [], []
            for r in mine:
                energies = np.array([e for _, e in r[5]["points"]])
                ok = np.array([a >= target for a, _ in r[5]["points"]])
                if ok.any():
                    at = int(np.argmax(ok))
                    spent.append(energies[: at + 1].sum())
                    first.append(energies[at])
                    least.append(energies[ok].min())
            texts = [
                "{:.0f} ({:.0f}-{:.0f})".format(*median_interval(v)) if v else "-"
                for v in (spent, first, least)
            ]
            row = f"| {problem} ({target:.3f}) | {name} | " + " | ".join(texts)
            lines.append(f"{row} | {len(spent)}/{len(mine)} |")
    return lines


def timing_lines(runs: list) -> list[str]:
    lines = []
    for name in SEARCHERS:
        for constrained in (False, True):
            late = [s for r in runs if r[1] == name and r[3] == constrained for s in r[5]["seconds"][-4:]]
            if late:
                kind = "constrained" if constrained else "front"
                lines.append(
                    f"{name}, {kind}: suggestion CPU time over the last 4 of each run, median "
                    f"{np.median(late):.3f} s, 90th percentile {np.quantile(late, 0.9):.3f} s"
                )
    return lines


def suggestion_cost(observations: int = 64) -> list[str]:
    """greenray's CPU seconds per suggestion with `observations` finished trials and on for a
    whole cycle of GP restarts (every kind of fit is in it), on the study's widest space
    (`--params 5+batch`, 6 inputs): one metric (PI), the front, the constrained."""
    from greenray.optim.bo import RESTART_EVERY
    from greenray.tune.space import search_space

    space = search_space("5+batch", max_epochs=4)
    lines = []
    for metric, mode, threshold in (
        ("accuracy", "max", None),
        (["accuracy", "energy_j"], ["max", "min"], None),
        (["energy_j", "accuracy"], ["min", "max"], 0.7),
    ):
        searcher = PIBayesSearch(space, metric=metric, mode=mode, seed=0, threshold=threshold)
        seconds = []
        for i in range(observations + RESTART_EVERY):
            started = time.process_time()
            config = searcher.suggest(str(i))
            seconds.append(time.process_time() - started)
            accuracy = 1 - abs(math.log10(config["lr"]) + 3) / 4 - 0.1 * (config["beta1"] - 0.5) ** 2
            energy = 1e4 / config["batch_size"] * (1 + config["beta2"])
            searcher.on_trial_complete(str(i), {"accuracy": accuracy, "energy_j": energy})
        late = seconds[observations:]
        lines.append(
            f"{metric} (threshold {threshold}): CPU s per suggestion at {observations}-{len(seconds) - 1} "
            f"observations: median {np.median(late):.3f}, max {max(late):.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="the seeds: first-seed and on")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=1, help="processes (the machine is shared: 1 or 2)")
    parser.add_argument("--only", default=None, help="only searchers whose name contains one of these (,)")
    parser.add_argument("--problems", default=None, help="only problems whose name contains one of these (,)")
    parser.add_argument("--no-constrained", action="store_true", help="leave the constrained question out")
    parser.add_argument("--constrained-only", action="store_true", help="only the constrained question")
    parser.add_argument(
        "--constrained-gp", action="store_true", help="run GPSampler on the constrained question too (slow)"
    )
    parser.add_argument("--save", default=None, help="write every run's points to this JSON file")
    parser.add_argument("--load", default=None, help="score the runs --save wrote (files, comma-separated)")
    parser.add_argument("--cost", action="store_true", help="greenray's suggestion CPU time only")
    args = parser.parse_args(argv)
    if args.cost:
        print("\n".join(suggestion_cost()))
        return
    started = time.monotonic()
    if args.load:
        runs, headers = [], []
        for path in args.load.split(","):
            with open(path) as handle:
                saved = json.load(handle)
            runs += [tuple(r) for r in saved["runs"]]
            headers.append(saved["header"])
        # one run per problem, searcher, seed and question (files of overlapping seeds: the first)
        runs = list({(r[0], r[1], r[2], r[3]): r for r in reversed(runs)}.values())
        header = "\n".join(headers)
    else:
        wanted = args.only.split(",") if args.only else list(SEARCHERS)
        names = [n for n in SEARCHERS if any(part in n for part in wanted)]
        if optuna is None:
            print("Optuna is not installed: only greenray and random run", file=sys.stderr)
            names = [n for n in names if "Optuna" not in n]
        found = problems()
        jobs = [
            (i, name, seed, args.trials, constrained)
            for i, problem in enumerate(found)
            if args.problems is None or any(part in problem.name for part in args.problems.split(","))
            for constrained in ((False, True) if hasattr(problem, "best_accuracy") else (False,))
            if not (constrained and args.no_constrained) and (constrained or not args.constrained_only)
            for seed in range(args.first_seed, args.first_seed + args.seeds)
            for name in names
            if not (constrained and name == "Optuna GPSampler" and not args.constrained_gp)
        ]
        # seed by seed over every problem: a run cut short still has every problem, on fewer seeds
        jobs.sort(key=lambda j: (j[2], j[4]))
        runs = []
        with Pool(args.jobs) as pool:
            for run in pool.imap_unordered(job, jobs):
                runs.append(run)
                print(f"{run[0]} {run[1]} seed {run[2]}{' constrained' if run[3] else ''}", file=sys.stderr)
                if args.save:  # as they come: a run cut short still scores what finished
                    with open(args.save + ".part", "w") as handle:
                        json.dump({"runs": runs, "header": "partial"}, handle)
        header = (
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, optuna {getattr(optuna, '__version__', 'not installed')}; "
            f"{args.seeds} seeds x {args.trials} trials; {args.jobs} processes; "
            f"{time.monotonic() - started:.0f} s; cells: SURROGATE of real digits trainings, SIMULATED energy"
        )
        if args.save:
            with open(args.save, "w") as handle:
                json.dump({"runs": runs, "header": header}, handle)
    print(header)
    print("\n".join(hypervolume_table(runs) + [""] + constrained_table(runs) + [""] + timing_lines(runs)))


if __name__ == "__main__":
    main()
