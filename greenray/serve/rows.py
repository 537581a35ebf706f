"""The rows one serving run stores: a row per request, per batch, per replica, and the run's own
row (energy summed over its replicas by greenray.energy.combine). Each takes the run's key (its
id, model and RunPlan), the ServedModel it ran on and what it measured (RunResult)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from greenray.config import BatchPolicy
from greenray.energy import co2e_g, combine, sum_or_none
from greenray.results import FAILED, OK, TABLES
from greenray.serve.run import RunPlan, RunResult, ServedModel

log = logging.getLogger("greenray.serve")


@dataclass(frozen=True)
class RunKey:
    """What names one run, and what every row of it repeats."""

    run_id: str
    model: str
    plan: RunPlan

    @property
    def policy(self) -> BatchPolicy:
        return self.plan.policy

    @property
    def frequency_hz(self) -> float:
        return self.plan.frequency_hz


def common(key: RunKey, model: ServedModel) -> dict:
    return {
        "run_id": key.run_id,
        "model": key.model,
        "precision": model.serving.precision,
        "weights": model.infos[0]["weights_source"],
        "image_size": model.infos[0]["image_size"],
        "policy": str(key.policy),
        "frequency_hz": key.frequency_hz,
        "arrival": key.plan.arrival,
        "preprocess_in_window": model.serving.preprocess_in_window,
        "ingress_replicas": model.ingress_replicas,
        "request_path": model.request_path,  # handle: the replica's times; http: a client's
    }


def batch_rows(key: RunKey, model: ServedModel, result: RunResult) -> list[dict]:
    """Every batch the replicas ran during the run or its drain, tagged with its replica."""
    tag = {
        "run_id": key.run_id,
        "model": key.model,
        "policy": str(key.policy),
        "frequency_hz": key.frequency_hz,
    }
    return [
        tag
        | batch
        | {
            "replica": replica,
            "preprocess_in_window": model.serving.preprocess_in_window,
            "co2e_g": co2e_g(batch["energy_j"], model.g_per_kwh),
        }
        for replica, records in enumerate(result.records)
        for batch in records["batches"]
    ]


def request_rows(key: RunKey, result: RunResult) -> list[dict]:
    """Every request as the caller timed it, joined with the replica's times of its batch (the
    replica that took it: round robin without an ingress, the ingress's choice with one)."""
    batches = {(b["replica"], b["batch_id"]): b for b in _tagged_batches(result)}
    taken = {
        request_id: (replica, enqueued, batch_id)
        for replica, records in enumerate(result.records)
        for request_id, (enqueued, batch_id) in records["requests"].items()
    }
    n = len(result.records)
    rows = []
    for timing in result.timings:
        replica, enqueued, batch_id = taken.get(timing.request_id, (timing.request_id % n, None, None))
        batch = batches.get((replica, batch_id), {})
        rows.append(
            {
                "run_id": key.run_id,
                "request_id": timing.request_id,
                "replica": replica,
                "scheduled_s": timing.scheduled_s,
                "submitted_s": timing.submitted_s,
                "completed_s": timing.completed_s,
                "latency_s": timing.latency_s,
                "enqueued_s": enqueued,
                "batch_id": batch_id,
                "batch_started_s": batch.get("started_s"),
                "batch_ended_s": batch.get("ended_s"),
                "queue_wait_s": batch["started_s"] - enqueued if batch else None,
                "served": bool(batch.get("in_run")) and timing.error is None,
                "error": timing.error,
                "request_path": result.request_path,
            }
        )
    return rows


def replica_rows(key: RunKey, model: ServedModel, result: RunResult) -> list[dict]:
    """Each replica's own device energy over the run (the run row is their sum)."""
    base, infos = common(key, model), model.infos
    return [
        base
        | {
            "replica": i,
            "node_id": infos[i]["node_id"],
            "model_device": infos[i]["model_device"],
            "served": end.served,
            "batches": end.batches,
            "idle_w": end.energy.idle_w,
            "overhead_cpu_per_image_ms": overhead_ms(end.cpu_s - end.batch_cpu_s, end.served),
        }
        | end.energy.to_row(model.g_per_kwh)
        for i, end in enumerate(result.ends)
    ]


