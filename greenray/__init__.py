"""greenray: energy as a first-class number in hyperparameter search and batched inference,
on Ray Tune and Ray Serve."""

__version__ = "0.1.0"
