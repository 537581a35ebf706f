"""Whether a results folder's Ray Tune state (DIR/tune) may be restored, or the study goes on
from greenray's own rows in a fresh Tune experiment instead.

greenray's rows (DIR/trials.parquet, .csv) are the study's record; Tune's state is a cache of
where its searcher was. It is restored only where it is whole and was written for this very
folder: Tune keeps the absolute path it ran in, so a moved or copied folder restored as is
would send new trials (and rows) to the old path, and a truncated state file makes
Tuner.restore hang, fail, or run nothing. Pure Python: files are checked without unpickling
them (pickletools walks a pickle's opcodes without running any)."""

from __future__ import annotations

import io
import json
import pickletools
import shutil
from pathlib import Path

SET_ASIDE = "tune.old"  # where Tune's state goes when the study starts a fresh Tune experiment
EXPERIMENT_STATE = "experiment_state-*.json"  # Tune's list of trials (newest: the last by name)
ENDED = ("TERMINATED", "ERROR")
SEARCH_STATE = "search_gen_state-*.json"  # Tune's search state (a pickle, despite its name)


def state_problem(tune_dir: Path, recorded_out: str | None, out: Path, rows: int) -> str | None:
    """Why the Tune state in `tune_dir` cannot be restored for the study in `out` (None: it
    can); `recorded_out` is the folder the study ran in (study.json's `out`), `rows` the
    trial rows stored there: Tune does not run again a trial it counts as ended, so a state
    that counts more ended trials than there are rows would leave their slots empty."""
    if not (tune_dir / "tuner.pkl").exists():
        return "Tune saved no state there"
    if recorded_out and Path(recorded_out).resolve() != out.resolve():
        return f"the folder was moved or copied from {recorded_out}"
    for path in sorted(state_files(tune_dir)):
        if not _whole(path):
            return f"{path.name} is damaged"
    for path in _path_holders(tune_dir):
        if not _names(path.read_bytes(), str(out)):
            return f"{path.name} names another folder: it was moved or copied"
    ended = ended_trials(tune_dir)
    if ended is None:
        return "its experiment state cannot be read"
    if ended > rows:
        return f"it counts {ended} trials ended, and {rows} rows are stored"
    return None


def ended_trials(tune_dir: Path) -> int | None:
    """The trials Tune's newest experiment state counts as ended (terminated or failed), as
    Tuner.restore reads it (None: no state, or not in the form Ray 2.60 writes)."""
    states = sorted(tune_dir.glob(EXPERIMENT_STATE))
    if not states:
        return None
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
        statuses = [json.loads(trial[0])["status"] for trial in trials]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return sum(status in ENDED for status in statuses)


def state_files(tune_dir: Path) -> list[Path]:
    """The files Tuner.restore reads: Tune's own state beside its trial folders."""
    if not tune_dir.is_dir():
        return []
    return [p for p in tune_dir.iterdir() if p.is_file() and p.suffix in (".pkl", ".json")]


def trusted_paths(tune_dir: Path) -> list[Path]:
    """What a restore unpickles and the folder that holds it: the paths whose writers decide
    what code a resume runs (greenray.trust.check_trusted)."""
    return [tune_dir, *state_files(tune_dir)] if tune_dir.is_dir() else []


def set_aside(tune_dir: Path) -> Path | None:
    """Move Tune's state out of the way of a fresh Tune experiment (an earlier set-aside state
    is replaced); where it went, or None where there was none."""
    if not tune_dir.exists():
        return None
    target = tune_dir.with_name(SET_ASIDE)
    if target.exists():
        shutil.rmtree(target)
    tune_dir.rename(target)
    return target


def _path_holders(tune_dir: Path) -> list[Path]:
    """The state files that hold the folder Tune ran in, as the string it was given: the
    Tuner's run config, and the newest search state (the trials it creates go there)."""
    searches = sorted(tune_dir.glob(SEARCH_STATE))
    return [tune_dir / "tuner.pkl", *searches[-1:]]


def _names(pickled: bytes, text: str) -> bool:
    """Whether a pickle holds the string `text` whole (as pickle writes a str: a length, then
    its UTF-8 bytes), not merely as the start of a longer one."""
    raw = text.encode()
    short = b"\x8c" + bytes([len(raw)]) + raw if len(raw) < 256 else None
    long = b"X" + len(raw).to_bytes(4, "little") + raw
    return (short is not None and short in pickled) or long in pickled


def _whole(path: Path) -> bool:
    """Whether a state file reads to its end: a pickle whose opcodes end in STOP at the last
    byte, or JSON that parses."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    if data[:1] == b"\x80":  # a pickle (Tune names some of its pickles .json)
        return _whole_pickle(data)
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _whole_pickle(data: bytes) -> bool:
    stream = io.BytesIO(data)
    last = None
    try:
        for opcode, _, _ in pickletools.genops(stream):
            last = opcode.name
    except (ValueError, EOFError):  # genops raises ValueError at a truncated opcode
        return False
    return last == "STOP" and stream.tell() == len(data)
