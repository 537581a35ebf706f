"""The three questions the core answers, each the next point of the unit cube to try given what
was observed (rows of `points`, values larger is better) and the points still in flight:

- propose_improvement: one quantity, Probability of Improvement (the study's acquisition);
- propose_front: two quantities, their front, by expected hypervolume improvement;
- propose_constrained: one quantity subject to a constraint (met where it is at most 0), by
  expected improvement times the probability that the constraint holds; until some point has
  met it, the point whose constraint, as modelled, most plausibly holds, or, where the
  quantity is a cost, the most likely to hold per unit of predicted cost (first_feasible)."""

from __future__ import annotations

import numpy as np

from greenray.optim.acquisition import (
    expected_hypervolume_improvement,
    expected_improvement,
    log_probability_feasible,
    probability_feasible,
    probability_of_improvement,
)
from greenray.optim.bo import GaussianProcess, best_first, maximise, with_liars
from greenray.optim.pareto import non_dominated

REFERENCE_MARGIN = 0.1  # the front's reference point: this far below the worst observed (scaled to [0, 1])


def propose_improvement(
    model: GaussianProcess,
    points: np.ndarray,
    values: np.ndarray,
    pending: np.ndarray,
    rng: np.random.RandomState,
    xi: float,
) -> np.ndarray:
    """The candidate most likely to beat the best value by xi (in units of the values' standard
    deviation, so xi means the same for an accuracy and for a loss)."""
    model.fit(*with_liars(points, values, pending))
    best, margin = float(values.max()), xi * (float(values.std()) or 1.0)

    def score(x: np.ndarray) -> np.ndarray:
        return probability_of_improvement(*model.predict(x), best, margin)

    return maximise(score, rng, points.shape[1], points[best_first(values)])


def _scaled(values: np.ndarray) -> np.ndarray:
    """Each column scaled to [0, 1] over its observations."""
    low, high = values.min(axis=0), values.max(axis=0)
    return (values - low) / np.where(high > low, high - low, 1.0)


def propose_front(
    models: tuple[GaussianProcess, GaussianProcess],
    points: np.ndarray,
    values: np.ndarray,
    pending: np.ndarray,
    rng: np.random.RandomState,
) -> np.ndarray:
    """The candidate of largest expected hypervolume improvement over the front of two values
    (columns of `values`), each modelled by its own Gaussian process on values scaled to [0, 1]."""
    scaled = _scaled(values)
    for column, model in enumerate(models):
        model.fit(*with_liars(points, scaled[:, column], pending))
    on_front = non_dominated(scaled)
    front = scaled[on_front]
    # Optuna's GPSampler's choice: a little beyond the worst observation. (BoTorch's, the front's
    # own nadir less a tenth of its range, scored worse and less steadily on ZDT1 here.)
    reference = np.full(2, -REFERENCE_MARGIN)

    def score(x: np.ndarray) -> np.ndarray:
        predicted = [model.predict(x) for model in models]
        mean = np.column_stack([m for m, _ in predicted])
        std = np.column_stack([s for _, s in predicted])
        return expected_hypervolume_improvement(mean, std, front, reference)

    anchors = points[on_front][rng.permutation(int(on_front.sum()))]
    return maximise(score, rng, points.shape[1], anchors)


def propose_constrained(
    objective: GaussianProcess,
    constraint: GaussianProcess,
    points: np.ndarray,
    values: np.ndarray,
    constraints: np.ndarray,
    pending: np.ndarray,
    rng: np.random.RandomState,
    fixed: np.ndarray | None = None,
    optimism: float = 2.0,
    costs: bool = False,
) -> np.ndarray:
    """The candidate (from `fixed` rows where given) of largest expected improvement over the
    best feasible value times the probability that its constraint holds (Gardner et al. 2014).
    Until a point is feasible there is nothing to improve on: see first_feasible."""
    constraint.fit(*with_liars(points, constraints, pending))
    feasible = constraints <= 0
    if not feasible.any():
        model = (objective, constraint)
        return first_feasible(*model, points, values, constraints, pending, rng, fixed, optimism, costs)
    objective.fit(*with_liars(points, values, pending))
    best = float(values[feasible].max())

    def score(x: np.ndarray) -> np.ndarray:
        improvement = expected_improvement(*objective.predict(x), best)
        return improvement * probability_feasible(*constraint.predict(x))

    ranked = best_first(np.where(feasible, values, -np.inf))
    return maximise(score, rng, points.shape[1], points[ranked[: int(feasible.sum())]], fixed)


def first_feasible(
    objective: GaussianProcess,
    constraint: GaussianProcess,
    points: np.ndarray,
    values: np.ndarray,
    constraints: np.ndarray,
    pending: np.ndarray,
    rng: np.random.RandomState,
    fixed: np.ndarray | None,
    optimism: float,
    costs: bool,
) -> np.ndarray:
    """The next candidate while no point has met the constraint (its model already fitted).

    costs=False: the candidate whose constraint has the lowest optimistic bound (mean -
    optimism x sd). costs=True (the objective is a negated positive cost, such as -Joules): the
    candidate of highest probability of meeting the constraint per unit of predicted cost, the
    cost-per-success rule of cost-aware Bayesian optimisation (Snoek et al. 2012's EI per
    second): a trial at x succeeds with probability p(x) at cost c(x), so c / p is the expected
    cost of success there; without it the search reaches the target through its most
    expensive configurations (docs/BENCHMARKS.md, the constrained question). The predicted
    cost is floored at the least observed one: a GP's mean can fall to 0 or below."""
    dim = points.shape[1]
    ranked = points[best_first(-constraints)]
    if not costs:

        def plausible(x: np.ndarray) -> np.ndarray:
            mean, std = constraint.predict(x)
            return -(mean - optimism * std)

        return maximise(plausible, rng, dim, ranked, fixed)
    objective.fit(*with_liars(points, values, pending))
    floor = float(-values.max())
    if floor <= 0:
        raise ValueError("costs=True needs objective values that are negated positive costs")

    def per_cost(x: np.ndarray) -> np.ndarray:  # in logs: far from feasible, p underflows
        cost = np.maximum(-objective.predict(x)[0], floor)
        return log_probability_feasible(*constraint.predict(x)) - np.log(cost)

    return maximise(per_cost, rng, dim, ranked, fixed)
