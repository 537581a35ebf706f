"""Public names of a package loaded on first use (PEP 562), so that its light modules import
without the heavy ones its public API needs (Ray Tune's searchers, Ray Serve)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, public: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `public[name]` (a module path) when `name` is asked for."""

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
