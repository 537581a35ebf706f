"""Batching policies as text (`fixed:N`, `fixed:N@MS`, `greedy`, `greedy:CAP`) and the
`@serve.batch` parameters that carry each out; Ray Serve does the batching itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_GREEDY_CAP = 128
# "Wait until the batch is full, however long": a timeout no run outlasts.
FOREVER_S = 7 * 24 * 3600.0
POLICY_HELP = "use fixed:N, fixed:N@MS or greedy[:CAP], e.g. fixed:32,fixed:32@50,greedy"

_FIXED = re.compile(r"fixed:(?P<size>[^@]*)(?:@(?P<wait>.*))?")
_GREEDY = re.compile(r"greedy(?::(?P<cap>.*))?")


@dataclass(frozen=True)
class BatchPolicy:
    """fixed: a batch leaves when `size` requests are queued (or, with `max_wait_ms`, when the
    oldest has waited that long); greedy: whatever is queued, up to `size`, leaves at once."""

    kind: str  # "fixed" or "greedy"
    size: int  # the batch size of fixed, the cap of greedy
    max_wait_ms: float | None = None

    @property
    def max_batch_size(self) -> int:
        return self.size

    @property
    def batch_wait_timeout_s(self) -> float:
        """Serve's `batch_wait_timeout_s`: 0 sends what is queued (greedy), a week is "until full"."""
        if self.kind == "greedy":
            return 0.0
        return FOREVER_S if self.max_wait_ms is None else self.max_wait_ms / 1000.0

    @property
    def waits_forever(self) -> bool:
        """A partial batch of this policy never leaves on its own (the end of a run must drain it)."""
        return self.kind == "fixed" and self.max_wait_ms is None

    def __str__(self) -> str:
        if self.kind == "greedy":
            return "greedy" if self.size == DEFAULT_GREEDY_CAP else f"greedy:{self.size}"
        return f"fixed:{self.size}" + ("" if self.max_wait_ms is None else f"@{self.max_wait_ms:g}")


class PolicyError(ValueError):
    """Text that is not a batching policy; the message says why and how to write one."""


def parse_policy(text: str | BatchPolicy) -> BatchPolicy:
    """One policy from its text, or a PolicyError naming the fix."""
    if isinstance(text, BatchPolicy):
        return text
    spec = str(text).strip().lower()
    if match := _FIXED.fullmatch(spec):
        size = _positive_int(match["size"], spec, "a batch size")
        wait = match["wait"]
        return BatchPolicy("fixed", size, None if wait is None else _positive_ms(wait, spec))
    if match := _GREEDY.fullmatch(spec):
        cap = DEFAULT_GREEDY_CAP if match["cap"] is None else _positive_int(match["cap"], spec, "a cap")
        return BatchPolicy("greedy", cap)
    raise PolicyError(f"unknown batching policy {text!r}: {POLICY_HELP}")


def _positive_int(value: str, spec: str, what: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise PolicyError(f"{spec} needs {what} that is a whole number of at least 1: {POLICY_HELP}")
    return int(value)


def _positive_ms(value: str, spec: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms > 0 or ms == float("inf"):
        raise PolicyError(
            f"{spec} needs a max wait that is a positive number of milliseconds, e.g. fixed:32@50"
        )
    return ms
