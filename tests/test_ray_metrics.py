"""Energy in Ray's own metrics: a with_energy trial's and a measure_batches replica's Joules and
Watts reach Ray's Prometheus export (the session Ray's metrics agent, at the port Ray reports for
its node), tagged as a user filters them; the Grafana dashboard in docs/ queries only those."""

import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ray import cloudpickle, serve, tune

from greenray.ray_metrics import METRICS, PREFIX, exported_names
from greenray.serve import measure_batches
from greenray.tune import with_energy

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "greenray.json"
DEADLINE_S = 240  # Ray's agent flushes every few seconds; a loaded machine may take far longer
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/


def test_the_dashboard_parses_and_queries_only_what_greenray_exports():
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    named = {name for expr in exprs for name in re.findall(r"\b\w*greenray_\w+", expr)}
    assert named and named <= exported_names(), named - exported_names()
    titles = " / ".join(panel["title"] for panel in board["panels"])
    for wanted in ("Joules per trial", "Watts per device", "Joules per image per deployment"):
        assert wanted in titles
    assert all(name.startswith("greenray_") for name in METRICS)


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.25})
class Squarer:
    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    @measure_batches(energy="simulated")
    async def square(self, xs: list[float]) -> list[float]:
        time.sleep(0.02)
        return [x * x for x in xs]

    async def __call__(self, x: float) -> float:
        return await self.square(x)


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """greenray's samples in a Prometheus text page: (name, labels, value)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = []
    for line in text.splitlines():
        match = re.match(r"^(ray_greenray_\w+)\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def watching_trial(config):
    """A trial that keeps reporting (so it is running) until Ray's export shows both its own
    energy and the replica's, or the deadline; it reports what it saw."""
    trial_id = tune.get_context().get_trial_id()
    deadline = time.monotonic() + config["deadline_s"]
    seen: dict = {}
    while time.monotonic() < deadline:
        time.sleep(0.5)
        tune.report({"waiting": 1})
        try:
            samples = scrape(config["url"])
        except OSError:
            continue
        for name, labels, value in samples:
            if name.startswith(PREFIX + "greenray_trial_energy_joules") and labels.get("trial") == trial_id:
                seen["trial"] = {"name": name, "labels": labels, "value": value}
            if (
                name.startswith(PREFIX + "greenray_replica_energy_joules")
                and labels.get("deployment") == "Squarer"
            ):
                seen["replica"] = {"name": name, "labels": labels, "value": value}
        if "trial" in seen and "replica" in seen:
            break
    tune.report({"seen": json.dumps(seen), "trial_id": trial_id})


@pytest.fixture(scope="module")
def squarer(ray_local):
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    handle = serve.run(Squarer.bind(), name="squarer", route_prefix=None)
    yield handle
    serve.delete("squarer")
    serve.shutdown()


def test_a_running_trial_and_replica_show_their_joules_in_rays_prometheus_export(
    ray_local, squarer, tmp_path
):
    import ray

    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    assert [squarer.remote(float(i)).result() for i in range(8)] == [float(i * i) for i in range(8)]
    tuner = tune.Tuner(
        tune.with_resources(with_energy(watching_trial, energy="simulated"), {"cpu": 1}),
        param_space={"url": f"http://127.0.0.1:{port}/metrics", "deadline_s": DEADLINE_S},
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    (result,) = tuner.fit()
    seen = json.loads(result.metrics["seen"])
    assert "trial" in seen and "replica" in seen, seen
    trial, replica = seen["trial"], seen["replica"]
    assert {trial["name"], replica["name"]} <= exported_names()
    assert trial["value"] > 0 and replica["value"] > 0
    assert trial["labels"]["experiment"] and trial["labels"]["energy_source"] == "simulated"
    assert trial["labels"]["device"] == "sim:0" and trial["labels"]["node"]
    assert replica["labels"]["replica"] and replica["labels"]["energy_source"] == "simulated"
    assert replica["labels"]["device"] == "sim:0" and replica["labels"]["node"]
