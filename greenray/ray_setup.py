"""Joining a Ray cluster, or starting a local Ray, the same way for every command."""

from __future__ import annotations

import os
import socket

from greenray.errors import UsageError

# How long a cluster's GCS port may take to answer before --address is called unreachable
# (ray.init itself would retry for minutes).
PROBE_TIMEOUT_S = 5.0

# Set before Ray is imported anywhere: no usage reporting, no Train V2 migration noise.
_QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Join the cluster at `address` ("auto" or host:port), or start a local Ray without a
    dashboard; a Ray this process already joined is reused (tests share one). `env` is set
    (where not set already) before a local Ray starts, whose workers inherit it."""
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
        # A private local Ray needs no token; a cluster keeps its own authentication.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        for key, value in (env or {}).items():
            os.environ.setdefault(key, value)
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **quiet)
        return
    _probe(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"cannot reach a Ray cluster at --address {address} ({exc.__class__.__name__}); "
            "start one with `ray start --head` or `ray up cluster.yaml`, or drop --address"
        ) from None


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
