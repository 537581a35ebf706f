"""serve-tune: the batching policy (cap and max wait) with the least energy per image whose p99
response time at a given request rate stays under a target, found by live runs on one running
deployment (the policy is changed at run time through Serve's `set_max_batch_size` /
`set_batch_wait_timeout_s`, never redeployed).

The search is constrained Bayesian optimisation (greenray.optim's): one Gaussian process
models energy per image, another log(p99 / target), and each next policy maximises expected
improvement times the probability that the target holds (Gardner et al., ICML 2014). The first
run is Serve's default policy (greedy: whatever is queued, no wait), which is also what the
saving is measured against; a few space-filling runs follow, then the model's suggestions.
Until some run has met the target there is nothing to improve on, so the search first heads
for the policy whose p99, as modelled so far, most plausibly meets it.

Policies live in the unit square: the cap is log-scaled over 1..max_batch_size, the max wait is
linear over 0..target (a batch that waits longer than the target cannot meet it); a wait under
half a millisecond is greedy."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.gaussian_process.kernels import Matern

from greenray.config import BatchPolicy, TargetConfig
from greenray.optim.bo import GaussianProcess, ard_kernel, space_filling
from greenray.optim.propose import propose_constrained
from greenray.results import OK

log = logging.getLogger("greenray.serve")

GREEDY_BELOW_MS = 0.5  # a max wait this short is no wait
# Policies closer than these steps measure the same within noise: runs are not spent on both.
CAP_STEPS_PER_DOUBLING = 4  # caps 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 16, ...
WAIT_STEPS = 40  # max waits in steps of target / 40
REPEATS_BEFORE_RANDOM = 3  # suggestions of policies already run, in a row, before a random one


@dataclass(frozen=True)
class Observation:
    """One live run of one policy."""

    policy: str
    max_batch_size: int
    max_wait_ms: float
    energy_per_image_j: float | None
    idle_free_energy_per_image_j: float | None
    p99_ms: float | None
    mean_batch_size: float | None
    meets_slo: bool
    run_id: str
    energy_source: str


@dataclass
class TuneResult:
    """What a search found: `best` is the feasible run of least energy per image (None when no
    run met the target), `baseline` Serve's default policy at the same rate."""

    slo_ms: float
    frequency_hz: float
    baseline: Observation
    best: Observation | None
    observations: list[Observation] = field(default_factory=list)

    @property
    def live_runs(self) -> int:
        return len(self.observations)

    @property
    def saving(self) -> float | None:
        """1 - best / baseline energy per image (idle included)."""
        return _saving(self.best, self.baseline, "energy_per_image_j")

    @property
    def idle_free_saving(self) -> float | None:
        return _saving(self.best, self.baseline, "idle_free_energy_per_image_j")

    def to_dict(self) -> dict:
        return {
            "slo_ms": self.slo_ms,
            "frequency_hz": self.frequency_hz,
            "baseline": asdict(self.baseline),
            "best": asdict(self.best) if self.best else None,
            "saving": self.saving,
            "idle_free_saving": self.idle_free_saving,
            "live_runs": self.live_runs,
            "observations": [asdict(o) for o in self.observations],
        }


def _saving(best: Observation | None, baseline: Observation, key: str) -> float | None:
    if best is None:
        return None
    ours, theirs = getattr(best, key), getattr(baseline, key)
    return 1.0 - ours / theirs if ours is not None and theirs else None


