"""A results folder: rows appended and written atomically as they arrive (Parquet for
analysis, CSV for eyes), so an interrupted run keeps all it had; tables read back or refused
in one sentence."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import pandas as pd

from greenray.errors import UsageError
from greenray.results.schema import NEEDED, PARQUET_ONLY, TABLES

log = logging.getLogger("greenray.results")


# Ids Ray and Serve write as hex ("569961e0") that a CSV reader would take for numbers.
ID_COLUMNS = {"trial_id": str, "run_id": str, "node_id": str, "request_id": str}


def read_csv(path: Path) -> pd.DataFrame:
    """A results CSV with its id columns kept as the strings they were written as."""
    return pd.read_csv(path, dtype=ID_COLUMNS)


class ResultsError(UsageError):
    """A results folder that cannot give what was asked of it."""


class UnwritableError(ResultsError):
    """A results folder that cannot take a write: a full disk, a read-only folder or file system."""


def unwritable(path: Path, exc: OSError) -> UnwritableError:
    """The one sentence for a write that the file system refused."""
    reason = exc.strerror or exc.__class__.__name__
    return UnwritableError(
        f"cannot write {path} ({reason}): what was written before is intact; free some space or make "
        f"{path.parent} writable and run the command again, or choose another --out"
    )


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), flush it to disk, then move it over `path` in one step. A write the
    file system refuses (full, read-only) leaves `path` as it was, no temporary file behind,
    and is an UnwritableError."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise unwritable(path, exc) from exc
        raise


def make_folder(folder: Path) -> Path:
    """`folder` and its parents created, or an UnwritableError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(folder, exc) from exc
    return folder


class ResultStore:
    """A results folder: DIR/<table>.parquet and DIR/<table>.csv, plus JSON side files
    (the run's settings, the idle baseline). Rows are appended, never rewritten."""

    def __init__(self, root: str | Path) -> None:
        self.root = make_folder(Path(root))
        self._rows: dict[str, list[dict]] = {}

    def path(self, table: str, suffix: str = "parquet") -> Path:
        return self.root / f"{table}.{suffix}"

    def append(self, table: str, rows: list[dict]) -> None:
        """Add rows and rewrite the table's files atomically (a reader never sees half a file)."""
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}")
        for row in rows:
            missing = [c for c in TABLES[table] if c not in row]
            if missing:
                raise KeyError(f"a {table} row lacks {', '.join(missing)}")
        held = self._held(table)
        held.extend(rows)
        frame = pd.DataFrame(held)
        atomic_write(self.path(table), lambda p: frame.to_parquet(p, index=False))
        if table not in PARQUET_ONLY:
            atomic_write(self.path(table, "csv"), lambda p: frame.to_csv(p, index=False))

    def read(self, table: str) -> pd.DataFrame:
        """The table so far; a damaged or missing Parquet file is rebuilt from its CSV copy."""
        if not self.path(table).exists() and not self.path(table, "csv").exists():
            return pd.DataFrame(columns=list(TABLES.get(table, ())))
        return load(self.root, table, repair=True)

    def write_json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, default=str)
        atomic_write(self.root / f"{name}.json", lambda p: p.write_text(text + "\n"))

    def read_json(self, name: str) -> dict | None:
        path = self.root / f"{name}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            raise ResultsError(
                f"{path} is damaged ({exc.__class__.__name__}): restore it, or start again in another folder"
            ) from None

    def _held(self, table: str) -> list[dict]:
        if table not in self._rows:
            existing = self.read(table)
            self._rows[table] = existing.to_dict("records") if len(existing) else []
        return self._rows[table]


def read_table(root: str | Path, table: str, required: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A stored table, or one sentence saying why it cannot be had."""
    path = Path(root) / f"{table}.parquet"
    if not path.exists() and not path.with_suffix(".csv").exists():
        raise ResultsError(f"{root} has no {table}.parquet: it is not a greenray results folder of that kind")
    frame = load(Path(root), table)
    missing = [c for c in (required if required is not None else TABLES[table]) if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks the column(s) {', '.join(missing)}, so it cannot be analysed")
    return frame


def load(root: Path, table: str, repair: bool = False) -> pd.DataFrame:
    """A table from its Parquet file or, where that alone is damaged (a crash mid-write on a
    file system without atomic rename, a bad disk), from its CSV copy; `repair` rewrites the
    Parquet file from it. A ResultsError says which file is damaged when neither can be read."""
    parquet, csv = root / f"{table}.parquet", root / f"{table}.csv"
    try:
        return pd.read_parquet(parquet)
    except FileNotFoundError:
        state = "missing"
    except Exception as exc:  # pyarrow raises several types for a damaged file
        state = f"damaged ({exc.__class__.__name__})"
    needed = NEEDED.get(table, ())
    try:
        frame = read_csv(csv)
    except Exception:  # missing or damaged too
        frame = None
    if frame is None or any(column not in frame.columns for column in needed):
        raise ResultsError(
            f"{parquet} is {state} and has no readable CSV copy: restore it, or start again in another folder"
        )
    if not _ends_whole(csv):  # its last row was cut short (a crash mid-write): not a row
        frame = frame.iloc[:-1]
    log.warning("%s is %s: its %d rows were read from %s", parquet, state, len(frame), csv.name)
    if repair:
        atomic_write(parquet, lambda p: frame.to_parquet(p, index=False))
    return frame


def _ends_whole(path: Path) -> bool:
    """Whether a text file ends with a line break, as a CSV written whole does."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return True
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
