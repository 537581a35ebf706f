"""Shared fixtures: one local Ray for the whole test session (each start costs seconds)."""

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, shared by every test that asks for it, shut down at the end."""
    import ray

    from greenray.ray_setup import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()
