"""A results folder is the study (greenray.results, greenray.trust, greenray.tune.tunestate), all
without Ray: greenray's rows rebuilt from their CSV copy, a refused write that leaves what was
written intact and no temporary file, one process at a time (a killed one leaves no lock), and
a resume that unpickles Tune's state only where it is whole, written in this very folder, and
by no one but the user."""

import errno
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest

from greenray.errors import UsageError
from greenray.results import TABLES, FolderBusy, ResultsError, ResultStore, UnwritableError, folder_lock
from greenray.results.lock import LOCK_FILE
from greenray.trust import TRUST_FLAG, check_trusted
from greenray.tune import tunestate


def trial_rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        row = dict.fromkeys(TABLES["trials"])
        row |= {"trial_id": f"t{i}", "strategy": "random", "round": i, "repetition": 0, "accuracy": 0.5}
        rows.append(row | {"status": "ok", "energy_j": 1.0 + i})
    return rows


def test_a_deleted_trials_parquet_is_rebuilt_from_its_csv_and_appends_keep_every_row(tmp_path):
    ResultStore(tmp_path).append("trials", trial_rows(4))
    (tmp_path / "trials.parquet").unlink()
    store = ResultStore(tmp_path)
    assert list(store.read("trials")["trial_id"]) == ["t0", "t1", "t2", "t3"]
    assert (tmp_path / "trials.parquet").exists()  # rebuilt
    store.append("trials", trial_rows(1, start=4))
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 5
    assert len(pd.read_parquet(tmp_path / "trials.parquet")) == 5


def test_hex_trial_ids_that_look_like_numbers_come_back_from_the_csv_as_written(tmp_path):
    """Ray's ids are hex: "569961e0" reads as the float 569961.0 unless kept a string."""
    rows = trial_rows(2)
    rows[0]["trial_id"], rows[1]["trial_id"] = "569961e0", "00012345"
    ResultStore(tmp_path).append("trials", rows)
    (tmp_path / "trials.parquet").unlink()
    assert list(ResultStore(tmp_path).read("trials")["trial_id"]) == ["569961e0", "00012345"]


def test_a_csv_row_cut_short_is_not_taken_for_a_row(tmp_path):
    """Parquet damaged and the CSV cut mid-row: the whole rows are kept, the cut one is not (its
    slot runs again on a resume, rather than keeping a row with its last columns empty)."""
    ResultStore(tmp_path).append("trials", trial_rows(3))
    (tmp_path / "trials.parquet").write_bytes(b"PAR1 not really")
    csv = tmp_path / "trials.csv"
    csv.write_bytes(csv.read_bytes()[:-10])
    assert list(ResultStore(tmp_path).read("trials")["trial_id"]) == ["t0", "t1"]


def test_a_damaged_parquet_beside_a_csv_cut_to_100_bytes_is_one_sentence(tmp_path):
    ResultStore(tmp_path).append("trials", trial_rows(3))
    (tmp_path / "trials.parquet").write_bytes(b"PAR1 not really")
    csv = tmp_path / "trials.csv"
    csv.write_bytes(csv.read_bytes()[:100])  # a header cut short: no round, no status
    with pytest.raises(ResultsError, match="is damaged .* and has no readable CSV copy"):
        ResultStore(tmp_path).read("trials")


