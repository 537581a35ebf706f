"""One schema for every result row, and a store that writes rows atomically as they arrive
(Parquet for analysis, CSV for eyes), so an interrupted run keeps all it had."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from greenray.errors import UsageError

# What every measured row carries; greenray.energy.Measurement.to_row() fills them.
ENERGY_COLUMNS = (
    "seconds",
    "energy_j",  # the compute devices' Joules (GPUs, else CPU packages), idle included
    "idle_free_energy_j",  # the same with the idle baseline factored out
    "cpu_energy_j",  # CPU packages beside GPUs, when RAPL is readable
    "avg_power_w",
    "peak_power_w",
    "energy_source",  # nvml-counter, nvml-power, rapl, simulated or none
    "power_field",  # instant, average, derived or model
    "energy_approximate",  # window shorter than the counter's resolution allows
    "device",
    "device_name",
    "device_uuid",
    "node",
)

# The columns each table must have; tables may carry more.
TABLES: dict[str, tuple[str, ...]] = {
    # One row per training trial (greenray hpo); the hyperparameters are columns too.
    "trials": (
        "trial_id",
        "strategy",
        "net",
        "dataset",
        "params",
        "n_conv",
        "n_linear",
        "relu",
        "epochs",
        "round",
        "repetition",
        "config",  # the hyperparameters as JSON
        "accuracy",
        "loss",
        "status",  # ok or failed
        "error",
        "gpus_per_trial",
        "gpu_sharers_max",  # most trials on the trial's GPU at once (fractional GPUs share)
        "node_id",  # Ray's node id (the energy columns' `node` is the hostname)
        *ENERGY_COLUMNS,
    ),
    # One row per epoch of a training trial; the epoch window's energy (training only).
    "epochs": ("trial_id", "epoch", "accuracy", "loss", "epoch_seconds", "epoch_energy_j", "energy_source"),
    # One row per serving run (greenray serve-bench); energy summed over the run's replicas.
    "runs": (
        "run_id",
        "status",  # ok or failed
        "model",
        "precision",
        "weights",  # torchvision:IMAGENET1K_V1, random or file:PATH
        "policy",  # fixed:N, fixed:N@MS or greedy[:CAP]
        "frequency_hz",
        "arrival",  # constant, jitter or poisson
        "requests",  # the target: the run ends once this many are served
        "served",  # answered by batches that ended inside the run window (>= requests)
        "excluded",  # sent but not served: drained after the run, or failed
        "replicas",
        "model_device",  # where the model ran, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"
        "preprocess_in_window",  # uint8 -> float and normalisation inside the batch windows
        "energy_per_image_j",  # energy_j / served (idle included, as the study)
        "idle_free_energy_per_image_j",
        "max_latency_s",  # response times at the caller, served requests only
        "p50_latency_s",
        "p99_latency_s",
        "achieved_rate_hz",  # requests sent per second, as measured at the caller
        "mean_batch_size",
        "idle_w",
        "node_id",  # the replicas' Ray node ids, comma-separated
        *ENERGY_COLUMNS,
    ),
    # One row per replica per serving run: its own device's energy (the run row is their sum).
    "replica_runs": (
        "run_id",
        "replica",
        "node_id",
        "model_device",
        "served",
        "batches",
        "idle_w",
        *ENERGY_COLUMNS,
    ),
    # One row per request; *_s are Unix seconds: submitted/completed/latency on the caller's
    # clock, enqueued/batch_* on the replica's.
    "requests": (
        "run_id",
        "request_id",
        "replica",
        "scheduled_s",
        "submitted_s",
        "completed_s",
        "latency_s",
        "enqueued_s",
        "batch_id",
        "batch_started_s",
        "batch_ended_s",
        "queue_wait_s",
        "served",
        "error",
    ),
    # One row per batch a replica ran during or right after (drain) a serving run.
    "batches": (
        "run_id",
        "replica",
        "batch_id",
        "size",
        "started_s",
        "ended_s",
        "compute_s",
        "queue_wait_max_s",
        "queue_wait_mean_s",
        "energy_j",  # integrated from power samples: approximate for short batches
        "peak_power_w",
        "energy_source",
        "in_run",
        "preprocess_in_window",
    ),
}


# Tables of one row per request or batch grow to hundreds of thousands of rows in a study:
# Parquet only, since rewriting a CSV of that size after every run would cost minutes.
PARQUET_ONLY = frozenset({"requests", "batches"})


class ResultsError(UsageError):
    """A results folder that cannot give what was asked of it."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), flush it to disk, then move it over `path` in one step."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ResultStore:
    """A results folder: DIR/<table>.parquet and DIR/<table>.csv, plus JSON side files
    (the run's settings, the idle baseline). Rows are appended, never rewritten."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list[dict]] = {}

    def path(self, table: str, suffix: str = "parquet") -> Path:
        return self.root / f"{table}.{suffix}"

    def append(self, table: str, rows: list[dict]) -> None:
        """Add rows and rewrite the table's files atomically (a reader never sees half a file)."""
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}")
        for row in rows:
            missing = [c for c in TABLES[table] if c not in row]
            if missing:
                raise KeyError(f"a {table} row lacks {', '.join(missing)}")
        held = self._held(table)
        held.extend(rows)
        frame = pd.DataFrame(held)
        atomic_write(self.path(table), lambda p: frame.to_parquet(p, index=False))
        if table not in PARQUET_ONLY:
            atomic_write(self.path(table, "csv"), lambda p: frame.to_csv(p, index=False))

    def read(self, table: str) -> pd.DataFrame:
        path = self.path(table)
        if not path.exists():
            return pd.DataFrame(columns=list(TABLES.get(table, ())))
        return pd.read_parquet(path)

    def write_json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, default=str)
        atomic_write(self.root / f"{name}.json", lambda p: p.write_text(text + "\n"))

    def read_json(self, name: str) -> dict | None:
        path = self.root / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _held(self, table: str) -> list[dict]:
        if table not in self._rows:
            existing = self.read(table)
            self._rows[table] = existing.to_dict("records") if len(existing) else []
        return self._rows[table]


def read_table(root: str | Path, table: str, required: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A stored table, or one sentence saying why it cannot be had."""
    path = Path(root) / f"{table}.parquet"
    if not path.exists():
        raise ResultsError(f"{root} has no {table}.parquet: it is not a greenray results folder of that kind")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ResultsError(f"{path} cannot be read ({exc.__class__.__name__}): it is damaged") from exc
    missing = [c for c in (required if required is not None else TABLES[table]) if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks the column(s) {', '.join(missing)}, so it cannot be analysed")
    return frame
