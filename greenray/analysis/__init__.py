"""Statistics, tables and figures from stored greenray results (hpo and serve-bench folders);
nothing here runs a model."""
