"""A table that grows for as long as a server runs, at a bounded cost per append.

`ResultStore.append` rewrites a whole table each time, which a server up for days cannot
afford. A `TableLog` is a folder DIR/<table>.parquet/ of part files that pandas and pyarrow read
as one table (`pd.read_parquet(DIR / "batches.parquet")`). Rows go to the open part, which is
rewritten atomically (never half a file) and holds at most `part_rows` rows; a full part is
never touched again. So an append costs at most one part's rows whatever the table's size, and
what was appended survives any crash. Every part is written with the same schema, so parts
whose columns happen to be all empty still read as one table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from greenray.results.store import atomic_write

PART_ROWS = 20_000  # a part file's rows at most: the most any one append rewrites
_PART = re.compile(r"part-(\d{6})\.parquet")


class TableLog:
    """Rows appended to DIR/<table>.parquet/part-NNNNNN.parquet, `schema` fixing the columns
    and their types (missing ones are written empty, extra ones dropped)."""

    def __init__(self, root: str | Path, table: str, schema: pa.Schema, part_rows: int = PART_ROWS) -> None:
        if part_rows < 1:
            raise ValueError("a part holds at least one row")
        self.folder = Path(root) / f"{table}.parquet"
        if self.folder.exists() and not self.folder.is_dir():
            raise FileExistsError(f"{self.folder} is a file, not a folder of parts")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema, self.part_rows = schema, part_rows
        # An earlier session's parts are kept as they are: this one starts a part of its own.
        indices = [int(m[1]) for p in self.folder.iterdir() if (m := _PART.fullmatch(p.name))]
        self._part = max(indices, default=-1) + 1
        self._open: list[dict] = []
        self.rows = 0  # appended by this log

    def append(self, rows: list[dict]) -> None:
        """Add rows: the open part is rewritten with them, and closed once full."""
        while rows:
            room = self.part_rows - len(self._open)
            chunk, rows = rows[:room], rows[room:]
            self._open.extend(chunk)
            self.rows += len(chunk)
            self._write()
            if len(self._open) >= self.part_rows:
                self._part += 1
                self._open = []

    def read(self) -> pd.DataFrame:
        """Every part, this session's and earlier ones', as one table."""
        if not any(_PART.fullmatch(p.name) for p in self.folder.iterdir()):
            return self.schema.empty_table().to_pandas()
        return pd.read_parquet(self.folder)

    def _write(self) -> None:
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in self.schema.names} for row in self._open], schema=self.schema
        )
        path = self.folder / f"part-{self._part:06d}.parquet"
        atomic_write(path, lambda p: pq.write_table(table, p))
