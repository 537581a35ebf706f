"""Energy in Ray's own metrics: what `with_energy` trials and `measure_batches` replicas measure,
exported through Ray's metrics agent (`ray.util.metrics`; in a Serve replica `ray.serve.metrics`,
which adds the deployment, replica and application tags), so it reaches Ray's Prometheus export
and the dashboards built on it while the work runs, with no server of greenray's.

Ray's Prometheus export puts `ray_` before each name and `_total` after a counter's:
greenray_trial_energy_joules is scraped as ray_greenray_trial_energy_joules_total
(docs/grafana/greenray.json queries those names)."""

from __future__ import annotations

import importlib
import logging
import socket
from typing import Any

log = logging.getLogger("greenray.metrics")

PREFIX = "ray_"  # what Ray's Prometheus export adds before an application metric's name
TRIAL_TAGS = ("experiment", "trial", "node", "device", "energy_source")
REPLICA_TAGS = ("node", "device", "energy_source")  # Serve adds deployment, replica, application
# Every metric greenray exports through Ray: name -> (kind, description).
METRICS = {
    "greenray_trial_energy_joules": ("counter", "Joules a Tune trial's devices spent, idle included"),
    "greenray_trial_power_watts": ("gauge", "A Tune trial's devices' average Watts since its last report"),
    "greenray_replica_energy_joules": ("counter", "Joules a Serve replica's device spent in batches"),
    "greenray_replica_items": ("counter", "Items (images) a Serve replica's measured batches held"),
    "greenray_replica_power_watts": ("gauge", "A Serve replica's device's mean Watts in its latest batches"),
}


def exported_names() -> set[str]:
    """The names Ray's Prometheus export gives greenray's metrics: `ray_` before each, and
    `_total` after a counter's (OpenTelemetry's Prometheus convention, as Ray 2.60 exports)."""
    return {PREFIX + name + ("_total" if kind == "counter" else "") for name, (kind, _) in METRICS.items()}


class TrialMetrics:
    """A with_energy trial's Joules (a counter) and Watts (a gauge), tagged with its experiment,
    trial, node, device and energy source; `record` takes the trial's running totals."""

    def __init__(self) -> None:
        self._joules = 0.0  # what the counter holds for this trial
        self._tags: dict[str, str] | None = None

    def record(self, row: dict[str, Any]) -> None:
        metrics = _trial_metrics()
        if metrics is None:
            return
        counter, gauge = metrics
        if self._tags is None:
            self._tags = _trial_tags() | _device_tags(row)
        joules = row.get("energy_j")
        if joules is not None and joules > self._joules:
            counter.inc(joules - self._joules, tags=self._tags)
            self._joules = joules
        if row.get("avg_power_w") is not None:
            gauge.set(row["avg_power_w"], tags=self._tags)


def record_batch(energy_j: float | None, seconds: float, size: int, source: str, device: str) -> None:
    """One measured batch of a Serve replica (or any actor running measure_batches)."""
    metrics = _replica_metrics()
    if metrics is None or energy_j is None:
        return
    joules, items, power = metrics
    tags = {"node": socket.gethostname(), "device": device or "none", "energy_source": source}
    joules.inc(energy_j, tags=tags)
    if size:
        items.inc(size, tags=tags)
    if seconds > 0:
        power.set(energy_j / seconds, tags=tags)


def _device_tags(row: dict[str, Any]) -> dict[str, str]:
    return {
        "node": str(row.get("node") or socket.gethostname()),
        "device": str(row.get("device") or "none"),
        "energy_source": str(row.get("energy_source") or "none"),
    }


def _trial_tags() -> dict[str, str]:
    from ray import tune

    context = tune.get_context()
    return {"experiment": str(context.get_experiment_name()), "trial": str(context.get_trial_id())}


def _trial_metrics():
    """The trial counter and gauge of this process, or None outside Ray."""
    names = ("greenray_trial_energy_joules", "greenray_trial_power_watts")
    return _made("ray.util.metrics", names, TRIAL_TAGS)


def _replica_metrics():
    """The replica counters and gauge of this process (Serve's own tags where it is a replica)."""
    names = ("greenray_replica_energy_joules", "greenray_replica_items", "greenray_replica_power_watts")
    return _made("ray.serve.metrics", names, REPLICA_TAGS)


_made_here: dict[str, tuple | None] = {}  # module -> its metrics in this process (None: refused)


def _made(module_name: str, names: tuple[str, ...], tags: tuple[str, ...]) -> tuple | None:
    """The metrics `names` from `module_name`, made once per process once Ray is up; None
    outside Ray, or where Ray refused them (said once: the work goes on without them)."""
    if module_name in _made_here:
        return _made_here[module_name]
    import ray

    if not ray.is_initialized():
        return None
    try:
        module = importlib.import_module(module_name)
        made = tuple(_metric(module, name, tags) for name in names)
    except Exception as exc:  # a metrics agent that cannot take them must not stop the work
        log.warning("greenray's energy metrics are not exported to Ray (%s)", exc)
        made = None
    _made_here[module_name] = made
    return made


def _metric(module, name: str, tags: tuple[str, ...]):
    kind, description = METRICS[name]
    cls = module.Counter if kind == "counter" else module.Gauge
    return cls(name, description=description, tag_keys=tags)
