"""Where a table's Joules came from, and the words that say so in captions and titles."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SIMULATED = "simulated"
UNMEASURED = "none"


@dataclass(frozen=True)
class Provenance:
    """The energy column a table or figure uses and the energy sources of its rows."""

    column: str | None
    sources: tuple[str, ...]
    note: str = ""  # e.g. why a fallback column was used
    quantity: str = "energy"  # or "power"

    @property
    def simulated(self) -> bool:
        return SIMULATED in self.sources

    @property
    def measured(self) -> bool:
        return self.column is not None and any(s not in (SIMULATED, UNMEASURED) for s in self.sources)

    def caption(self) -> str:
        """One phrase for a caption: the column and its sources, SIMULATED in capitals."""
        if self.column is None:
            return f"{self.quantity} not measured (energy_source: none)"
        sources = ", ".join(self.sources) or "unknown"
        text = f"{self.quantity}: `{self.column}`, energy_source: {sources}"
        if self.simulated:
            text = f"SIMULATED {self.quantity.upper()}, not a measurement ({text})"
        return f"{text}; {self.note}" if self.note else text

    def title(self) -> str:
        """A short suffix for a figure title."""
        if self.column is None:
            return f"{self.quantity} not measured"
        if self.simulated:
            return f"SIMULATED {self.quantity}, {self.column}"
        return f"{self.quantity}: {self.column}, {', '.join(self.sources)}"


def sources_of(frame: pd.DataFrame) -> tuple[str, ...]:
    """The distinct energy_source values of some rows, sorted."""
    if "energy_source" not in frame:
        return ()
    return tuple(sorted(str(s) for s in frame["energy_source"].dropna().unique()))


def has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and pd.to_numeric(frame[column], errors="coerce").notna().any()


def choose_energy(frame: pd.DataFrame, preferred: str, fallback: str, why: str) -> Provenance:
    """The preferred energy column where the rows carry it, else the fallback (saying why),
    else none: training reports idle-free energy, inference the energy with idle included."""
    sources = sources_of(frame)
    if has_values(frame, preferred):
        return Provenance(preferred, sources)
    if has_values(frame, fallback):
        return Provenance(fallback, sources, f"`{preferred}` is empty ({why}), so `{fallback}` is used")
    return Provenance(None, sources)
