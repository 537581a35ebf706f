"""Grams of CO2e for measured Joules: a row's kWh times the grid's carbon intensity, given in
gCO2e/kWh or looked up by country or cloud region in the table shipped beside this module
(carbon_intensity.csv: its header names the source, licence and years)."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("carbon_intensity.csv")
JOULES_PER_KWH = 3.6e6
SOURCE = "CodeCarbon 3.3.2's energy mix (Our World in Data / Ember, 2021-2023; Google Cloud regions)"


class UnknownRegion(ValueError):
    """A region code the shipped table does not hold."""


@dataclass(frozen=True)
class GridIntensity:
    """One row of the table: what a kWh drawn there emits, and from which year's data."""

    code: str  # ISO 3166-1 alpha-3 (FRA), or provider:region (gcp:europe-west9)
    name: str
    g_per_kwh: float
    year: int | None


@functools.cache
def table() -> dict[str, GridIntensity]:
    """The shipped table by upper-case code; a cloud region also by its bare name (europe-west9)."""
    with TABLE.open(encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        entries = [
            GridIntensity(r["code"], r["name"], float(r["g_per_kwh"]), int(r["year"]) if r["year"] else None)
            for r in rows
        ]
    by_code = {e.code.upper(): e for e in entries}
    bare = {e.code.split(":", 1)[1].upper(): e for e in entries if ":" in e.code}
    return bare | by_code


def lookup(region: str) -> GridIntensity:
    """The table's entry for `region` (any case); UnknownRegion, in one sentence, if none."""
    entry = table().get(region.strip().upper())
    if entry is None:
        raise UnknownRegion(
            f"{region!r} is not in greenray's carbon table: give an ISO 3166-1 alpha-3 country code "
            "(FRA, DEU, USA), a Google Cloud region (gcp:europe-west9 or europe-west9) or the grid's "
            "gCO2e/kWh itself"
        )
    return entry


def co2e_g(joules: float | None, g_per_kwh: float | None) -> float | None:
    """Grams of CO2e for `joules` on a grid of `g_per_kwh`; None where either is unknown."""
    if joules is None or g_per_kwh is None:
        return None
    return joules / JOULES_PER_KWH * g_per_kwh
