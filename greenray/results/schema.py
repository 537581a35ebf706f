"""One schema for every result row: the energy columns every measured row carries, and the
columns each table must have (tables may carry more)."""

from __future__ import annotations

OK, FAILED, STOPPED = "ok", "failed", "stopped"  # a row's `status`
INDEX = "index.json"  # what `greenray run` leaves in its --out folder

# What every measured row carries; greenray.energy.Measurement.to_row() fills them.
ENERGY_COLUMNS = (
    "seconds",
    "energy_j",  # the compute devices' Joules (GPUs, else CPU packages), idle included
    "co2e_g",  # grams of CO2e: energy_j in kWh times the grid intensity given (None without one)
    "idle_free_energy_j",  # the same with the idle baseline factored out
    "cpu_energy_j",  # CPU packages beside GPUs, when RAPL is readable
    "avg_power_w",
    "peak_power_w",
    "energy_source",  # nvml-counter, nvml-power, rapl, simulated or none
    "power_field",  # instant, average, derived or model
    "energy_approximate",  # expected error (uncertainty_j) above 1% of the Joules
    "uncertainty_j",  # about-95% bound on the error of energy_j
    "energy_partial",  # a device stopped answering during the window: energy_j is what was measured
    "peak_power_field",  # what peak_power_w is of: instant samples, or the highest 1 s average
    "energy_note",  # why a window's Joules came from where they did (a counter jump, a lost device)
    "device_shared",  # the device is shared (a MIG instance measured as its whole GPU)
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
        "co2e_g",  # energy_j in kWh times the grid intensity given (None without one)
        "uncertainty_j",  # about-95% bound on the error of energy_j
        "peak_power_w",
        "power_field",  # what the samples are of: instant, average (1 s), model, ...
        "energy_source",
        "in_run",
        "preprocess_in_window",
    ),
}


# A live server's batches (greenray serve: DIR/batches.parquet/, a folder of part files, see
# greenray.results.log): the bench's batch columns, each with the type every part is written in.
SERVED_BATCH_TYPES: dict[str, str] = {
    "run_id": "string",  # the server session
    "replica": "int64",
    "batch_id": "int64",
    "size": "int64",
    "started_s": "float64",
    "ended_s": "float64",
    "compute_s": "float64",
    "queue_wait_max_s": "float64",
    "queue_wait_mean_s": "float64",
    "energy_j": "float64",
    "co2e_g": "float64",
    "idle_free_energy_j": "float64",
    "uncertainty_j": "float64",
    "peak_power_w": "float64",
    "power_field": "string",
    "energy_source": "string",
    "in_run": "bool",
    "preprocess_in_window": "bool",
    "model": "string",
    "policy": "string",
    "node": "string",
}

# What a folder's table must hold to be analysed at all; the rest of its schema (TABLES) only
# feeds some statistics, and a folder that lacks some of it says so and is still read.
NEEDED = {
    "trials": ("strategy", "round", "repetition", "accuracy", "status"),
    "runs": ("run_id", "model", "policy", "frequency_hz", "max_latency_s"),
}

# Tables of one row per request or batch grow to hundreds of thousands of rows in a study:
# Parquet only, since rewriting a CSV of that size after every run would cost minutes.
PARQUET_ONLY = frozenset({"requests", "batches"})

# What a trial's last report adds to its row beside the energy columns.
RESULT_COLUMNS = (
    "accuracy",
    "loss",
    "test_loss",
    "epochs_done",
    "trial_seed",
    "train_device",
    "train_seconds",
    "train_energy_j",
    "train_idle_free_energy_j",
    "images_per_s",
    "node_id",  # Ray's node id: hostnames may repeat across nodes
    "node_ip",  # added to every result by Tune
    "gpu_ids",  # the GPU(s) Ray gave the trial, as Ray numbers them on its node
    "gpu_sharers_max",  # most trials on the trial's GPU at once during its window, itself included
)
EPOCH_COLUMNS = (
    "epoch",
    "accuracy",
    "loss",
    "test_loss",
    "epoch_seconds",
    "epoch_energy_j",
    "epoch_idle_free_energy_j",
    "energy_source",
)
