"""Find greenray results folders among the paths a user gives (an hpo folder holds
trials.parquet, a serve-bench folder runs.parquet), read their tables and say in one sentence
what a folder cannot give."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from greenray.analysis.provenance import sources_of
from greenray.results import INDEX, OK, TABLES, ResultsError, read_table
from greenray.results.schema import NEEDED

# The table that makes a folder a results folder of each kind.
KIND_OF_TABLE = {"trials": "hpo", "runs": "serve-bench"}
# Side tables read when present; each needs the columns named here.
SIDE_TABLES = {"batches": ("run_id",)}
EXPERIMENT_INDEX = INDEX  # what an experiment run (`greenray run`) leaves in its --out folder


@dataclass(frozen=True)
class Folder:
    """One results folder as the report lists it."""

    path: Path
    kind: str
    rows: int
    failed: int
    sources: tuple[str, ...]


@dataclass
class Loaded:
    """Every table of every readable folder, concatenated per table, with a `folder` column."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    folders: list[Folder] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)


def results_folders(path: Path) -> list[Path]:
    """`path` itself when it is a results folder, else the results folders below it (an
    experiment's --out folder holds one per cell)."""
    if any((path / f"{t}.parquet").exists() for t in KIND_OF_TABLE):
        return [path]
    found = {p.parent for t in KIND_OF_TABLE for p in path.rglob(f"{t}.parquet")}
    return sorted(found)


def load(paths: list[Path]) -> Loaded:
    """Read every results folder under `paths`; what cannot be read becomes a note."""
    loaded = Loaded()
    parts: dict[str, list[pd.DataFrame]] = {}
    for path in paths:
        if not path.is_dir():
            loaded.notes.append(f"{path} is not a folder, so it was skipped.")
            continue
        folders = results_folders(path)
        if not folders:
            loaded.notes.append(f"{path} holds no greenray results (no trials.parquet or runs.parquet).")
        for folder in folders:
            experiment = experiment_of(folder, path)
            for table, frame in _read_folder(folder, loaded).items():
                parts.setdefault(table, []).append(frame.assign(experiment=experiment))
    loaded.tables = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
    return loaded


def experiment_of(folder: Path, given: Path) -> str:
    """The experiment a folder belongs to: the name in the nearest index.json from the folder up
    to the path the user gave (`greenray run` writes one), else that path's name."""
    for parent in (folder, *folder.parents):
        index = parent / EXPERIMENT_INDEX
        if index.is_file():
            try:
                return str(json.loads(index.read_text())["experiment"])
            except (OSError, ValueError, KeyError, TypeError):
                break
        if parent == given:
            break
    return given.resolve().name


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the statistics use: failed ones are counted in the report, never averaged."""
    if "status" not in frame:
        return frame
    return frame[frame["status"].astype(str) == OK]


def _read_folder(folder: Path, loaded: Loaded) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    for table, kind in KIND_OF_TABLE.items():
        if not (folder / f"{table}.parquet").exists():
            continue
        try:
            frame = read_table(folder, table, NEEDED[table])
        except ResultsError as exc:
            loaded.notes.append(f"{exc}.")
            continue
        lacking = [c for c in TABLES[table] if c not in frame.columns]
        if lacking:
            loaded.notes.append(
                f"{folder / f'{table}.parquet'} lacks the column(s) {', '.join(lacking)}, so the statistics "
                "that need them leave this folder out."
            )
        frame = frame.assign(folder=str(folder))
        failed = len(frame) - len(ok_rows(frame))
        sources = sources_of(frame)
        loaded.folders.append(Folder(folder, kind, len(frame), failed, sources))
        frames[table] = frame
        if table == "runs":
            frames.update(_side_tables(folder, loaded))
    return frames


def _side_tables(folder: Path, loaded: Loaded) -> dict[str, pd.DataFrame]:
    frames = {}
    for table, required in SIDE_TABLES.items():
        if not (folder / f"{table}.parquet").exists():
            continue
        try:
            frames[table] = read_table(folder, table, required).assign(folder=str(folder))
        except ResultsError as exc:
            loaded.notes.append(f"{exc}.")
    return frames
