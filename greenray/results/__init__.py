"""Results: one schema (`schema`), a store that writes rows atomically as they arrive (`store`),
a table a long-running server appends to at a bounded cost (`log`), and the provenance of every
folder (`provenance`)."""

from greenray.results.lock import FolderBusy, folder_lock
from greenray.results.log import TableLog
from greenray.results.provenance import run_record, versions
from greenray.results.schema import (
    ENERGY_COLUMNS,
    FAILED,
    INDEX,
    OK,
    PARQUET_ONLY,
    SERVED_BATCH_TYPES,
    STOPPED,
    TABLES,
)
from greenray.results.store import ResultsError, ResultStore, UnwritableError, atomic_write, read_table

__all__ = [
    "ENERGY_COLUMNS",
    "FAILED",
    "FolderBusy",
    "INDEX",
    "OK",
    "PARQUET_ONLY",
    "SERVED_BATCH_TYPES",
    "STOPPED",
    "TABLES",
    "TableLog",
    "ResultStore",
    "ResultsError",
    "UnwritableError",
    "atomic_write",
    "folder_lock",
    "read_table",
    "run_record",
    "versions",
]
