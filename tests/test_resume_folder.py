"""Resuming a study folder on the session's local Ray: a moved or copied folder goes on in that
folder (its rows there, the original untouched), and Tune state that is damaged or that lost
trials' rows is set aside for a fresh Tune experiment that starts from greenray's rows, whose
searcher proposes what the uninterrupted study did. A full disk mid-study is one sentence."""

import errno
import json
import os
import shutil

import pandas as pd
import pytest

from greenray.config import StudyConfig
from greenray.results import ResultStore, UnwritableError
from greenray.tune import tunestate
from greenray.tune.study import resume_study, start_study

SETTINGS = {
    "strategy": "random",
    "rounds": 4,
    "repetitions": 1,
    "epochs": 1,
    "energy": "simulated",
    "idle_seconds": 0.1,
    "max_concurrent": 1,
}
KEPT = 2  # the rows an interrupted study had stored


@pytest.fixture(scope="module")
def finished(ray_local, tmp_path_factory):
    """A study that ran to its end: the reference a resumed one must match."""
    out = tmp_path_factory.mktemp("finished") / "A"
    start_study(StudyConfig.from_flat(SETTINGS), out, say=lambda line: None)
    return out, pd.read_parquet(out / "trials.parquet")


def interrupted_copy(source, target, *, moved: bool = True):
    """A copy of the finished study that had stored only its first KEPT rows; `moved`: its
    study.json still names the folder it ran in (as after mv or cp), else this one."""
    shutil.copytree(source, target)
    store = ResultStore(target)
    rows = store.read("trials").sort_values("finished_at").head(KEPT)
    for suffix in ("parquet", "csv"):
        (target / f"trials.{suffix}").unlink()
    ResultStore(target).append("trials", rows.to_dict("records"))
    if not moved:
        record = json.loads((target / "study.json").read_text())
        (target / "study.json").write_text(json.dumps(record | {"out": str(target)}))
    return rows


def slots(rows):
    return sorted(zip(rows["round"], rows["repetition"], rows["config"], strict=True))


def test_a_moved_or_copied_folder_resumes_in_that_folder_and_leaves_the_original(finished, tmp_path):
    original, reference = finished
    before = (original / "trials.parquet").read_bytes()
    kept = interrupted_copy(original, tmp_path / "B")
    lines = []
    run = resume_study(tmp_path / "B", say=lines.append)
    assert run.complete and run.root == tmp_path / "B"
    trials = pd.read_parquet(tmp_path / "B" / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert slots(trials) == slots(reference)  # the same configurations as the uninterrupted study
    assert set(kept["trial_id"]) <= set(trials["trial_id"])  # the stored rows kept as they were
    assert any("moved or copied from" in line for line in lines)
    assert (original / "trials.parquet").read_bytes() == before  # nothing went to the original
    assert json.loads((tmp_path / "B" / "study.json").read_text())["out"] == str(tmp_path / "B")
    assert (tmp_path / "B" / tunestate.SET_ASIDE).is_dir()
    assert not [p for p in (tmp_path / "B").rglob(".*tmp-*")]


def test_a_truncated_searcher_state_gives_way_to_the_rows(finished, tmp_path):
    """A truncated searcher pickle (a resume used to hang on it): the study resumes from its rows."""
    original, reference = finished
    folder = tmp_path / "C"
    interrupted_copy(original, folder, moved=False)
    state = sorted((folder / "tune").glob("search_gen_state-*.json"))[-1]
    state.write_bytes(state.read_bytes()[:100])
    lines = []
    assert resume_study(folder, say=lines.append).complete
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 4 and slots(trials) == slots(reference)
    assert any(f"{state.name} is damaged" in line for line in lines), lines


def test_tune_state_that_counts_trials_without_rows_gives_way_to_the_rows(ray_local, tmp_path):
    """Rows lost in place (a table deleted with its CSV copy, say): Tune counts those trials as
    ended and would never run them again; the study resumes from the rows it has."""
    folder = tmp_path / "D"
    start_study(StudyConfig.from_flat(SETTINGS), folder, say=lambda line: None)
    reference = pd.read_parquet(folder / "trials.parquet")
    kept = reference.sort_values("finished_at").head(KEPT)
    for suffix in ("parquet", "csv"):
        (folder / f"trials.{suffix}").unlink()
    ResultStore(folder).append("trials", kept.to_dict("records"))
    lines = []
    assert resume_study(folder, say=lines.append).complete
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 4 and slots(trials) == slots(reference)
    assert any(f"trials ended, and {KEPT} rows are stored" in line for line in lines), lines


def test_a_disk_that_fills_mid_study_is_one_sentence_and_keeps_the_rows(ray_local, tmp_path, monkeypatch):
    """The third row cannot be written (ENOSPC, simulated where the table's bytes are written:
    the tests run as root, whom chmod does not stop): the study ends in an UnwritableError
    (the CLI's one sentence and exit 2), the two rows before it intact, no temporary file."""
    from greenray.results import store as results_store

    written = []
    real = results_store.atomic_write

    def filling(path, write):
        if path.name == "trials.parquet" and len(written) >= 2:
            raise results_store.unwritable(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real(path, write)
        if path.name == "trials.parquet":
            written.append(path)

    monkeypatch.setattr(results_store, "atomic_write", filling)
    with pytest.raises(UnwritableError, match="No space left on device"):
        start_study(StudyConfig.from_flat(SETTINGS), tmp_path / "full", say=lambda line: None)
    monkeypatch.undo()
    trials = pd.read_parquet(tmp_path / "full" / "trials.parquet")
    assert len(trials) == 2 and len(pd.read_csv(tmp_path / "full" / "trials.csv")) == 2
    assert not [p for p in (tmp_path / "full").rglob(".*tmp-*")]
