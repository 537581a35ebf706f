"""Results: one schema (`schema`), a store that writes rows atomically as they arrive (`store`),
and the provenance of every folder (`provenance`)."""

from greenray.results.provenance import run_record, versions
from greenray.results.schema import ENERGY_COLUMNS, FAILED, INDEX, OK, PARQUET_ONLY, STOPPED, TABLES
from greenray.results.store import ResultsError, ResultStore, atomic_write, read_table

__all__ = [
    "ENERGY_COLUMNS",
    "FAILED",
    "INDEX",
    "OK",
    "PARQUET_ONLY",
    "STOPPED",
    "TABLES",
    "ResultStore",
    "ResultsError",
    "atomic_write",
    "read_table",
    "run_record",
    "versions",
]
