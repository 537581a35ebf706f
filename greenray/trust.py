"""Whose results folder a resume may unpickle. Ray Tune keeps its state as pickles (tuner.pkl,
the searcher's state), and unpickling runs whatever code the pickle names: resuming a folder
that someone else could have written is running their code. A resume reads such state only
from a folder the user owns and no one else can write, unless told to trust it. Light on
purpose (os and stat only): the CLI reads the help text below at import."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from greenray.errors import UsageError

TRUST_FLAG = "--trust-folder"
RESUME_HELP = (
    "Continue the interrupted study in this results folder. Resuming unpickles Ray Tune's saved "
    "state, which can run code: resume only folders you wrote (a folder another user owns or can "
    f"write is refused unless {TRUST_FLAG} is given)."
)
TRUST_HELP = (
    "With --resume: unpickle the folder's Ray Tune state even where another user owns it or can "
    "write it (only for a folder whose writers you trust: a pickle can run code)."
)


def check_trusted(folder: Path, paths: Iterable[Path], *, trust: bool = False) -> None:
    """A UsageError naming TRUST_FLAG where `folder` or one of `paths` (the pickles a resume
    would load, and the folders that hold them) is owned by another user or writable by
    others, unless `trust`."""
    if trust:
        return
    for path in (folder, *paths):
        why = _untrusted(path)
        if why:
            raise UsageError(
                f"--resume {folder}: {path} {why}, and resuming unpickles Ray Tune's state there, which "
                f"can run code; resume only folders you wrote, or pass {TRUST_FLAG} if you trust its writers"
            )


def _untrusted(path: Path) -> str | None:
    """Why another user could have written `path` (None: only this user could)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    user = os.geteuid()
    if info.st_uid != user:
        return f"is owned by another user (uid {info.st_uid})"
    if info.st_mode & stat.S_IWOTH:
        return "is writable by every user"
    if info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid, user):
        return f"is writable by the group {_group_name(info.st_gid)}"
    return None


def _private_group(gid: int, uid: int) -> bool:
    """Whether `gid` is `uid`'s own group (a user-private group: the user's name, no other
    member), where a umask of 002 makes files group-writable without opening them to anyone."""
    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(uid)
    except KeyError:
        return False
    return group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
