"""Scale-out on a local multi-node Ray cluster (ray.cluster_utils.Cluster): two worker nodes
with one fake GPU each and the simulated energy backend. Trials and replicas must land on every
node, every row must name its node, energies must add up, and losing a node mid-study must
lose no result. The module stops the session's Ray for a cluster of its own and starts it again
after."""

import io
import threading
import time

import pandas as pd
import pytest

from greenray.config import BenchConfig, StudyConfig
from greenray.results import ResultStore
from greenray.tune.study import start_study

# A multi-node Ray cluster of its own: minutes on two cores, so CI leaves it out (README: pytest -m slow).
pytestmark = pytest.mark.slow

WORKERS = 2  # each node is a raylet and its workers: two keep this module to the two cores


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs (the driver's node, as in cluster.yaml) and two 1-CPU, 1-GPU
    workers. The session's local Ray is stopped first and started again after."""
    import ray
    from ray.cluster_utils import Cluster

    from greenray.ray_setup import connect

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    local = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [local.add_node(num_cpus=1, num_gpus=1) for _ in range(WORKERS)]
    local.wait_for_nodes()
    ray.init(address=local.address, logging_level="WARNING")
    yield local, workers
    ray.shutdown()
    local.shutdown()
    if was_up:
        connect(num_cpus=2)


def study(**overrides) -> StudyConfig:
    base = dict(
        strategy="random",
        net="dense-poly",
        dataset="digits",
        rounds=4,
        repetitions=2,
        epochs=2,
        gpus_per_trial=0.5,
        cpus_per_trial=0.5,
        energy="simulated",
        idle_seconds=0.1,
    )
    return StudyConfig.from_flat(base | overrides)


def test_serve_bench_spreads_replicas_over_nodes_and_adds_their_energy(cluster, tmp_path):
    from ray import serve

    from greenray.serve.bench import run_bench

    local, _ = cluster
    config = BenchConfig.from_flat(
        {
            "models": "shufflenet_x0_5",
            "policies": "greedy",
            "frequencies": "40",
            "requests": 30,
            "warmup_batches": 1,
            "weights": "none",
            "image_size": 32,
            "device": "cpu",
            "energy": "simulated",
            "idle_seconds": 0.1,
            "replicas": 2,
            "replica_cpus": 1.0,  # one replica per 1-CPU node
        }
    )
    try:
        (run,) = run_bench(config, tmp_path, address=local.address)
    finally:
        serve.shutdown()
    replicas = pd.read_parquet(tmp_path / "replica_runs.parquet")
    assert len(replicas) == 2
    assert replicas["node_id"].nunique() == 2  # each replica on its own node
    assert set(run["node_id"].split(",")) == set(replicas["node_id"])
    assert run["energy_j"] == pytest.approx(replicas["energy_j"].sum())
    assert run["idle_free_energy_j"] == pytest.approx(replicas["idle_free_energy_j"].sum())
    assert run["served"] == replicas["served"].sum() >= 30
    assert (replicas["served"] > 0).all()  # round robin reached both
    assert run["energy_source"] == "simulated"


def test_a_study_spreads_over_every_node_and_losing_one_mid_study_loses_no_result(cluster, tmp_path):
    """One study: its first trials fill both nodes (half a GPU each, so two share each GPU);
    once both nodes have results, one node is removed while the study runs."""
    local, workers = cluster
    victim = workers[0]
    killed_at: list[float] = []

    def kill_when_trials_end() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            path = tmp_path / "trials.parquet"
            rows = pd.read_parquet(io.BytesIO(path.read_bytes())) if path.exists() else None
            if rows is not None and rows["node_id"].nunique() == WORKERS:  # both nodes have results
                local.remove_node(victim, allow_graceful=False)
                killed_at.append(time.time())
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_trials_end, daemon=True)
    killer.start()
    run = start_study(study(rounds=8, epochs=3), tmp_path, address=local.address, say=lambda *a: None)
    killer.join()
    trials = ResultStore(tmp_path).read("trials")
    # every slot of the budget has exactly one row: finished, or failed with the node
    assert run.complete and len(trials) == 16 and trials["trial_id"].is_unique
    assert not trials.duplicated(["round", "repetition"]).any()
    assert killed_at and victim not in local.list_all_nodes()
    before = trials[(trials["status"] == "ok") & (trials["finished_at"] <= killed_at[0])]
    assert before["node_id"].nunique() == WORKERS  # the first trials ran on every node
    assert set(trials["node_id"].dropna()) <= {w.node_id for w in workers}  # never on the head
    ok = trials[trials["status"] == "ok"]
    assert ok["gpu_ids"].notna().all()
    # half a GPU each: at most two trials on a GPU at once (whether two overlapped is timing)
    assert set(ok["gpu_sharers_max"]) <= {1, 2}
    assert (ok["energy_source"] == "simulated").all()  # (a trial lost with its node has no meter left)
    # the idle baseline measured per node and device was adopted: idle-free = total - idle W x s
    idle_free = ok["energy_j"] - 60.0 * ok["seconds"]
    assert ok["idle_free_energy_j"].to_numpy() == pytest.approx(idle_free.to_numpy())
    assert (ok["train_energy_j"] <= ok["energy_j"] + 1e-9).all()  # epochs within the trial
    failed = trials[trials["status"] == "failed"]
    assert failed["error"].notna().all()
    # trials that ended well after the node went ran on the nodes left
    later = ok[ok["finished_at"] > killed_at[0] + 5]
    assert victim.node_id not in set(later["node_id"])
