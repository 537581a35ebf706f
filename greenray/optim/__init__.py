"""greenray's one Bayesian-optimisation core (greenray.optim.bo) and its acquisition functions
(greenray.optim.acquisition), used by the Tune searcher (greenray.tune.searchers.PIBayesSearch)
and the serving policy search (greenray.serve.policy_tuner.PolicySearch). numpy, scipy and
scikit-learn only: no Ray, no torch."""