@dataclass(frozen=True)
class PolicySpace:
    """(cap, max wait) policies as points of the unit square."""

    max_batch_size: int
    slo_ms: float

    def policy(self, point) -> BatchPolicy:
        u_cap, u_wait = (float(np.clip(v, 0.0, 1.0)) for v in point)
        doublings = (
            round(u_cap * math.log2(self.max_batch_size) * CAP_STEPS_PER_DOUBLING) / CAP_STEPS_PER_DOUBLING
        )
        cap = int(np.clip(round(2.0**doublings), 1, self.max_batch_size))
        wait_ms = float(f"{round(u_wait * WAIT_STEPS) * self.slo_ms / WAIT_STEPS:.4g}")
        if wait_ms < GREEDY_BELOW_MS or cap == 1:  # a batch of one never waits
            return BatchPolicy("greedy", cap)
        return BatchPolicy("fixed", cap, wait_ms)

    def lattice(self) -> np.ndarray:
        """One point per distinct policy of the space (rows of the unit square)."""
        steps = max(1, round(math.log2(self.max_batch_size) * CAP_STEPS_PER_DOUBLING))
        points = [(c / steps, w / WAIT_STEPS) for c in range(steps + 1) for w in range(WAIT_STEPS + 1)]
        distinct = {str(self.policy(p)): p for p in points}
        return np.array(list(distinct.values()))

    def point(self, policy: BatchPolicy) -> np.ndarray:
        u_cap = math.log2(policy.size) / math.log2(self.max_batch_size) if self.max_batch_size > 1 else 1.0
        wait = 0.0 if policy.kind == "greedy" else min(policy.max_wait_ms or self.slo_ms, self.slo_ms)
        return np.array([u_cap, wait / self.slo_ms])


class PolicySearch:
    """Constrained Bayesian optimisation over a PolicySpace, on greenray's core
    (greenray.optim.propose.propose_constrained, the core of `--objective min-energy` too):
    minimise energy per image subject to p99 <= the target. `suggest` a point, run its
    policy, `observe` what the run measured. The acquisition is maximised over the space's
    lattice (every distinct policy), not a continuum."""

    def __init__(self, space: PolicySpace, *, seed: int = 0, n_initial: int = 2) -> None:
        self.space = space
        self._rng = np.random.default_rng(seed)
        self._random_state = np.random.RandomState(seed)
        # The largest cap at half and all of the target's wait: with the baseline (no wait) they
        # span the direction energy and p99 change most; space-filling points follow.
        structured = [np.array([1.0, 0.5]), np.array([1.0, 1.0])]
        filling = list(space_filling(max(0, n_initial - 2), 2, seed))
        self._initial = (structured + filling)[:n_initial]
        # Runs are noisy: no exact interpolation (alpha). The p99 model's length scale is bounded
        # below: fitted freely to a few far-apart runs it collapses, its optimistic bound is flat
        # and the lattice's first policy would win every time.
        self._energy = GaussianProcess(ard_kernel(2), alpha=1e-3, restarts=2, seed=seed)
        p99_kernel = Matern(length_scale=0.3, length_scale_bounds=(0.15, 2.0), nu=2.5)
        self._p99 = GaussianProcess(p99_kernel, alpha=1e-3, restarts=2, seed=seed)
        self._points: list[np.ndarray] = []  # every observed point, -energy and log(p99 / target)
        self._gains: list[float] = []
        self._margins: list[float] = []

    def suggest(self) -> np.ndarray:
        """The next point to run: the space-filling ones first, then the model's; until some
        run has met the target (expected improvement needs one to improve on), the policy that
        most plausibly meets it (the lowest optimistic bound, mean - 2 sd, of log(p99 / target))."""
        if self._initial:
            return self._initial.pop(0)
        return propose_constrained(
            self._energy,
            self._p99,
            np.array(self._points),
            np.array(self._gains),
            np.array(self._margins),
            np.zeros((0, 2)),
            self._random_state,
            fixed=self.space.lattice(),
        )

    def random(self) -> np.ndarray:
        return self._rng.uniform(size=2)

    def observe(self, point, energy_per_image_j: float, p99_ms: float) -> None:
        """What the run at `point` measured (a run that failed: the worst energy seen, and a p99
        ten times the target)."""
        self._points.append(np.asarray(point, dtype=float))
        self._gains.append(-energy_per_image_j)
        self._margins.append(math.log(max(p99_ms, 1e-3) / self.space.slo_ms))


