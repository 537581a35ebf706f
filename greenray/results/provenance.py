"""Where a results folder came from: the config it ran, the package versions, the machine and the
time, written the same way for every kind of run (study.json, bench.json)."""

from __future__ import annotations

import platform
import socket
import time
from importlib import metadata
from typing import Any

PACKAGES = ("greenray", "ray", "torch", "torchvision", "scikit-learn", "nvidia-ml-py")


def versions() -> dict[str, str | None]:
    """Python's and the key packages' versions (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def run_record(kind: str, config: Any, **extra: Any) -> dict[str, Any]:
    """The JSON record of a run: its kind, its config (a greenray.config model, dumped whole),
    versions, the driver's host and the start time, plus what the run adds."""
    return {
        "kind": kind,
        "config": config.model_dump(mode="json"),
        "versions": versions(),
        "driver": socket.gethostname(),
        "started_at": time.time(),
        **extra,
    }
