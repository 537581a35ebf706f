"""Which of a meter's devices still answer: failed reads counted per device and retried (windows
bridge the gap), and the end of a device that is lost or fails for too long (its windows keep
what it measured until then and are marked partial)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from greenray.energy.backend import DeviceLost

log = logging.getLogger("greenray.energy")

# A device that fails this many reads in a row, over at least this long, has ended (a lost
# GPU, or one that needs a reset, ends at once).
END_AFTER_FAILURES = 10
END_AFTER_S = 2.0


@dataclass
class DeviceHealth:
    streak: int = 0  # failed reads in a row
    failing_since: float | None = None  # meter clock, s
    ended_at: float | None = None  # its last reading (meter clock, s), once it has ended
    reason: str = ""


class Health:
    """The health of each of `keys`' devices. `warn(key, message)` says a thing once per key;
    times are the meter's clock. Not thread-safe: the meter holds its lock around every call."""

    def __init__(self, keys: list[str], warn: Callable[[str, str], None]) -> None:
        self._keys = keys
        self._warn = warn
        self._devices = [DeviceHealth() for _ in keys]
        self.failing: set[int] = set()  # devices whose last read failed

    def __getitem__(self, i: int) -> DeviceHealth:
        return self._devices[i]

    def live(self, i: int) -> bool:
        return self._devices[i].ended_at is None

    def succeeded(self, i: int) -> None:
        health = self._devices[i]
        log.info("%s answers again after %d failed reads", self._keys[i], health.streak)
        health.streak, health.failing_since = 0, None
        self.failing.discard(i)

    def failed(self, i: int, exc: Exception, now: float, last_read: float) -> None:
        """A read of device i failed at `now`; `last_read` is when its last good one was taken
        (where its energy ends, if this ends it)."""
        health = self._devices[i]
        if health.ended_at is not None:
            return
        self.failing.add(i)
        health.streak += 1
        health.failing_since = health.failing_since if health.failing_since is not None else now
        if isinstance(exc, DeviceLost):
            self.end(i, str(exc), last_read, now)
        elif health.streak >= END_AFTER_FAILURES and now - health.failing_since >= END_AFTER_S:
            why = f"{health.streak} reads failed in a row over {now - health.failing_since:.1f} s ({exc})"
            self.end(i, why, last_read, now)
        elif health.streak == 1:
            why = f"a read of {self._keys[i]} failed ({exc}): retrying; windows bridge the gap"
            self._warn(f"transient:{i}", why)

    def end(self, i: int, reason: str, last_read: float, now: float) -> None:
        """Device i is no longer measured: its energy ends at its last reading (`now` if it
        never gave one)."""
        health, key = self._devices[i], self._keys[i]
        health.ended_at = last_read if math.isfinite(last_read) else now
        health.reason = f"{key} stopped answering: {reason}"
        self._warn(
            f"ended:{i}",
            f"energy of {key} is no longer measured: {reason}; windows keep what it measured "
            "until then and are marked partial",
        )
