"""The training study on Ray Tune: search spaces, searchers, the trainable and the study."""
