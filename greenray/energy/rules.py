"""greenray's rules about which Joules count, said once: the sentence for "nothing can be
measured here", which energy a study counts (idle-free where the idle baseline is known, else
the total), and the running tallies that sum windows or take power between reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from greenray.energy.measurement import Measurement, sum_or_none

IDLE_FREE, TOTAL = "idle_free_energy_j", "energy_j"
MEASURABLE_FIX = (
    "run where a GPU (NVML) or RAPL is readable, or use --energy simulated (labelled model numbers)"
)


def nothing_readable(where: str, why: str | None = None) -> str:
    """The one sentence for --require-energy where nothing is measurable."""
    because = why or "no NVML GPU, no readable RAPL counter"
    return f"no energy source is readable on {where} ({because}); drop --require-energy or run where one is"


def nothing_to_count(what: str, where: str) -> str:
    """The one sentence for a lever or a search that counts energy where nothing measures it
    (`where`: "here", "on the trials' nodes")."""
    why = "no NVML GPU, no readable RAPL counter"
    return f"{what} counts energy, and nothing {where} measures energy ({why}): {MEASURABLE_FIX}"


def idle_known(baseline_measured: bool, backend: str) -> bool:
    """Whether a study's trials know their idle baseline: measured before the study, or the
    simulated model's own (known by construction, so no measurement is needed)."""
    return baseline_measured or backend == "simulated"


def counted_key(idle_free: bool) -> str:
    """The energy column a study counts: idle-free where its trials know the idle baseline (the
    study's training energy, idle factored out), else the total."""
    return IDLE_FREE if idle_free else TOTAL


def rows_key(rows: list[Mapping]) -> str:
    """The energy column a set of result rows can be compared on: idle-free where every row has
    it, else the total."""
    return counted_key(bool(rows) and all(_number(r.get(IDLE_FREE)) for r in rows))


def counted_joules(row: Mapping) -> float | None:
    """One row's counted energy: its idle-free Joules where known, else its total."""
    joules = row.get(IDLE_FREE)
    return row.get(TOTAL) if joules is None else joules


def _number(value) -> bool:
    return isinstance(value, int | float) and value == value


@dataclass
class Tally:
    """Windows summed (an epoch's training windows, a run's batches): seconds, Joules and
    idle-free Joules; None from the first window that lacks them (a sum of what was not
    measured is not a number)."""

    seconds: float = 0.0
    joules: float | None = 0.0
    idle_free_joules: float | None = 0.0

    def add(self, m: Measurement) -> None:
        self.seconds += m.seconds
        self.joules = sum_or_none([self.joules, m.joules])
        self.idle_free_joules = sum_or_none([self.idle_free_joules, m.idle_free_joules])


class PowerSince:
    """The average power (W) of a growing window between one reading and the next: each call
    gives the Joules per second since the previous call that advanced it."""

    def __init__(self) -> None:
        self._last: tuple[float, float | None] | None = None

    @property
    def started(self) -> bool:
        return self._last is not None

    def step(self, seconds: float, joules: float | None, advance: bool = True) -> float | None:
        watts = None
        if self._last is not None:
            last_s, last_j = self._last
            if joules is not None and last_j is not None and seconds > last_s:
                watts = (joules - last_j) / (seconds - last_s)
        if advance:
            self._last = (seconds, joules)
        return watts
