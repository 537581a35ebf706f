"""cluster.yaml is checked by Ray's own cluster-launcher validation (no cloud call)."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_ray_validation(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_head_is_cpu_only_and_gpu_workers_have_1_to_8_gpus(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpus = sorted(t["resources"]["GPU"] for name, t in types.items() if t["resources"].get("GPU"))
    assert gpus and gpus[0] >= 1 and gpus[-1] <= 8
    assert sum(t.get("min_workers", 0) for t in types.values()) <= config["max_workers"]


def test_every_node_installs_this_greenray(config):
    assert any("pip install" in c and "greenray" in c for c in config["setup_commands"])
    assert "." in config["file_mounts"].values()


def test_validation_catches_a_broken_config(config):
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError):
        validate_config(prepare_config(broken))


def test_every_node_starts_ray_with_token_authentication(config):
    """A cluster is reachable from other machines: it keeps Ray's token authentication on, and
    every node gets the token (README: Who can join)."""
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [command for command in starts if "ray start" in command]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token" in command for command in ray_starts)
    assert any(path.endswith(".ray/auth_token") for path in config["file_mounts"])
