"""One process at a time in a results folder: an advisory lock (flock) on DIR/.greenray.lock,
held while a command writes there. The operating system drops it when the process ends, however
it ends (kill -9 too), so a crash leaves no stale lock; the file itself stays, harmless."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from greenray.results.store import ResultsError, make_folder, unwritable

LOCK_FILE = ".greenray.lock"


class FolderBusy(ResultsError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    """Hold `folder`'s lock (creating the folder) until the block ends; FolderBusy at once
    where another process holds it, UnwritableError where the folder takes no file."""
    path = make_folder(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise unwritable(path, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(
                f"{folder} is in use by another greenray process{_holder(fd)}: wait for it to end, "
                "or choose another --out"
            ) from None
        with contextlib.suppress(OSError):  # the holder's pid is for the message only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """ " (pid N)" from the lock file, where the holder wrote it."""
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
    return ""
