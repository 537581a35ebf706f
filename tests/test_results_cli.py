"""A results folder as the CLI meets it, without Ray (the folder is locked, and so checked,
before Ray starts): a second process on one --out is refused at once in one sentence, and a
read-only --out is one sentence too, for hpo and run (exit 2, no traceback)."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greenray.cli import app
from greenray.results.lock import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from pathlib import Path
from greenray.results import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def hpo(out) -> list[str]:
    return ["hpo", "--rounds", "2", "--epochs", "1", "--energy", "simulated", "--out", str(out)]


def run(out) -> list[str]:
    return ["run", str(ROOT / "experiments" / "strategies.yaml"), "--scale", "0.05", "--out", str(out)]


def one_sentence(result, phrase: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and phrase in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("command", [hpo, run])
def test_a_second_process_on_one_out_is_refused_at_once(tmp_path, command):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, command(out))
    finally:
        holder.kill()
        holder.wait(timeout=60)
    one_sentence(result, f"{out} is in use by another greenray process (pid {holder.pid})")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing else was written


@pytest.mark.parametrize("command", [hpo, run])
def test_a_read_only_out_is_one_sentence(tmp_path, monkeypatch, command):
    """As root, chmod does not stop a write: the file system's refusal (EROFS) is simulated
    for every file opened under --out."""
    out = tmp_path / "out"
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    result = CliRunner().invoke(app, command(out))
    one_sentence(result, "(Read-only file system): what was written before is intact")
