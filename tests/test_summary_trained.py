"""The hpo summary says what trained and what was optimised: a searched beta1 of 1 shows as the
0.999 Adam trained with (the searched value beside it), and the objective is named."""

import pandas as pd

from greenray.analysis.summary import describe, summarize
from greenray.tune.space import BETA_MAX, as_trained


def _trials(config: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "status": ["ok"],
            "round": [0],
            "repetition": [0],
            "strategy": ["bayes"],
            "accuracy": [0.9],
            "config": [config],
            "energy_j": [10.0],
            "energy_source": ["simulated"],
        }
    )


def test_as_trained_caps_adams_betas_and_rounds_a_searched_batch():
    trained = as_trained({"lr": 0.01, "beta1": 1.0, "beta2": 0.95, "batch_size": 100.0})
    assert trained == {"lr": 0.01, "beta1": BETA_MAX, "beta2": 0.95, "batch_size": 128}


def test_the_summary_shows_the_trained_beta_and_the_searched_one_beside_it():
    summary = summarize(_trials('{"beta1": 1.0, "beta2": 0.99, "lr": 0.001}'), 1, trained=as_trained)
    line = next(line for line in describe(summary) if line.startswith("best configuration"))
    assert line == "best configuration (as trained): beta1=0.999 (searched 1), beta2=0.99, lr=0.001"


def test_a_configuration_that_trained_as_searched_is_shown_once():
    summary = summarize(_trials('{"beta1": 0.5, "lr": 0.001}'), 1, trained=as_trained)
    assert "best configuration: beta1=0.5, lr=0.001" in describe(summary)


def test_the_summary_names_the_objective_the_search_optimised():
    lines = describe(summarize(_trials('{"lr": 0.001}'), 1, objective="accuracy-per-kj"))
    assert any(line.startswith("objective: accuracy per kJ") for line in lines)
    assert not any(line.startswith("objective") for line in describe(summarize(_trials('{"lr": 0.001}'), 1)))
