"""A live server's numbers in Prometheus' text format: what each ingress replica counted
(requests by status code, errors, 503s, response times), and what each model replica measured
(batches and their sizes, images, and per device the Joules since it started, idle included, and
the recent power). Ingress replicas count locally (`IngressStats`), a model replica answers its
`replica_stats`; `render` turns both into one page, every family declared once in FAMILIES."""

from __future__ import annotations

import bisect
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from greenray.energy import combined_source

# Upper bounds (seconds) of the response-time histogram of served requests.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Why a request was refused, by HTTP status (greenray_request_errors_total's `reason`).
REASONS = {400: "bad_image", 413: "too_large", 415: "content_type", 500: "server", 503: "overload"}
# Batch-size buckets of the /metrics histogram (upper bounds, images).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


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


def replica_stats(replica: int, model: str, totals, policy, devices: Iterable) -> dict:
    """What /metrics shows of one model replica (its `stats` answer): its batches, images and
    batch sizes from its ledger's totals (greenray.serve.ledger.BatchTotals), the policy in
    force (a BatchPolicy), and each device's energy since the replica started, idle included,
    with its recent power (greenray.energy.DeviceTotal)."""
    sizes = [0] * (len(BATCH_BUCKETS) + 1)
    for size, count in totals.sizes.items():
        sizes[bisect.bisect_left(BATCH_BUCKETS, size)] += count
    return {
        "replica": str(replica),
        "model": model,
        "node": socket.gethostname(),
        "batches": totals.batches,
        "images": totals.items,
        "compute_s": totals.seconds,
        "batch_energy_j": totals.energy_j,
        "batch_energy_source": combined_source(totals.sources) if totals.batches else "none",
        "batch_buckets": list(BATCH_BUCKETS),
        "batch_size_counts": sizes,
        "max_batch_size": policy.max_batch_size,
        "batch_wait_timeout_s": policy.batch_wait_timeout_s,
        "devices": [asdict(device) for device in devices],
    }