def serve_default(target: TargetConfig) -> BatchPolicy:
    """Serve's default policy, what a search's saving is counted against: whatever is
    queued, up to the largest cap searched, no wait."""
    return BatchPolicy("greedy", target.max_batch_size)


def tune_policy(
    run: Callable[[BatchPolicy], dict],
    target: TargetConfig,
    *,
    on_observation: Callable[[TuneResult], None] = lambda result: None,
) -> TuneResult:
    """Search as `target` says, calling `run(policy)` for each live run (it returns the run's
    serve-bench row); `on_observation` sees the result so far after each run."""
    space = PolicySpace(target.max_batch_size, target.slo_ms)
    n_initial = min(3, max(1, (target.runs - 1) // 2))
    search = PolicySearch(space, seed=target.seed, n_initial=n_initial)
    seen: dict[str, Observation] = {}

    def observe(point, policy: BatchPolicy) -> Observation:
        observation = seen.get(str(policy))
        if observation is None:
            observation = seen[str(policy)] = _observation(policy, run(policy), target.slo_ms)
            result.observations.append(observation)
        worst = max(o.energy_per_image_j for o in seen.values() if o.energy_per_image_j is not None)
        energy = observation.energy_per_image_j if observation.energy_per_image_j is not None else worst
        p99 = observation.p99_ms if observation.p99_ms is not None else 10 * target.slo_ms
        search.observe(point, energy, p99)
        result.best = _best(result.observations)
        return observation

    default = serve_default(target)
    result = TuneResult(target.slo_ms, target.frequency, baseline=None, best=None)  # type: ignore[arg-type]
    result.baseline = _observation(default, run(default), target.slo_ms)
    if result.baseline.energy_per_image_j is None:
        raise ValueError("the baseline run measured no energy per image: nothing to minimise")
    seen[str(default)] = result.baseline
    result.observations.append(result.baseline)
    search.observe(space.point(default), result.baseline.energy_per_image_j, result.baseline.p99_ms or 1e9)
    result.best = _best(result.observations)
    on_observation(result)
    repeats = 0
    while result.live_runs < target.runs:
        point = search.suggest()
        policy = space.policy(point)
        if str(policy) in seen:
            repeats += 1
            observe(point, policy)  # the model learns it again, no run spent
            if repeats < REPEATS_BEFORE_RANDOM:
                continue
            point, policy = _unseen(search, space, seen)
        repeats = 0
        observe(point, policy)
        on_observation(result)
    return result


def _unseen(search: PolicySearch, space: PolicySpace, seen: dict) -> tuple[np.ndarray, BatchPolicy]:
    for _ in range(1000):
        point = search.random()
        if str(space.policy(point)) not in seen:
            break
    return point, space.policy(point)


def _observation(policy: BatchPolicy, row: dict, slo_ms: float) -> Observation:
    p99_s = row.get("p99_latency_s")
    p99_ms = None if p99_s is None or (isinstance(p99_s, float) and math.isnan(p99_s)) else p99_s * 1000.0
    ok = row.get("status") == OK
    return Observation(
        policy=str(policy),
        max_batch_size=policy.max_batch_size,
        max_wait_ms=0.0 if policy.kind == "greedy" else float(policy.max_wait_ms or 0.0),
        energy_per_image_j=row.get("energy_per_image_j") if ok else None,
        idle_free_energy_per_image_j=row.get("idle_free_energy_per_image_j") if ok else None,
        p99_ms=p99_ms if ok else None,
        mean_batch_size=row.get("mean_batch_size"),
        meets_slo=ok and p99_ms is not None and p99_ms <= slo_ms,
        run_id=str(row.get("run_id")),
        energy_source=str(row.get("energy_source")),
    )


def _best(observations: list[Observation]) -> Observation | None:
    feasible = [o for o in observations if o.meets_slo and o.energy_per_image_j is not None]
    return min(feasible, key=lambda o: o.energy_per_image_j) if feasible else None
