"""A server's table (greenray.results.TableLog): appends that rewrite at most one part file, one
table when read back (by pandas, from the folder), typed columns whatever the rows hold, and a
later session that adds parts without touching the earlier ones."""

import pandas as pd
import pyarrow as pa
import pytest

from greenray.results import SERVED_BATCH_TYPES, TABLES, TableLog

SCHEMA = pa.schema([("batch_id", "int64"), ("energy_j", "float64"), ("source", "string")])


def rows(start: int, count: int, energy=1.5) -> list[dict]:
    return [{"batch_id": i, "energy_j": energy, "source": "simulated"} for i in range(start, start + count)]


def test_appends_fill_parts_and_read_back_as_one_table(tmp_path):
    log = TableLog(tmp_path, "batches", SCHEMA, part_rows=4)
    log.append(rows(0, 3))
    log.append(rows(3, 6))  # fills part 0, fills part 1, opens part 2
    parts = sorted(p.name for p in (tmp_path / "batches.parquet").iterdir())
    assert parts == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    frame = pd.read_parquet(tmp_path / "batches.parquet")
    assert sorted(frame["batch_id"]) == list(range(9)) and log.rows == 9


def test_a_full_part_is_never_rewritten(tmp_path):
    log = TableLog(tmp_path, "batches", SCHEMA, part_rows=2)
    log.append(rows(0, 2))
    first = tmp_path / "batches.parquet" / "part-000000.parquet"
    stamp = first.stat().st_mtime_ns
    for i in range(2, 12):
        log.append(rows(i, 1))
    assert first.stat().st_mtime_ns == stamp
    assert len(log.read()) == 12


def test_columns_keep_their_types_when_a_part_holds_only_empty_values(tmp_path):
    log = TableLog(tmp_path, "batches", SCHEMA, part_rows=2)
    log.append([{"batch_id": 0, "energy_j": None}, {"batch_id": 1}])  # no energy, no source: nulls
    log.append(rows(2, 2, energy=2.0) + [{"batch_id": 4, "extra": "dropped"}])
    frame = log.read()
    assert frame["energy_j"].dtype == "float64" and frame["energy_j"].isna().sum() == 3
    assert list(frame.columns) == SCHEMA.names


def test_a_later_session_adds_parts_and_keeps_the_earlier_ones(tmp_path):
    TableLog(tmp_path, "batches", SCHEMA, part_rows=100).append(rows(0, 5))
    later = TableLog(tmp_path, "batches", SCHEMA, part_rows=100)
    later.append(rows(5, 2))
    assert sorted(later.read()["batch_id"]) == list(range(7))
    (tmp_path / "file.parquet").write_text("x")
    with pytest.raises(FileExistsError):
        TableLog(tmp_path, "file", SCHEMA)


def test_a_servers_batches_carry_every_column_of_the_bench_batches_table():
    assert set(TABLES["batches"]) <= set(SERVED_BATCH_TYPES)