def render(ingress: Iterable[dict], replicas: Iterable[dict | BaseException]) -> str:
    """The /metrics page from ingress snapshots and model replicas' `stats` (an exception
    stands for a replica that did not answer: it shows as greenray_replica_up 0)."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(ingress), list(replicas)))
    return generate_latest(registry).decode()


@dataclass(frozen=True)
class _Family:
    kind: str  # counter, gauge or histogram
    name: str
    help: str
    labels: tuple[str, ...]

    def make(self):
        from prometheus_client import core

        kinds = {
            "counter": core.CounterMetricFamily,
            "gauge": core.GaugeMetricFamily,
            "histogram": core.HistogramMetricFamily,
        }
        return kinds[self.kind](self.name, self.help, labels=list(self.labels))


_ING, _REP, _DEV = ("ingress",), ("replica",), ("replica", "node", "device", "energy_source")
FAMILIES = {  # every family on the page, in its order, by the key its samples name
    "requests": _Family(
        "counter",
        "greenray_requests",
        "POST /predict requests answered, by HTTP status code",
        (*_ING, "code"),
    ),
    "errors": _Family(
        "counter",
        "greenray_request_errors",
        "POST /predict requests refused (4xx) or failed (5xx), by reason",
        (*_ING, "reason"),
    ),
    "rejected": _Family(
        "counter", "greenray_rejected_requests", "requests answered 503 because the queue was full", _ING
    ),
    "inflight": _Family(
        "gauge", "greenray_inflight_requests", "requests admitted and not answered yet", _ING
    ),
    "limit": _Family(
        "gauge", "greenray_queue_limit", "admitted requests an ingress replica holds at most", _ING
    ),
    "latency": _Family(
        "histogram",
        "greenray_request_duration_seconds",
        "response time of served (200) requests in the ingress replica, seconds",
        _ING,
    ),
    "up": _Family("gauge", "greenray_replica_up", "1 when the model replica answered this scrape", _REP),
    "batches": _Family("counter", "greenray_batches", "batches the model replica ran", (*_REP, "model")),
    "images": _Family("counter", "greenray_images", "images the model replica classified", (*_REP, "model")),
    "sizes": _Family("histogram", "greenray_batch_size", "images per batch", (*_REP, "model")),
    "compute": _Family(
        "counter", "greenray_batch_compute_seconds", "seconds inside batch windows (forward and argmax)", _REP
    ),
    "batch_energy": _Family(
        "counter",
        "greenray_batch_energy_joules",
        "Joules inside batch windows (what the answers' energy_j add up to)",
        (*_REP, "energy_source"),
    ),
    "energy": _Family(
        "counter",
        "greenray_energy_joules",
        "Joules of the replica's device since the replica started, idle included",
        _DEV,
    ),
    "power": _Family(
        "gauge",
        "greenray_power_watts",
        "mean power of the replica's device over its last few seconds, Watts",
        _DEV,
    ),
    "cap": _Family("gauge", "greenray_policy_max_batch_size", "the batch cap in force", _REP),
    "wait": _Family(
        "gauge", "greenray_policy_batch_wait_timeout_seconds", "the longest a partial batch waits", _REP
    ),
}


class _Families:
    """A prometheus_client collector over one set of snapshots: every sample is (family key,
    label values, value), and each family of FAMILIES takes its own."""

    def __init__(self, ingress: list[dict], replicas: list[dict | BaseException]) -> None:
        self.ingress, self.replicas = ingress, replicas

    def collect(self) -> Iterator:
        built = {key: family.make() for key, family in FAMILIES.items()}
        for key, labels, value in self._samples():
            if FAMILIES[key].kind == "histogram":
                buckets, total = value
                built[key].add_metric(labels, buckets, sum_value=total)
            else:
                built[key].add_metric(labels, value)
        yield from built.values()

    def _samples(self) -> Iterator[tuple[str, list[str], object]]:
        for snap in self.ingress:
            yield from _ingress_samples(snap)
        for index, stats in enumerate(self.replicas):
            if isinstance(stats, BaseException):
                yield "up", [str(index)], 0
            else:
                yield from _replica_samples(stats)


def _cumulative(bounds: Iterable[str], counts: Iterable[int]) -> list[tuple[str, int]]:
    cumulative, running = [], 0
    for bound, count in zip([*bounds, "+Inf"], counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return cumulative


def _ingress_samples(snap: dict) -> Iterator[tuple[str, list[str], object]]:
    name = snap["ingress"]
    for code, count in sorted(snap["codes"].items()):
        yield "requests", [name, code], count
        if int(code) >= 400:
            yield "errors", [name, REASONS.get(int(code), code)], count
    yield "rejected", [name], snap["codes"].get("503", 0)
    yield "inflight", [name], snap["inflight"]
    if snap["limit"] is not None:
        yield "limit", [name], snap["limit"]
    buckets = _cumulative((f"{b:g}" for b in LATENCY_BUCKETS_S), snap["latency_counts"])
    yield "latency", [name], (buckets, snap["latency_sum_s"])


def _replica_samples(stats: dict) -> Iterator[tuple[str, list[str], object]]:
    replica, model = stats["replica"], stats["model"]
    yield "up", [replica], 1
    yield "batches", [replica, model], stats["batches"]
    yield "images", [replica, model], stats["images"]
    buckets = _cumulative((str(b) for b in stats["batch_buckets"]), stats["batch_size_counts"])
    yield "sizes", [replica, model], (buckets, stats["images"])
    yield "compute", [replica], stats["compute_s"]
    if stats["batch_energy_j"] is not None and stats["batches"]:
        yield "batch_energy", [replica, stats["batch_energy_source"]], stats["batch_energy_j"]
    for device in stats["devices"]:
        labels = [replica, stats["node"], device["device"], device["energy_source"]]
        if device["energy_j"] is not None:
            yield "energy", labels, device["energy_j"]
        if device["power_w"] is not None:
            yield "power", labels, device["power_w"]
    yield "cap", [replica], stats["max_batch_size"]
    yield "wait", [replica], min(stats["batch_wait_timeout_s"], 1e9)
