"""The power sampler in a process of its own. It reads every device's power each interval and
writes the readings to a ring in shared memory; the meter drains the ring twice a second and
at every window edge.

Why a process: a sampler thread in the measured process wakes 100 times a second at 10 ms and
takes the GIL from the work each time. On a CPU trainable in Ray Tune that cost 6% of its
images/s (cpu-vm, docs/BENCHMARKS.md). A process of its own takes about 2% of a core beside
the work (22 ms of CPU a second there) and none of its GIL. The meter starts one only for
backends that can describe how another process opens the same devices (`spec()`), and only on
the system-wide monotonic clock. Until the process is ready, and after it fails, the meter
samples in a thread as before.

    python -m greenray.energy.sampler '<json: fd, specs, keys, interval_s, slow_read_s, parent>'
"""

from __future__ import annotations

import json
import math
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenray.energy.backend import Backend, DeviceLost, EnergyUnavailable

if TYPE_CHECKING:
    import numpy as np

# Header cells (float64): rows written so far, the busy flag, the stop flag, the process's pid
# once it is sampling, and 1.0 once it has given up (its reason is in message slot 0).
_WRITTEN, _BUSY, _STOP, _READY, _FAILED = range(5)
_HEADER = 8
MESSAGE_BYTES = 240
# Per device and row, what became of its reading.
OK, FAILED, LOST, SLOW, ENDED = range(5)
RING_S = 10.0  # the ring holds this much of the past: the meter drains it far more often
DRAIN_INTERVAL_S = 0.5
READY_TIMEOUT_S = 10.0  # a process that is not sampling by then is given up on
STALL_S = 2.0  # a ready process that writes nothing for this long is given up on too


class SampleRing:
    """The shared block: a header, `capacity` rows of (sequence number, per device: read time,
    Watts, status), and a message slot per device (why its last read failed)."""

    def __init__(self, buffer: Any, n_devices: int, capacity: int) -> None:
        self.n, self.capacity, self.width = n_devices, capacity, 1 + 3 * n_devices
        cells = _HEADER + capacity * self.width
        self._buffer = buffer
        self._cells = memoryview(buffer)[: 8 * cells].cast("d")
        self._text = memoryview(buffer)[8 * cells : 8 * cells + n_devices * MESSAGE_BYTES]

    @staticmethod
    def nbytes(n_devices: int, capacity: int) -> int:
        return 8 * (_HEADER + capacity * (1 + 3 * n_devices)) + n_devices * MESSAGE_BYTES

    # ---- the sampling process's side ---------------------------------------------------

    def write(self, stamps: list[float], watts: list[float], status: list[int]) -> None:
        """One row; its sequence number last, then the count, so a reader never takes a row
        that is half written (it checks the number)."""
        k = int(self._cells[_WRITTEN])
        base = _HEADER + (k % self.capacity) * self.width
        cells, n = self._cells, self.n
        for d in range(n):
            cells[base + 1 + d] = stamps[d]
            cells[base + 1 + n + d] = watts[d]
            cells[base + 1 + 2 * n + d] = status[d]
        cells[base] = k
        cells[_WRITTEN] = k + 1

    def say(self, device: int, message: str) -> None:
        data = message.encode("utf-8", "replace")[: MESSAGE_BYTES - 1]
        start = device * MESSAGE_BYTES
        self._text[start : start + MESSAGE_BYTES] = data.ljust(MESSAGE_BYTES, b"\0")

    def ready(self, pid: int) -> None:
        self._cells[_READY] = pid

    def fail(self, message: str) -> None:
        if self.n:
            self.say(0, message)
        self._cells[_FAILED] = 1.0

    def busy(self) -> bool:
        return self._cells[_BUSY] > 0

    def stopping(self) -> bool:
        return self._cells[_STOP] > 0

    # ---- the meter's side --------------------------------------------------------------

    @property
    def written(self) -> int:
        return int(self._cells[_WRITTEN])

    def is_ready(self) -> bool:
        return self._cells[_READY] > 0

    def failed(self) -> bool:
        return self._cells[_FAILED] > 0

    def set_busy(self, busy: bool) -> None:
        self._cells[_BUSY] = 1.0 if busy else 0.0

    def stop(self) -> None:
        self._cells[_STOP] = 1.0

    def message(self, device: int) -> str:
        start = device * MESSAGE_BYTES
        return bytes(self._text[start : start + MESSAGE_BYTES]).rstrip(b"\0").decode("utf-8", "replace")

    def rows(self, since: int) -> tuple[np.ndarray, int, int]:
        """The rows written from number `since` on that are still in the ring (stamps, Watts
        and status: n columns each), how many were lost to the writer lapping the reader, and
        the number to read from next time. (numpy is imported here, the meter's side: the
        sampling process starts faster without it.)"""
        import numpy as np

        written = self.written
        first = max(since, written - self.capacity + 1)  # the next slot may be mid-write
        if first >= written:
            return np.empty((0, self.width - 1)), first - since, max(since, written)
        numbers = np.arange(first, written)
        block = np.frombuffer(self._buffer, dtype=float, count=_HEADER + self.capacity * self.width)
        rows = block[_HEADER:].reshape(self.capacity, self.width)[numbers % self.capacity].copy()
        del block  # no view may outlive the map
        intact = rows[:, 0] == numbers
        return rows[intact, 1:], first - since + int((~intact).sum()), written

    def release(self) -> None:
        self._cells.release()
        self._text.release()


