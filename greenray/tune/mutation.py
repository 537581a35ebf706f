"""The searcher and row columns of a mutation study (`greenray mutate`, greenray.tune.mutate): a
fixed list of configurations handed out in order. Apart from greenray.tune.mutate so that
greenray.tune.study can resume a mutation study without importing what starts one."""

from __future__ import annotations

import pickle

from ray.tune.search import Searcher

from greenray.config import MutateConfig, StudyConfig
from greenray.tune.objectives import METRIC, MODE

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
