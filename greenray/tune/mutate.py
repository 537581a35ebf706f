"""`greenray mutate`: hyperparameters against energy, as Wang et al. ("Can Adjusting
Hyperparameters Lead to Green Deep Learning") measured it. A base configuration and one mutant
per hyperparameter and step (one value changed at a time) are each trained `repetitions`
times, serially or `parallel` trials at once on one GPU (their parallel case), through the
study's own machinery: a round per configuration, one row per trial, resumable."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

from ray.tune.search import Searcher

from greenray.config import MutateConfig, StudyConfig
from greenray.tune.study import METRIC, MODE, StudyRun, start_study

KIND = "mutate"  # study.json's kind
STRATEGY = "mutate"  # the rows' strategy column


class MutationSearch(Searcher):
    """Hands out a fixed list of configurations in order, then FINISHED (a Searcher so that
    Tune's RoundRepeater, ConcurrencyLimiter and Tuner.restore work as in any study)."""

    def __init__(self, configurations: list[dict], metric: str = METRIC, mode: str = MODE) -> None:
        super().__init__(metric=metric, mode=mode)
        self.configurations = [dict(c) for c in configurations]
        self.next = 0

    def suggest(self, trial_id: str) -> dict | str:
        if self.next >= len(self.configurations):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.configurations[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the list is fixed

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"configurations": self.configurations, "next": self.next}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


def mutation_rows(config: MutateConfig, study: StudyConfig) -> dict:
    """The columns every row of a mutation study carries."""
    return study.row_fields() | {"strategy": STRATEGY, "parallel": config.mutation.parallel}


def mutation_parts(record: dict, study: StudyConfig) -> tuple[Searcher, dict]:
    """The searcher and row columns of the mutation study a study.json describes."""
    config = MutateConfig.checked(record["mutation"])
    return MutationSearch(config.configurations()), mutation_rows(config, study)


def start_mutation(
    config: MutateConfig, out: Path, *, address: str | None = None, say: Callable[[str], None] = print
) -> StudyRun:
    """Run a mutation study into the empty results folder `out` (resume it with
    greenray.tune.study.resume_study, as any study)."""
    import ray

    from greenray.ray_setup import connect

    connect(address)
    study = config.study(gpus=ray.cluster_resources().get("GPU", 0) > 0)
    configurations = config.configurations()
    at_once = config.mutation.parallel
    say(f"mutate: {len(configurations)} configurations (the base and its mutants), {at_once} at once")
    return start_study(
        study,
        out,
        address=address,
        say=say,
        searcher=MutationSearch(configurations),
        kind=KIND,
        row_fields=mutation_rows(config, study),
        record_extra={"mutation": config.model_dump(mode="json")},
    )
