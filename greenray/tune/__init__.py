"""greenray on Ray Tune: energy for any function trainable (`with_energy`), the study's three
searchers (usable in any Tuner, energy keys included as their metric, PI-Bayes also over an
accuracy / energy front), green levers as Tune stoppers (an energy budget, patience, a target
accuracy), the Adam search spaces, and the training study built on them.

The public names load on first use, so that `greenray.tune.keys` or `.space` can be imported
without Ray Tune's searchers."""

from __future__ import annotations

from greenray.lazy import exports

_PUBLIC = {
    "with_energy": "greenray.tune.measure",
    "trial_meter": "greenray.tune.measure",
    "trial_energy": "greenray.tune.measure",
    "ENERGY_KEYS": "greenray.tune.measure",
    "PartialGridSearch": "greenray.tune.searchers",
    "RandomSearch": "greenray.tune.searchers",
    "PIBayesSearch": "greenray.tune.searchers",
    "EnergyBudgetStopper": "greenray.tune.stoppers",
    "PatienceStopper": "greenray.tune.stoppers",
    "TargetAccuracyStopper": "greenray.tune.stoppers",
    "RoundRepeater": "greenray.tune.rounds",
    "adam_space": "greenray.tune.space",
    "baseline_by_node": "greenray.tune.cluster",
    "measure_cluster": "greenray.tune.cluster",
}

__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