def child_env() -> dict[str, str]:
    """The sampling process's environment: this one, with the folder greenray was imported from
    first on PYTHONPATH. A Ray worker that has greenray through `runtime_env={"py_modules": ...}`
    holds it on sys.path only; the process could not import it otherwise."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return os.environ | {"PYTHONPATH": os.pathsep.join([root, path] if path else [root])}


class SamplerProcess:
    """The meter's handle on its sampling process: starts it, drains its ring, passes the busy
    flag (the simulated backend's power follows it), and stops it."""

    def __init__(self, specs: list[dict], keys: list[str], interval_s: float, slow_read_s: float) -> None:
        self.capacity = max(256, math.ceil(RING_S / interval_s))
        size = SampleRing.nbytes(len(keys), self.capacity)
        # /dev/shm where there is one (the block never touches a disk), unlinked at once: the
        # map and the process's inherited descriptor keep it, and nothing is left behind
        # whoever dies first.
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="greenray-sampler-", dir=folder)
        os.unlink(path)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
            self._process = self._spawn(fd, specs, keys, interval_s, slow_read_s)
        finally:
            os.close(fd)
        self.ring = SampleRing(self._map, len(keys), self.capacity)
        self._started = time.monotonic()
        self._stopped = False
        self._seen = 0
        self._last_new = math.inf
        self.lost_rows = 0

    def _spawn(
        self, fd: int, specs: list[dict], keys: list[str], interval_s: float, slow_read_s: float
    ) -> subprocess.Popen:
        args = {
            "fd": fd,
            "specs": specs,
            "keys": keys,
            "interval_s": interval_s,
            "slow_read_s": slow_read_s,
            "capacity": self.capacity,
            "parent": os.getpid(),
        }
        # A session of its own: a Ctrl-C meant for the work does not reach it; it ends when
        # told, or when the process it measures for is gone.
        return subprocess.Popen(
            [sys.executable, "-m", "greenray.energy.sampler", json.dumps(args)],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(fd,),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def problem(self) -> str | None:
        """Why this process can no longer be relied on, or None while it is (or may yet be)."""
        if self._stopped:
            return "it was stopped"
        code = self._process.poll()
        if self.ring.failed():
            return self.ring.message(0) or "it gave up"
        if code is not None:
            return f"it exited with code {code}"
        now = time.monotonic()
        if not self.ring.is_ready():
            late = now - self._started > READY_TIMEOUT_S
            return f"not sampling after {READY_TIMEOUT_S:g} s" if late else None
        if now - self._last_new > STALL_S:
            return f"no reading for {now - self._last_new:.1f} s (a read stalled)"
        return None

    def ready(self) -> bool:
        return not self._stopped and self.ring.is_ready() and not self.ring.failed()

    def drain(self) -> np.ndarray:
        """The rows written since the last drain (not thread-safe: the meter holds its lock)."""
        rows, lost, self._seen = self.ring.rows(self._seen)
        self.lost_rows += lost
        if len(rows) or (self._last_new == math.inf and self.ring.is_ready()):
            self._last_new = time.monotonic()
        return rows

    def set_busy(self, busy: bool) -> None:
        self.ring.set_busy(busy)

    def stop(self, timeout_s: float) -> None:
        """Ask the process to end; kill it if it has not within `timeout_s` (a read stuck in
        the driver: killing a process of its own is safe, unlike a thread's). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.ring.stop()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self.ring.release()
        self._map.close()


def open_spec(spec: dict) -> Backend:
    """The backend a `spec()` describes, opened in this process."""
    from greenray.energy.nvml import NvmlBackend
    from greenray.energy.rapl import RaplBackend
    from greenray.energy.simulated import SimulatedBackend

    kinds = {"nvml": NvmlBackend, "rapl": RaplBackend, "simulated": SimulatedBackend}
    return kinds[spec["backend"]](**spec.get("options", {}))


def sample_forever(
    ring: SampleRing, backends: list[Backend], interval_s: float, slow_read_s: float, parent: int
) -> None:
    """Read every device each interval until told to stop or the meter's process is gone."""
    columns = [(b, d) for b in backends for d in b.devices()]
    n = len(columns)
    ended = [False] * n
    busy = None
    next_t = time.monotonic()
    while not ring.stopping() and os.getppid() == parent:
        stamps, watts, status = [math.nan] * n, [math.nan] * n, [OK] * n
        before = time.monotonic()
        # The flag is read after the row's time: a row stamped after the meter set it reads
        # the new level (a model's step never lands late inside a window).
        if ring.busy() != busy:
            busy = ring.busy()
            for backend in backends:
                backend.set_busy(busy)
        for i, (backend, device) in enumerate(columns):
            if ended[i]:
                status[i] = ENDED
                continue
            try:
                value = backend.read_power_w(device)
            except Exception as exc:  # noqa: BLE001 (a backend's bug is a failed read, said once)
                lost = isinstance(exc, DeviceLost)
                status[i], ended[i] = (LOST, True) if lost else (FAILED, False)
                ring.say(i, str(exc) if isinstance(exc, EnergyUnavailable) else repr(exc))
                before = time.monotonic()
                continue
            after = time.monotonic()
            if after - before > slow_read_s:
                status[i] = SLOW
            else:
                stamps[i], watts[i] = before, value
            before = after
        ring.write(stamps, watts, status)
        next_t += interval_s
        delay = next_t - time.monotonic()
        if delay < 0:  # fell behind: skip, don't burst to catch up
            next_t, delay = time.monotonic(), 0.0
        time.sleep(delay)


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    block = mmap.mmap(args["fd"], 0)
    os.close(args["fd"])
    ring = SampleRing(block, len(args["keys"]), args["capacity"])
    try:
        backends = [open_spec(spec) for spec in args["specs"]]
        keys = [d.key for b in backends for d in b.devices()]
        if keys != args["keys"]:
            raise EnergyUnavailable(f"it sees devices {keys}, the meter {args['keys']}")
    except Exception as exc:  # noqa: BLE001 (any reason it cannot sample is reported, not raised)
        ring.fail(f"it could not open the devices ({exc})")
        return 1
    ring.ready(os.getpid())
    try:
        sample_forever(ring, backends, args["interval_s"], args["slow_read_s"], args["parent"])
    finally:
        for backend in backends:
            backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