def refuse(code: int):
    def write(path):
        raise OSError(code, os.strerror(code), str(path))

    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_refused_write_is_one_sentence_leaving_the_rows_and_no_temporary_file(tmp_path, monkeypatch, code):
    """As root, chmod does not stop a write: the file system's refusal is simulated where the
    table's bytes are written (pandas' writer), after the temporary file was opened."""
    store = ResultStore(tmp_path)
    store.append("trials", trial_rows(2))
    before = (tmp_path / "trials.parquet").read_bytes()

    def half_written(frame, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PAR1 half")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_written)
    with pytest.raises(UnwritableError) as refused:
        store.append("trials", trial_rows(1, start=2))
    message = str(refused.value)
    assert "\n" not in message and os.strerror(code) in message and "intact" in message
    assert isinstance(refused.value, UsageError)  # the CLI's one sentence and exit 2
    monkeypatch.undo()
    assert (tmp_path / "trials.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv", "trials.parquet"]


def test_a_folder_that_cannot_be_created_is_one_sentence(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    with pytest.raises(UnwritableError, match="Read-only file system"):
        ResultStore(tmp_path / "new")


HOLD = """
import sys, time
from pathlib import Path
from greenray.results import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_process_on_a_folder_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"in use by another greenray process \(pid {holder.pid}\)"
        with pytest.raises(FolderBusy, match=busy), folder_lock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    deadline = time.monotonic() + 30  # the kernel drops the lock with the process
    while True:
        try:
            with folder_lock(tmp_path):
                break
        except FolderBusy:
            assert time.monotonic() < deadline, "a killed process left its lock behind"
            time.sleep(0.1)
    assert (tmp_path / LOCK_FILE).exists()


def test_one_process_may_lock_a_folder_again_once_done(tmp_path):
    with folder_lock(tmp_path / "study"):
        pass
    with folder_lock(tmp_path / "study"):
        pass


def tune_state(folder, ran_in=None):
    """A Tune state in short, as Tune 2.60 writes it: the folder it ran in (`ran_in`, default
    `folder`) pickled in tuner.pkl and the search state, a list of trials that ended."""
    tune_dir = folder / "tune"
    tune_dir.mkdir(parents=True)
    storage = {"storage_path": str(ran_in or folder), "tuner": list(range(100))}
    (tune_dir / "tuner.pkl").write_bytes(pickle.dumps(storage))
    (tune_dir / "search_gen_state-1.json").write_bytes(pickle.dumps({"experiment": storage}))
    ended = [[json.dumps({"status": "TERMINATED"}), "{}"]] * 2  # as Tune 2.60 writes it, in short
    (tune_dir / "experiment_state-1.json").write_text(json.dumps({"trial_data": ended}))
    (tune_dir / "searcher-state-1.pkl").write_bytes(pickle.dumps({"points": [1.5] * 50}))
    return tune_dir


def test_whole_tune_state_written_in_this_folder_is_restored(tmp_path):
    tune_dir = tune_state(tmp_path)
    assert tunestate.state_problem(tune_dir, str(tmp_path), tmp_path, rows=2) is None


@pytest.mark.parametrize(
    "name", ["tuner.pkl", "experiment_state-1.json", "searcher-state-1.pkl", "search_gen_state-1.json"]
)
def test_a_truncated_tune_state_file_is_not_restored(tmp_path, name):
    tune_dir = tune_state(tmp_path)
    path = tune_dir / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert tunestate.state_problem(tune_dir, str(tmp_path), tmp_path, rows=2) == f"{name} is damaged"


def test_tune_state_that_names_another_folder_is_not_restored_whatever_study_json_says(tmp_path):
    """A copy whose study.json was edited, or written before study.json kept its folder: Tune's
    own state still names the folder it ran in (a prefix of this one's name is not enough)."""
    tune_dir = tune_state(tmp_path / "A", ran_in=tmp_path / "A2")  # A2 moved to A
    problem = tunestate.state_problem(tune_dir, None, tmp_path / "A", rows=2)
    assert problem == "tuner.pkl names another folder: it was moved or copied"


def test_tune_state_that_ended_trials_without_rows_is_not_restored(tmp_path):
    """A deleted trials table (its CSV gone too) or rows lost some other way: Tune would not
    run those trials again, so their slots would stay empty."""
    tune_dir = tune_state(tmp_path)
    problem = tunestate.state_problem(tune_dir, str(tmp_path), tmp_path, rows=1)
    assert problem == "it counts 2 trials ended, and 1 rows are stored"


def test_tune_state_of_a_moved_or_copied_folder_is_not_restored(tmp_path):
    tune_dir = tune_state(tmp_path / "B")
    problem = tunestate.state_problem(tune_dir, str(tmp_path / "A"), tmp_path / "B", rows=2)
    assert problem == f"the folder was moved or copied from {tmp_path / 'A'}"
    assert tunestate.set_aside(tune_dir) == tmp_path / "B" / tunestate.SET_ASIDE
    assert not tune_dir.exists()


def test_a_state_file_others_can_write_is_not_unpickled_without_the_override(tmp_path):
    tune_dir = tune_state(tmp_path)
    paths = tunestate.trusted_paths(tune_dir)
    check_trusted(tmp_path, paths)  # the user's own, writable by the user only
    os.chmod(tune_dir / "tuner.pkl", 0o666)
    with pytest.raises(UsageError, match=f"tuner.pkl is writable by every user.*pass {TRUST_FLAG}"):
        check_trusted(tmp_path, paths)
    check_trusted(tmp_path, paths, trust=True)


def test_a_folder_a_shared_group_can_write_or_another_user_owns_is_refused(tmp_path, monkeypatch):
    tune_dir = tune_state(tmp_path)
    real_lstat = os.lstat

    def shared(path, *args, **kwargs):  # tune/ as a group of other users (54321) could write it
        info = real_lstat(path, *args, **kwargs)
        if os.fspath(path) != os.fspath(tune_dir):
            return info
        return os.stat_result((stat.S_IFDIR | 0o775, *info[1:5], 54321, *info[6:10]))

    monkeypatch.setattr(os, "lstat", shared)
    with pytest.raises(UsageError, match="writable by the group 54321"):
        check_trusted(tmp_path, [tune_dir])
    monkeypatch.undo()
    check_trusted(tmp_path, [tune_dir])
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1000)  # the folder is now another user's
    with pytest.raises(UsageError, match=rf"is owned by another user \(uid {real}\)"):
        check_trusted(tmp_path, [tune_dir])
