"""Modelled work: busy seconds a trainable declares for the simulated power model, counted in
this process. A study's trainable knows the work it does in deterministic units (samples x
FLOPs per sample); turned into seconds at a nominal throughput, that work makes the model's
Joules a function of the configuration and the data alone, where CPU seconds still grow on a
contended machine (cache misses, scheduling)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_lock = threading.Lock()
_seconds = 0.0  # modelled busy seconds reported in this process so far: only ever grows
_modelled: ContextVar[bool] = ContextVar("greenray_modelled_work", default=False)


def add_work(seconds: float) -> None:
    """Add `seconds` of modelled busy time to this process's work clock: a simulated meter opened
    under `modelled_work()` counts these, not CPU seconds (anything else ignores them)."""
    global _seconds
    if not seconds >= 0:
        raise ValueError(f"modelled work is a non-negative number of seconds, not {seconds!r}")
    with _lock:
        _seconds += seconds


def work_seconds() -> float:
    """The modelled busy seconds reported in this process so far (a clock: windows take
    differences)."""
    with _lock:
        return _seconds


@contextmanager
def modelled_work() -> Iterator[None]:
    """Simulated backends created inside follow `add_work`'s clock instead of the process's CPU
    seconds (with_energy(..., modelled_work=True) opens its meter so)."""
    token = _modelled.set(True)
    try:
        yield
    finally:
        _modelled.reset(token)


def work_is_modelled() -> bool:
    """Whether a simulated backend created here should follow the modelled work clock."""
    return _modelled.get()