def run_row(key: RunKey, model: ServedModel, result: RunResult, requests: list[dict]) -> dict:
    """The run's row: energy per image, response times at the caller, batch sizes, the rate kept."""
    infos = model.infos
    served = [r for r in requests if r["served"]]
    latencies = np.array([r["latency_s"] for r in served if r["latency_s"] is not None])
    counted = [b for b in _tagged_batches(result) if b["in_run"]]
    energy = combine([end.energy for end in result.ends])
    total_served = sum(end.served for end in result.ends)
    if total_served != len(served):
        log.warning(
            "run %s: replicas counted %d served, the caller %d", key.run_id, total_served, len(served)
        )
    return (
        common(key, model)
        | {
            "status": FAILED if result.failure else OK,
            "failure": result.failure,
            "started_at": energy.started_at,
            "seed": key.plan.seed,
            "requests": key.plan.requests,
            "served": total_served,
            "submitted": len(result.timings),
            "excluded": len(result.timings) - len(served),
            "failed": result.errors,
            "never_answered": result.still_pending,
            "replicas": len(result.ends),
            "node_id": ",".join(sorted({str(info["node_id"]) for info in infos})),
            "model_device": ",".join(info["model_device"] for info in infos),
            "max_batch_size": key.policy.max_batch_size,
            "max_wait_ms": key.policy.max_wait_ms,
            "energy_per_image_j": _per(energy.joules, total_served),
            "idle_free_energy_per_image_j": _per(energy.idle_free_joules, total_served),
            "max_latency_s": float(latencies.max()) if latencies.size else None,
            "p50_latency_s": float(np.percentile(latencies, 50)) if latencies.size else None,
            "p99_latency_s": float(np.percentile(latencies, 99)) if latencies.size else None,
            "mean_queue_wait_s": _mean([r["queue_wait_s"] for r in served]),
            "achieved_rate_hz": result.send_stats.achieved_rate_hz,
            "scheduled_rate_hz": result.send_stats.scheduled_rate_hz,  # a Poisson draw has its own
            "p99_send_lateness_s": result.send_stats.p99_lateness_s,
            "images_per_s": _per(total_served, energy.seconds),
            "batches": len(counted),
            "mean_batch_size": _mean([b["size"] for b in counted]),
            "idle_w": sum_or_none(end.energy.idle_w for end in result.ends),
            # the model replicas' CPU outside their forward passes, per served image
            "overhead_cpu_per_image_ms": overhead_ms(
                sum(end.cpu_s - end.batch_cpu_s for end in result.ends), total_served
            ),
        }
        | energy.to_row(model.g_per_kwh)
    )


def failed_row(key: RunKey, model: ServedModel, error: str) -> dict:
    """A run that broke off: stored, so the results say it happened, and never counted."""
    return dict.fromkeys(TABLES["runs"]) | {
        "run_id": key.run_id,
        "status": FAILED,
        "failure": error,
        "model": key.model,
        "precision": model.serving.precision,
        "policy": str(key.policy),
        "frequency_hz": key.frequency_hz,
        "arrival": key.plan.arrival,
        "requests": key.plan.requests,
        "energy_source": "none",
    }


def _tagged_batches(result: RunResult) -> list[dict]:
    return [b | {"replica": r} for r, records in enumerate(result.records) for b in records["batches"]]


def overhead_ms(cpu_s: float, served: int) -> float | None:
    """Milliseconds of a model replica's CPU outside its batch windows per served image: what
    Serve's request path, the batch queue and the bookkeeping cost its process."""
    return cpu_s / served * 1000.0 if served else None


def _per(value: float | None, count: float | None) -> float | None:
    return value / count if value is not None and count else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
