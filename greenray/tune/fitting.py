"""Running a study's Tuner: Tune's console output and its loggers of failed trials kept quiet
(the rows and the progress bar say it in one line each), and a write that the file system
refused, in greenray's rows or in Tune's own state, turned into one sentence."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from greenray.results import UnwritableError

# Tune's newer console output prints its own tables whatever the verbosity; the legacy one is
# silent at verbose=0, and the study draws its own progress bar (TrialProgress).
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0"}
# Loggers that print a failed trial's traceback and a list of failed trials: the rows (status,
# error) and the progress bar say it in one line each.
# On a resume, Tune also warns of each trial that had not reported yet: the row count says it.
TRIAL_ERROR_LOGGERS = (
    "ray.tune.execution.tune_controller",
    "ray.tune.tune",
    "ray.tune.analysis.experiment_analysis",
)
# A file system's refusals of a write: a full disk or quota, a read-only folder or mount.
REFUSED_WRITES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
FREE_SPACE = "the rows written before are intact; free some space or make it writable, then resume"


def fit(tuner) -> None:
    """tuner.fit(), quiet about failed trials; a write the file system refused (a full disk, a
    read-only folder), in greenray's rows or Tune's own state, is one sentence."""
    with _quiet_trial_errors():
        try:
            tuner.fit()
        except Exception as exc:
            refused = refused_write(exc)
            if refused is None:
                raise
            raise refused from None


def refused_write(exc: BaseException | None) -> UnwritableError | None:
    """The UnwritableError (or a file system's refusal as one) in an exception's chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UnwritableError):
            return exc
        if isinstance(exc, OSError) and exc.errno in REFUSED_WRITES:
            return UnwritableError(f"cannot write in the results folder ({exc.strerror}): " + FREE_SPACE)
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def _quiet_trial_errors() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in TRIAL_ERROR_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quiet_tune() -> None:
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
