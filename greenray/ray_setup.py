"""Joining a Ray cluster, or starting a local Ray, the same way for every command."""

from __future__ import annotations

import os
import socket

from greenray.errors import UsageError

# How long a cluster's GCS port may take to answer before --address is called unreachable
# (ray.init itself would retry for minutes).
PROBE_TIMEOUT_S = 5.0
# Ray gives its raylet a fixed 30 s to register (ray/_private/node.py); a machine busy enough to
# miss that once usually makes it on a second try.
LOCAL_START_TRIES = 2

# Set before Ray is imported anywhere: no usage reporting, no Train V2 migration noise.
_QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Join the cluster at `address` ("auto" or host:port), or start a private local Ray
    (loopback only, no dashboard); a Ray this process already joined is reused (tests share one).
    `env` is set (where not set already) before a local Ray starts, whose workers inherit it."""
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    # Workers' own output stays in Ray's session logs (/tmp/ray/session_latest/logs): what a
    # command's user needs comes back as rows, errors and notices, and a worker Ray stops at
    # exit would otherwise print its SystemExit traceback under the command's last line.
    quiet = {"logging_level": "WARNING", "log_to_driver": False}
    if address is None:
        _loopback_only()
        for key, value in (env or {}).items():
            os.environ.setdefault(key, value)
        # "local": a new Ray of this process's own, whatever RAY_ADDRESS or the address file of
        # an earlier `ray start` (/tmp/ray/ray_current_cluster) names, live or dead.
        _start_local(ray, num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **quiet)
        return
    _probe(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"cannot reach a Ray cluster at --address {address} ({exc.__class__.__name__}); "
            "start one with `ray start --head` or `ray up cluster.yaml`, or drop --address"
        ) from None


def _start_local(ray, **options) -> None:
    for attempt in range(LOCAL_START_TRIES):
        try:
            ray.init(address="local", **options)
            return
        except Exception as exc:  # Ray raises a bare Exception for a raylet that did not register
            if "timed out during startup" not in str(exc) or attempt + 1 == LOCAL_START_TRIES:
                raise
            ray.shutdown()


def _loopback_only() -> None:
    """Make the private Ray's node address 127.0.0.1, so that its GCS, raylet, agents and
    workers listen on loopback only and nothing off this machine can join it (its
    authentication is off: a private Ray needs no token, and no one else can reach it).

    Ray 2.60 turns a loopback node address given to ray.init into the machine's outward one
    unless clusters are off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as on macOS and Windows): set
    both in the environment (for Ray's processes) and in Ray's constant, which Ray read at
    import. A cluster (--address) keeps its own settings and its own authentication."""
    from ray._private import ray_constants

    os.environ.pop("RAY_ADDRESS", None)
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray starts its workers at nice 15, below everything else on the machine: on a busy one the
    # trials and replicas greenray measures (and times) would crawl behind any other work.
    os.environ.setdefault("RAY_worker_niceness", "0")


def _probe(address: str) -> None:
    """Fail fast on a host:port that does not answer ("auto" and ray:// are Ray's to resolve)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address} is not host:port or auto; e.g. --address 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach a Ray cluster at --address {address} ({exc.strerror or exc}); "
            "start one with `ray start --head` or `ray up cluster.yaml`, or drop --address"
        ) from None
