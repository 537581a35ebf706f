"""`greenray mutate`: hyperparameters against energy, as Wang et al. ("Can Adjusting
Hyperparameters Lead to Green Deep Learning") measured it. A base configuration and one mutant
per hyperparameter and step (one value changed at a time) are each trained `repetitions`
times, serially or `parallel` trials at once on one GPU (their parallel case), through the
study's own machinery: a round per configuration, one row per trial, resumable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ray

from greenray.config import MutateConfig
from greenray.ray_setup import connect
from greenray.tune.mutation import KIND, MutationSearch, mutation_rows
from greenray.tune.study import StudyRun, start_study


def start_mutation(
    config: MutateConfig, out: Path, *, address: str | None = None, say: Callable[[str], None] = print
) -> StudyRun:
    """Run a mutation study into the empty results folder `out` (resume it with
    greenray.tune.study.resume_study, as any study)."""
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
