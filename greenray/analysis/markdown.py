"""The report's tables as GitHub Markdown: numbers to four significant digits, and an energy
cell of a row whose energy was not measured says so rather than read as zero."""

from __future__ import annotations

import math

import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table, numbers to four significant digits."""
    if frame.empty:
        return "(no rows)"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = [
        "| "
        + " | ".join(_cell(v, unmeasured and "energy" in c) for v, c in zip(row, frame.columns, strict=True))
        + " |"
        for row, unmeasured in zip(frame.itertuples(index=False), _unmeasured(frame), strict=True)
    ]
    return "\n".join([header, rule, *rows])


def _unmeasured(frame: pd.DataFrame) -> list[bool]:
    """Rows whose energy was not measured (energy_source none): their empty energy cells say so
    rather than read as zero."""
    if "energy_source" not in frame:
        return [False] * len(frame)
    return [str(source) == "none" for source in frame["energy_source"]]


def _cell(value, unmeasured: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "not measured" if unmeasured else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
