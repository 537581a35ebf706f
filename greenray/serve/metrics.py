"""A live server's numbers in Prometheus' text format: what each ingress replica counted
(requests by status code, errors, 503s, response times), and what each model replica measured
(batches and their sizes, images, and per device the Joules since it started, idle included, and
the recent power). Ingress replicas count locally (`IngressStats`); `render` turns their snapshots
and the model replicas' `stats` into one page."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Upper bounds (seconds) of the response-time histogram of served requests.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Why a request was refused, by HTTP status (greenray_request_errors_total's `reason`).
REASONS = {400: "bad_image", 413: "too_large", 415: "content_type", 500: "server", 503: "overload"}


@dataclass
class IngressStats:
    """One ingress replica's counts since it started (POST /predict only)."""

    ingress: str  # the replica's id
    limit: int | None = None  # admitted requests it holds at most (its share of --max-queue)
    codes: Counter = field(default_factory=Counter)  # status code -> requests answered
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    inflight: int = 0  # admitted and not answered yet

    def observe(self, code: int, seconds: float) -> None:
        """One answered request: its status code, and for a 200 its response time."""
        self.codes[code] += 1
        if code == 200:
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            self.latency_sum_s += seconds

    def snapshot(self) -> dict:
        return {
            "ingress": self.ingress,
            "limit": self.limit,
            "codes": {str(code): n for code, n in self.codes.items()},
            "latency_counts": list(self.latency_counts),
            "latency_sum_s": self.latency_sum_s,
            "inflight": self.inflight,
        }


def render(ingress: Iterable[dict], replicas: Iterable[dict | BaseException]) -> str:
    """The /metrics page from ingress snapshots and model replicas' `stats` (an exception
    stands for a replica that did not answer: it shows as greenray_replica_up 0)."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(ingress), list(replicas)))
    return generate_latest(registry).decode()


class _Families:
    """A prometheus_client collector over one set of snapshots."""

    def __init__(self, ingress: list[dict], replicas: list[dict | BaseException]) -> None:
        self.ingress, self.replicas = ingress, replicas

    def collect(self) -> Iterator:
        yield from _ingress_families(self.ingress)
        yield from _replica_families(self.replicas)


def _ingress_families(snapshots: list[dict]) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily(
        "greenray_requests",
        "POST /predict requests answered, by HTTP status code",
        labels=["ingress", "code"],
    )
    errors = CounterMetricFamily(
        "greenray_request_errors",
        "POST /predict requests refused (4xx) or failed (5xx), by reason",
        labels=["ingress", "reason"],
    )
    rejected = CounterMetricFamily(
        "greenray_rejected_requests", "requests answered 503 because the queue was full", labels=["ingress"]
    )
    inflight = GaugeMetricFamily(
        "greenray_inflight_requests", "requests admitted and not answered yet", labels=["ingress"]
    )
    limit = GaugeMetricFamily(
        "greenray_queue_limit", "admitted requests an ingress replica holds at most", labels=["ingress"]
    )
    latency = HistogramMetricFamily(
        "greenray_request_duration_seconds",
        "response time of served (200) requests in the ingress replica, seconds",
        labels=["ingress"],
    )
    for snap in snapshots:
        name = snap["ingress"]
        for code, count in sorted(snap["codes"].items()):
            requests.add_metric([name, code], count)
            if int(code) >= 400:
                errors.add_metric([name, REASONS.get(int(code), code)], count)
        rejected.add_metric([name], snap["codes"].get("503", 0))
        inflight.add_metric([name], snap["inflight"])
        if snap["limit"] is not None:
            limit.add_metric([name], snap["limit"])
        bounds = [*(f"{b:g}" for b in LATENCY_BUCKETS_S), "+Inf"]
        cumulative, running = [], 0
        for bound, count in zip(bounds, snap["latency_counts"], strict=True):
            running += count
            cumulative.append((bound, running))
        latency.add_metric([name], cumulative, sum_value=snap["latency_sum_s"])
    yield from (requests, errors, rejected, inflight, limit, latency)


def _replica_families(replicas: list[dict | BaseException]) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    up = GaugeMetricFamily(
        "greenray_replica_up", "1 when the model replica answered this scrape", labels=["replica"]
    )
    batches = CounterMetricFamily(
        "greenray_batches", "batches the model replica ran", labels=["replica", "model"]
    )
    images = CounterMetricFamily(
        "greenray_images", "images the model replica classified", labels=["replica", "model"]
    )
    sizes = HistogramMetricFamily("greenray_batch_size", "images per batch", labels=["replica", "model"])
    compute = CounterMetricFamily(
        "greenray_batch_compute_seconds",
        "seconds inside batch windows (forward and argmax)",
        labels=["replica"],
    )
    batch_energy = CounterMetricFamily(
        "greenray_batch_energy_joules",
        "Joules inside batch windows (what the answers' energy_j add up to)",
        labels=["replica", "energy_source"],
    )
    energy = CounterMetricFamily(
        "greenray_energy_joules",
        "Joules of the replica's device since the replica started, idle included",
        labels=["replica", "node", "device", "energy_source"],
    )
    power = GaugeMetricFamily(
        "greenray_power_watts",
        "mean power of the replica's device over its last few seconds, Watts",
        labels=["replica", "node", "device", "energy_source"],
    )
    cap = GaugeMetricFamily("greenray_policy_max_batch_size", "the batch cap in force", labels=["replica"])
    wait = GaugeMetricFamily(
        "greenray_policy_batch_wait_timeout_seconds", "the longest a partial batch waits", labels=["replica"]
    )
    for index, stats in enumerate(replicas):
        if isinstance(stats, BaseException):
            up.add_metric([str(index)], 0)
            continue
        replica, model = stats["replica"], stats["model"]
        up.add_metric([replica], 1)
        batches.add_metric([replica, model], stats["batches"])
        images.add_metric([replica, model], stats["images"])
        bounds = [*(str(b) for b in stats["batch_buckets"]), "+Inf"]
        cumulative, running = [], 0
        for bound, count in zip(bounds, stats["batch_size_counts"], strict=True):
            running += count
            cumulative.append((bound, running))
        sizes.add_metric([replica, model], cumulative, sum_value=stats["images"])
        compute.add_metric([replica], stats["compute_s"])
        if stats["batch_energy_j"] is not None and stats["batches"]:
            batch_energy.add_metric([replica, stats["batch_energy_source"]], stats["batch_energy_j"])
        for device in stats["devices"]:
            labels = [replica, stats["node"], device["device"], device["energy_source"]]
            if device["energy_j"] is not None:
                energy.add_metric(labels, device["energy_j"])
            if device["power_w"] is not None:
                power.add_metric(labels, device["power_w"])
        cap.add_metric([replica], stats["max_batch_size"])
        wait.add_metric([replica], min(stats["batch_wait_timeout_s"], 1e9))
    yield from (up, batches, images, sizes, compute, batch_energy, energy, power, cap, wait)
