"""greenray's searchers against Optuna's TPE and GP samplers on Adam-shaped 3-D test functions.

Every searcher gets the same functions, budget (rounds, one trial at a time) and seeds; the score
is the regret of the configuration it would pick (its best observed value, re-evaluated without
noise), 0 being the optimum. Also times PI-Bayes per suggestion at 25 and 64 observations.
Optuna is not a greenray dependency: `pip install optuna` to run this.

    python benchmarks/searchers_vs_optuna.py --seeds 10 --rounds 25
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault(
    "OMP_NUM_THREADS", "1"
)  # one BLAS thread for every searcher: fair, and the VM is shared

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from greenray.tune.searchers import PartialGridSearch, PIBayesSearch, RandomSearch  # noqa: E402
from greenray.tune.space import adam_space  # noqa: E402

try:
    import optuna
except ImportError:  # pragma: no cover - depends on the machine
    optuna = None

SPACE = adam_space(3)  # lr log-uniform in [1e-5, 1e-1], beta1 in [0.1, 1], beta2 in [0.8, 1]


@dataclass(frozen=True)
class TestFunction:
    """A loss over (lr, beta1, beta2) to minimise; `noise` is the sd of Gaussian noise on each observation."""

    name: str
    what: str
    loss: Callable[[float, float, float], float]
    noise: float = 0.0

    def optimum(self) -> float:
        """The noise-free minimum, by L-BFGS-B from a grid of starts over (log10 lr, beta1, beta2)."""
        bounds = [(-5.0, -1.0), (0.1, 1.0), (0.8, 1.0)]
        best = np.inf
        for start in np.stack(np.meshgrid(*[np.linspace(lo, hi, 7) for lo, hi in bounds]), -1).reshape(-1, 3):
            res = minimize(
                lambda v: self.loss(10 ** v[0], v[1], v[2]), start, bounds=bounds, method="L-BFGS-B"
            )
            best = min(best, float(res.fun))
        return best


def _smooth(lr: float, b1: float, b2: float) -> float:
    x, y, z = (np.log10(lr) + 3) / 2, (b1 - 0.9) / 0.45, (b2 - 0.99) / 0.1
    return float(x**2 + y**2 + z**2 + 0.8 * x * y)


def _narrow(lr: float, b1: float, b2: float) -> float:
    x = np.log10(lr)
    broad = ((x + 2.5) / 2) ** 2 + ((b1 - 0.6) / 0.9) ** 2 + ((b2 - 0.95) / 0.2) ** 2
    well = np.exp(-0.5 * (((x + 2.2) / 0.25) ** 2 + ((b1 - 0.65) / 0.12) ** 2 + ((b2 - 0.95) / 0.04) ** 2))
    return float(0.5 * broad - 1.5 * well)


def _valley(lr: float, b1: float, b2: float) -> float:
    # Adam's step grows like lr / (1 - beta1): a curved valley in (lr, beta1); beta2 does not matter.
    step = np.log10(lr) - np.log10(max(1.0 - b1, 1e-3))
    return float(((step + 2) / 0.7) ** 2 + ((b1 - 0.9) / 0.45) ** 2)


FUNCTIONS = [
    TestFunction("smooth", "correlated quadratic bowl", _smooth),
    TestFunction("narrow", "narrow well (0.25 decade of lr, 0.04 of beta2) in a broad bowl", _narrow),
    TestFunction("noisy", "the smooth bowl, noise sd 0.1 per observation", _smooth, noise=0.1),
    TestFunction("valley", "curved lr-beta1 valley, beta2 irrelevant", _valley),
]


def _run_tune_searcher(
    searcher, fn: TestFunction, rounds: int, rng: np.random.Generator
) -> list[tuple[dict, float]]:
    history = []
    for i in range(rounds):
        config = searcher.suggest(str(i))
        observed = fn.loss(config["lr"], config["beta1"], config["beta2"]) + fn.noise * rng.normal()
        searcher.on_trial_complete(str(i), {"loss": observed})
        history.append((config, observed))
    return history


def _run_optuna(sampler, fn: TestFunction, rounds: int, rng: np.random.Generator) -> list[tuple[dict, float]]:
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "beta1": optuna.distributions.FloatDistribution(0.1, 1.0),
        "beta2": optuna.distributions.FloatDistribution(0.8, 1.0),
    }
    study = optuna.create_study(direction="minimize", sampler=sampler)
    history = []
    for _ in range(rounds):
        trial = study.ask(dists)
        config = trial.params
        observed = fn.loss(config["lr"], config["beta1"], config["beta2"]) + fn.noise * rng.normal()
        study.tell(trial, observed)
        history.append((config, observed))
    return history


SEARCHERS: dict[str, Callable[[int, TestFunction, int, np.random.Generator], list]] = {
    "greenray PI-Bayes": lambda seed, fn, rounds, rng: _run_tune_searcher(
        PIBayesSearch(SPACE, metric="loss", mode="min", seed=seed), fn, rounds, rng
    ),
    "greenray PI (package kernel)": lambda seed, fn, rounds, rng: _run_tune_searcher(
        PIBayesSearch(SPACE, metric="loss", mode="min", seed=seed, kernel=None), fn, rounds, rng
    ),
    "greenray random": lambda seed, fn, rounds, rng: _run_tune_searcher(
        RandomSearch(SPACE, metric="loss", mode="min", seed=seed), fn, rounds, rng
    ),
    "greenray grid": lambda seed, fn, rounds, rng: _run_tune_searcher(
        PartialGridSearch(SPACE, metric="loss", mode="min", seed=seed), fn, rounds, rng
    ),
    "Optuna TPE": lambda seed, fn, rounds, rng: _run_optuna(
        optuna.samplers.TPESampler(seed=seed), fn, rounds, rng
    ),
    "Optuna GP": lambda seed, fn, rounds, rng: _run_optuna(
        optuna.samplers.GPSampler(seed=seed), fn, rounds, rng
    ),
}


def regret(history: list[tuple[dict, float]], fn: TestFunction, optimum: float) -> float:
    """The noise-free regret of the configuration with the best observed value."""
    config, _ = min(history, key=lambda item: item[1])
    return fn.loss(config["lr"], config["beta1"], config["beta2"]) - optimum


def time_suggestions(seeds: int, at: tuple[int, ...] = (25, 64)) -> dict[int, float]:
    """Median seconds PI-Bayes takes for one suggestion with `at` observations, on the smooth function."""
    times: dict[int, list[float]] = {n: [] for n in at}
    fn = FUNCTIONS[0]
    for seed in range(seeds):
        searcher = PIBayesSearch(SPACE, metric="loss", mode="min", seed=seed)
        for i in range(max(at) + 1):
            start = time.perf_counter()
            config = searcher.suggest(str(i))
            elapsed = time.perf_counter() - start
            if i in times:
                times[i].append(elapsed)
            searcher.on_trial_complete(
                str(i), {"loss": fn.loss(config["lr"], config["beta1"], config["beta2"])}
            )
    return {n: statistics.median(values) for n, values in times.items()}


def print_head_to_head(regrets_by: dict, names: list[str], functions: list[TestFunction]) -> None:
    """Seeds where greenray's PI-Bayes found the lower regret, against each other searcher, with the
    one-sided Wilcoxon signed-rank p-value (paired by seed)."""
    ours = "greenray PI-Bayes"
    if ours not in names:
        return
    print(f"\n{ours}: seeds with a lower regret than the other searcher (one-sided Wilcoxon p)")
    for other in (n for n in names if n != ours):
        cells = []
        for fn in functions:
            a, b = np.array(regrets_by[ours, fn.name]), np.array(regrets_by[other, fn.name])
            p = wilcoxon(a, b, alternative="less").pvalue if np.any(a != b) else 1.0
            cells.append(f"{fn.name} {int(np.sum(a < b))}/{len(a)} (p={p:.2g})")
        print(f"  vs {other}: " + ", ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--searchers", default=",".join(SEARCHERS), help="comma-separated names")
    parser.add_argument("--functions", default=",".join(f.name for f in FUNCTIONS))
    parser.add_argument("--timing-seeds", type=int, default=5)
    args = parser.parse_args()
    if optuna is None:
        sys.exit("this benchmark needs Optuna, which greenray does not depend on: pip install optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    names = args.searchers.split(",")
    functions = [f for f in FUNCTIONS if f.name in args.functions.split(",")]
    print(
        f"# {args.rounds} rounds, seeds 0..{args.seeds - 1}, one trial at a time; "
        f"Python {platform.python_version()}, Optuna {optuna.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    table: dict[str, dict[str, str]] = {name: {} for name in names}
    regrets_by: dict[tuple[str, str], list[float]] = {}
    for fn in functions:
        optimum = fn.optimum()
        for name in names:
            start = time.perf_counter()
            regrets = [
                regret(
                    SEARCHERS[name](seed, fn, args.rounds, np.random.default_rng(1000 + seed)), fn, optimum
                )
                for seed in range(args.seeds)
            ]
            regrets_by[name, fn.name] = regrets
            q25, q50, q75 = np.percentile(regrets, [25, 50, 75])
            table[name][fn.name] = f"{q50:.3g} ({q25:.2g}-{q75:.2g})"
            print(
                f"{fn.name:8s} {name:24s} median {q50:.4g}  IQR {q25:.3g}-{q75:.3g}  "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )

    print("\n| searcher | " + " | ".join(f.name for f in functions) + " |")
    print("|---|" + "---|" * len(functions))
    for name in names:
        print(f"| {name} | " + " | ".join(table[name][f.name] for f in functions) + " |")

    print_head_to_head(regrets_by, names, functions)
    if args.timing_seeds:
        timing = time_suggestions(args.timing_seeds)
        print(
            f"\nPI-Bayes seconds per suggestion (median of {args.timing_seeds} seeds): "
            + ", ".join(f"{s:.3f} s at {n} observations" for n, s in timing.items())
        )


if __name__ == "__main__":
    main()
