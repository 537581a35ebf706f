"""The rounds of a search as they end, and when a green lever says the search should stop: one
rule, used live by the stoppers (greenray.tune.stoppers) and, on a results folder's rows, by
a resumed study and its summary. Pure Python: no Ray, no torch."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

BUDGET, TARGET, PATIENCE = "energy-budget", "target-accuracy", "patience"  # the stopping levers


def number(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, text, a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def ran_to_end(result: Mapping | None) -> bool:
    """Whether a trial's last result is its last epoch: `epochs_done` reached `epochs` where the
    trial reports both (the study's trials do), True for a trainable that reports neither.
    Tune marks trials its scheduler or a stopper ended as TERMINATED like those that finished;
    this tells them apart."""
    if not result:
        return False
    done, total = number(result.get("epochs_done")), number(result.get("epochs"))
    return done is None or total is None or done >= total


@dataclass
class RoundBook:
    """Rounds of `repetitions` trials each, in the order they end. A round's value is the mean
    of its repetitions that ran to the end (failed and early-stopped ones carry None); a round
    none of whose repetitions ran to the end has no value, and is a round without improvement.

    Args:
        repetitions: trials per round (1: every trial is a round of its own).
        mode: "max" (accuracy) or "min".
    """

    repetitions: int = 1
    mode: str = "max"
    ended: list[tuple[Hashable, float | None]] = field(default_factory=list)  # (round, value)
    _open: dict[Hashable, list[float | None]] = field(default_factory=dict)

    def end_trial(
        self, round_key: Hashable, value: float | None, repetitions: int | None = None
    ) -> tuple[Hashable, float | None] | None:
        """One trial of a round ended with `value` (None: failed or stopped early); the round
        and its value once this was its last repetition (of `repetitions`, default the
        book's), else None."""
        values = self._open.setdefault(round_key, [])
        values.append(number(value))
        if len(values) < (repetitions or self.repetitions):
            return None
        del self._open[round_key]
        kept = [v for v in values if v is not None]
        ended = (round_key, sum(kept) / len(kept) if kept else None)
        self.ended.append(ended)
        return ended

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    @property
    def best(self) -> tuple[Hashable, float] | None:
        """The round with the best value (the first that reached it) and that value."""
        best = None
        for key, value in self.ended:
            if value is not None and (best is None or self._better(value, best[1])):
                best = (key, value)
        return best

    @property
    def rounds_since_best(self) -> int:
        """Rounds ended after the best one (all of them while none has a value)."""
        best = self.best
        if best is None:
            return len(self.ended)
        index = next(i for i, (key, _) in enumerate(self.ended) if key == best[0])
        return len(self.ended) - 1 - index


@dataclass(frozen=True)
class Stop:
    """Which lever stopped a study, on which round (the last that ended), and in words."""

    lever: str  # energy-budget, target-accuracy or patience
    round: int | None
    detail: str

    def as_dict(self) -> dict:
        return {"lever": self.lever, "round": self.round, "detail": self.detail}


def target_reached(book: RoundBook, target: float) -> bool:
    best = book.best
    return best is not None and (best[1] >= target if book.mode == "max" else best[1] <= target)


def stop_reached(
    rows: Iterable[Mapping],
    *,
    repetitions: int,
    energy_budget: float | None = None,
    patience: int | None = None,
    target_accuracy: float | None = None,
    energy: str = "energy_j",
) -> Stop | None:
    """The first lever whose condition the stored trial rows meet, replayed in the order the
    trials ended (`finished_at`): the summed `energy` of every row reaching the budget (failed
    and stopped rows count), a round's mean accuracy (over its `ok` repetitions) reaching the
    target, or `patience` rounds in a row ending without a better round. None when none is met."""
    ordered = sorted(rows, key=lambda r: number(r.get("finished_at")) or 0.0)
    book, spent = RoundBook(repetitions), 0.0
    for row in ordered:
        spent += number(row.get(energy)) or 0.0
        value = row.get("accuracy") if row.get("status") == "ok" else None
        ended = book.end_trial(int(row["round"]), value)
        where = ended[0] if ended else int(row["round"])
        if energy_budget is not None and spent >= energy_budget:
            return Stop(BUDGET, where, f"{spent:.1f} J of the {energy_budget:g} J budget spent ({energy})")
        if ended is None:
            continue
        if target_accuracy is not None and target_reached(book, target_accuracy):
            best = book.best
            reached = f"round {best[0]} reached accuracy {best[1]:.4f} >= {target_accuracy:g}"
            return Stop(TARGET, where, reached)
        if patience is not None and book.rounds_since_best >= patience:
            best = book.best
            since = f"round {best[0]} ({best[1]:.4f})" if best else "the start (no round finished)"
            return Stop(PATIENCE, where, f"{patience} rounds without a better round than {since}")
    return None
