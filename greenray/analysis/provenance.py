"""Where a table's Joules and Watts came from, and the words that say so in captions and titles:
the energy source, and the power field that peaks and sample-integrated Joules are readings of
(a 1 s average is never called a peak)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SIMULATED = "simulated"
UNMEASURED = "none"
SAMPLED = "nvml-power"  # Joules integrated from power samples: their field matters
AVERAGE = "average"  # NVML's 1 s moving average: no peak, and short windows are estimates


@dataclass(frozen=True)
class Provenance:
    """The energy column a table or figure uses and the energy sources of its rows."""

    column: str | None
    sources: tuple[str, ...]
    note: str = ""  # e.g. why a fallback column was used
    quantity: str = "energy"  # or "power"
    fields: tuple[str, ...] = ()  # the power fields (instant, average, ...) the rows' readings are of

    @property
    def simulated(self) -> bool:
        return SIMULATED in self.sources

    @property
    def measured(self) -> bool:
        return self.column is not None and any(s not in (SIMULATED, UNMEASURED) for s in self.sources)

    @property
    def averaged(self) -> bool:
        """Some readings are NVML's 1 s average: a "peak" of them is the highest 1 s average."""
        return AVERAGE in self.fields

    def caption(self) -> str:
        """One phrase for a caption: the column, its sources and power field, SIMULATED in
        capitals, and an average never called a peak."""
        if self.column is None:
            return f"{self.quantity} not measured (energy_source: none)"
        sources = ", ".join(self.sources) or "unknown"
        text = f"{self.quantity}: `{self.column}`, energy_source: {sources}"
        if self.fields and (self.quantity == "power" or SAMPLED in self.sources):
            text += f", power_field: {', '.join(self.fields)}"
        if self.simulated:
            text = f"SIMULATED {self.quantity.upper()}, not a measurement ({text})"
        if self.quantity == "power" and self.averaged:
            text += "; where power_field is average, the value is the highest 1 s average power, not a peak"
        elif self.averaged and SAMPLED in self.sources:
            text += (
                "; Joules integrated from the 1 s average field are estimates for windows under a few seconds"
            )
        return f"{text}; {self.note}" if self.note else text

    def title(self) -> str:
        """A short suffix for a figure title."""
        if self.column is None:
            return f"{self.quantity} not measured"
        if self.simulated:
            return f"SIMULATED {self.quantity}, {self.column}"
        fields = f" ({', '.join(self.fields)} field)" if self.fields and self.quantity == "power" else ""
        return f"{self.quantity}: {self.column}{fields}, {', '.join(self.sources)}"


def sources_of(frame: pd.DataFrame) -> tuple[str, ...]:
    """The distinct energy_source values of some rows, sorted."""
    if "energy_source" not in frame:
        return ()
    return tuple(sorted(str(s) for s in frame["energy_source"].dropna().unique()))


def fields_of(frame: pd.DataFrame, column: str = "power_field") -> tuple[str, ...]:
    """The distinct power fields of some rows (`column`, else `power_field`), sorted; a
    combined value such as "average,instant" counts each of its parts."""
    source = column if column in frame and frame[column].notna().any() else "power_field"
    if source not in frame:
        return ()
    found = {part for value in frame[source].dropna().astype(str) for part in value.split(",")}
    return tuple(sorted(found - {"None", ""}))


def has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and pd.to_numeric(frame[column], errors="coerce").notna().any()


def choose_energy(frame: pd.DataFrame, preferred: str, fallback: str, why: str) -> Provenance:
    """The preferred energy column where the rows carry it, else the fallback (saying why),
    else none: training reports idle-free energy, inference the energy with idle included."""
    sources, fields = sources_of(frame), fields_of(frame)
    if has_values(frame, preferred):
        return Provenance(preferred, sources, fields=fields)
    if has_values(frame, fallback):
        note = f"`{preferred}` is empty ({why}), so `{fallback}` is used"
        return Provenance(fallback, sources, note, fields=fields)
    return Provenance(None, sources, fields=fields)
