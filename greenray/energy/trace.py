"""The recent power samples of every device in a fixed-size ring, with running integrals, so
memory stays bounded however long a window is open: a window keeps the integrals at its
start and subtracts them at its end, and needs no sample it has seen. And `integrate`: the
Joules of any sampled power curve over an interval."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Per device and row: reading time, Watts, Joules so far, sampling error so far (J^2), whether
# the row holds a reading of it, and its readings so far. A row where a device gave no reading
# carries its previous time, Watts and sums, so each device's times are non-decreasing and a
# span is found by binary search.
_FIELDS = 6
_T, _W, _J, _B2, _OK, _N = range(_FIELDS)


def integrate(times: np.ndarray, watts: np.ndarray, t0: float, t1: float) -> float:
    """Joules of a sampled power curve over [t0, t1]: trapezoids between samples, the
    curve interpolated at the edges and held flat beyond the first and last sample."""
    if t1 <= t0 or len(times) == 0:
        return 0.0
    inside = (times > t0) & (times < t1)
    edge0, edge1 = np.interp([t0, t1], times, watts)
    t = np.concatenate(([t0], times[inside], [t1]))
    p = np.concatenate(([edge0], watts[inside], [edge1]))
    return float(np.trapezoid(p, t))


class PowerTrace:
    """The last `capacity` sample rows of `n_devices` devices.

    Each device's samples are integrated (trapezoids between its valid readings); `b2` sums the
    square of each segment's worst trapezoid error, |dW| x dt / 2 (a step anywhere inside the
    segment), which a window turns into its sampling error. Segments longer than `gap_s`
    (missed readings) count as if the power could have swung by `swing_w()` inside them.

    `append` only queues a reading (the sampler's hot path costs a list append); the queue is
    integrated in one vectorized pass when anything reads the trace, or every `FLUSH_ROWS`
    rows, and `on_rows(times, watts)` is told of every integrated batch (plain lists; NaN
    where a device gave no reading). Not thread-safe: the
    meter holds its lock around every call."""

    FLUSH_ROWS = 64
    SCALAR_ROWS = 4

    def __init__(
        self,
        n_devices: int,
        capacity: int,
        gap_s: float,
        limits_w: np.ndarray | None = None,
        on_rows: Callable[[list[float], list[list[float]]], None] | None = None,
    ) -> None:
        if capacity < 2 * self.FLUSH_ROWS:
            raise ValueError(f"a trace needs room for {2 * self.FLUSH_ROWS} rows at least")
        self.n = n_devices
        self.capacity = capacity
        self.gap_s = gap_s
        self._on_rows = on_rows
        # The most each device can draw: its power limit, else twice the most it was seen to.
        self._limits_w = limits_w if limits_w is not None else np.full(n_devices, np.nan)
        # Every row is written twice, at i and i + capacity, so the last `count` rows are
        # always one contiguous slice (no copy to unroll the ring).
        self._rows = np.full((2 * capacity, 1 + _FIELDS * n_devices), np.nan)
        self._next = 0
        self._count = 0
        self._pending: list[tuple[list[float], list[float]]] = []
        self.appended = 0
        # Rows integrated one by one (a window's edges), written into the ring together when it
        # is read: a numpy write per row costs more than the row's integration.
        self._unwritten: list[list[float]] = []
        # Per device: its last reading, running Joules and J^2, readings, lowest and highest.
        # Plain lists: the row-by-row path reads and writes them as floats.
        self._last_t = [-math.inf] * n_devices
        self._last_w = [math.nan] * n_devices
        self._joules = [0.0] * n_devices
        self._b2 = [0.0] * n_devices
        self._samples = [0] * n_devices
        self._lo = [math.inf] * n_devices
        self._hi = [-math.inf] * n_devices
        self._last_row_t = -math.inf

    # Reading any of these integrates what is queued first.

    @property
    def count(self) -> int:
        self._view()
        return self._count

    @property
    def last_row_t(self) -> float:
        self.flush()
        return self._last_row_t

    @property
    def last_t(self) -> np.ndarray:
        self.flush()
        return np.array(self._last_t, dtype=float)

    @property
    def last_w(self) -> np.ndarray:
        self.flush()
        return np.array(self._last_w, dtype=float)

    @property
    def joules(self) -> np.ndarray:
        self.flush()
        return np.array(self._joules, dtype=float)

    @property
    def b2(self) -> np.ndarray:
        self.flush()
        return np.array(self._b2, dtype=float)

    @property
    def samples(self) -> np.ndarray:
        self.flush()
        return np.array(self._samples, dtype=np.int64)

    def high_w(self) -> np.ndarray:
        """What each device may draw at most: its power limit, else twice its highest reading."""
        self.flush()
        return self._high_w()

    def swing_w(self) -> np.ndarray:
        """How far each device's power may swing: from its lowest reading to `high_w`."""
        self.flush()
        return self._swing_w()

    def _high_w(self) -> np.ndarray:
        hi = np.array(self._hi)
        seen = np.where(np.isfinite(hi), 2 * hi, 0.0)
        return np.where(np.isnan(self._limits_w), seen, self._limits_w)

    def _swing_w(self) -> np.ndarray:
        lo = np.array(self._lo)
        return np.maximum(self._high_w() - np.where(np.isfinite(lo), lo, 0.0), 0.0)

    # ---- writing -------------------------------------------------------------------

    def append(self, stamps: list[float], watts: list[float]) -> int:
        """Queue one reading per device (NaN: none) taken at `stamps`; returns how many rows were
        appended so far (two appends with nothing between them have consecutive numbers)."""
        self.appended += 1
        self._pending.append((stamps, watts))
        if len(self._pending) >= self.FLUSH_ROWS:
            self.flush()
        return self.appended

    def flush(self) -> None:
        """Integrate the queued readings. A reading older than the device's latest one is
        dropped (another thread got a later one in first). A few rows (a window's edge) are
        integrated one by one in plain Python, a batch (the sampler's) in one numpy pass: the
        same sums either way, at a fraction of numpy's fixed cost for a few rows."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if len(pending) <= self.SCALAR_ROWS:
            for stamps, watts in pending:
                self._integrate_row(stamps, watts)
        else:
            self._integrate_batch(pending)

    def _integrate_row(self, stamps: list[float], watts: list[float]) -> None:
        last_t, last_w = self._last_t, self._last_w
        row = [0.0] * (1 + _FIELDS * self.n)
        kept = [math.nan] * self.n
        row_t, swing = math.inf, None
        for d in range(self.n):
            t, w = stamps[d], watts[d]
            base = 1 + _FIELDS * d
            if w == w and t >= last_t[d]:  # a reading, not older than the latest
                t_before = last_t[d]
                if t_before > -math.inf:
                    dt = t - t_before
                    w_before = last_w[d]
                    self._joules[d] += (w + w_before) / 2 * dt
                    worst = abs(w - w_before) * dt / 2
                    if dt > self.gap_s:
                        swing = self._swing_w() if swing is None else swing
                        worst = max(worst, float(swing[d]) * dt / 2)
                    self._b2[d] += worst * worst
                last_t[d], last_w[d] = t, w
                self._samples[d] += 1
                self._lo[d], self._hi[d] = min(self._lo[d], w), max(self._hi[d], w)
                kept[d] = w
                row[base + _OK] = 1.0
                row_t = min(row_t, t)
            row[base + _T], row[base + _W] = last_t[d], last_w[d]
            row[base + _J], row[base + _B2], row[base + _N] = self._joules[d], self._b2[d], self._samples[d]
        if row_t == math.inf:
            return
        row[0] = row_t = max(row_t, self._last_row_t)
        self._unwritten.append(row)
        if len(self._unwritten) >= self.FLUSH_ROWS:
            self._write_rows()
        self._last_row_t = row_t
        if self._on_rows is not None:
            self._on_rows([row_t], [kept])

    def _integrate_batch(self, pending: list[tuple[list[float], list[float]]]) -> None:
        stamps = np.array([p[0] for p in pending], dtype=float).reshape(len(pending), self.n)
        watts = np.array([p[1] for p in pending], dtype=float).reshape(len(pending), self.n)
        last_t, last_w = np.array(self._last_t), np.array(self._last_w)
        ok = ~np.isnan(watts) & ~np.isnan(stamps)
        latest = np.maximum.accumulate(np.vstack([last_t, np.where(ok, stamps, -np.inf)]), axis=0)
        ok &= stamps >= latest[:-1]  # not older than an earlier reading of the same device
        keep = ok.any(axis=1)
        if not keep.any():
            return
        stamps, watts, ok = stamps[keep], watts[keep], ok[keep]
        k = len(stamps)
        # Each row's latest reading per device (carried over rows without one), and the one before.
        source = np.maximum.accumulate(np.where(ok, np.arange(k)[:, None], -1), axis=0)
        carried_t = np.where(source >= 0, np.take_along_axis(stamps, np.maximum(source, 0), 0), last_t)
        carried_w = np.where(source >= 0, np.take_along_axis(watts, np.maximum(source, 0), 0), last_w)
        before_t = np.vstack([last_t, carried_t[:-1]])
        before_w = np.vstack([last_w, carried_w[:-1]])
        seen = ok & np.isfinite(before_t)
        dt = np.where(seen, stamps - before_t, 0.0)
        segment_j = np.where(seen, (watts + before_w) / 2 * dt, 0.0)
        worst = np.where(seen, np.abs(watts - before_w) * dt / 2, 0.0)
        worst = np.where(seen & (dt > self.gap_s), np.maximum(worst, self._swing_w() * dt / 2), worst)
        joules = np.array(self._joules) + np.cumsum(segment_j, axis=0)
        b2 = np.array(self._b2) + np.cumsum(worst * worst, axis=0)
        samples = np.array(self._samples) + np.cumsum(ok, axis=0)
        with np.errstate(invalid="ignore"):
            row_t = np.nanmin(np.where(ok, stamps, np.nan), axis=1)
        row_t = np.maximum.accumulate(np.maximum(row_t, self._last_row_t))
        fields = np.stack([carried_t, carried_w, joules, b2, ok.astype(float), samples], axis=2)
        self._write_rows()
        self._write(np.hstack([row_t[:, None], fields.reshape(k, _FIELDS * self.n)]))
        self._last_t, self._last_w = carried_t[-1].tolist(), carried_w[-1].tolist()
        self._joules, self._b2, self._samples = joules[-1].tolist(), b2[-1].tolist(), samples[-1].tolist()
        kept = np.where(ok, watts, np.nan)
        self._lo = np.fmin(self._lo, np.where(ok, watts, np.inf).min(axis=0)).tolist()
        self._hi = np.fmax(self._hi, np.where(ok, watts, -np.inf).max(axis=0)).tolist()
        self._last_row_t = float(row_t[-1])
        if self._on_rows is not None:
            self._on_rows(row_t.tolist(), kept.tolist())

    def _write_rows(self) -> None:
        if self._unwritten:
            block, self._unwritten = np.array(self._unwritten, dtype=float), []
            self._write(block)

    def _write(self, block: np.ndarray) -> None:
        slots = (self._next + np.arange(len(block))) % self.capacity
        self._rows[slots] = block
        self._rows[slots + self.capacity] = block
        self._next = int((self._next + len(block)) % self.capacity)
        self._count = min(self._count + len(block), self.capacity)

    # ---- reading -------------------------------------------------------------------

    def _view(self) -> np.ndarray:
        self.flush()
        self._write_rows()
        end = self._next + self.capacity
        return self._rows[end - self._count : end]

    @property
    def oldest_t(self) -> float:
        """The time of the oldest row kept (inf when empty)."""
        view = self._view()
        return float(view[0, 0]) if len(view) else math.inf

    def rows(self, t0: float | None = None, t1: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row times and Watts (NaN where a device gave no reading) in [t0, t1]."""
        view = self._view()
        times = view[:, 0]
        lo = 0 if t0 is None else int(np.searchsorted(times, t0, "left"))
        hi = len(times) if t1 is None else int(np.searchsorted(times, t1, "right"))
        part = view[lo:hi, 1:].reshape(hi - lo, self.n, _FIELDS)
        watts = np.where(part[:, :, _OK] > 0, part[:, :, _W], np.nan)
        return times[lo:hi].copy(), watts

    def at(self, device: int, t: float, hold: bool = True) -> tuple[float, float, int] | None:
        """Device `device`'s running Joules and sampling error (J^2) at time `t`, and the
        number of its readings up to `t`: linear between the readings around `t`; past its
        last reading held flat (`hold`) or stopped there. None when the ring no longer
        reaches back to `t` (the caller keeps what it took earlier)."""
        view = self._view()
        if not len(view):
            return None
        cols = view[:, 1 + _FIELDS * device : 1 + _FIELDS * (device + 1)]
        stamps = cols[:, _T]
        b = int(np.searchsorted(stamps, t, "right"))  # first row whose reading is after t
        a = b - 1
        before_first = a < 0 or not np.isfinite(stamps[a])
        if before_first and self._count == self.capacity:
            return None  # the readings before t have left the ring
        if before_first:
            if b >= len(stamps):
                return None
            tb, wb, jb = stamps[b], cols[b, _W], cols[b, _J]
            return float(jb - wb * (tb - t)), float(cols[b, _B2]), int(cols[b, _N]) - 1  # held flat back
        ta, wa, ja, b2a, na = cols[a, _T], cols[a, _W], cols[a, _J], cols[a, _B2], int(cols[a, _N])
        if b < len(stamps):
            tb, wb = cols[b, _T], cols[b, _W]
            wt = wa + (wb - wa) * (t - ta) / (tb - ta) if tb > ta else wa
            return float(ja + (t - ta) * (wa + wt) / 2), float(b2a), na
        extra = wa * (t - ta) if hold else 0.0
        return float(ja + extra), float(b2a), na

    def state(self, device: int, t: float, hold: bool = True) -> tuple[float, float, int] | None:
        """`at`, from the running sums when `t` is at or after the device's latest reading (a
        window's edge just sampled): a few float operations, no search of the ring."""
        self.flush()
        last = self._last_t[device]
        if last == -math.inf or t < last:
            return self.at(device, t, hold)
        extra = self._last_w[device] * (t - last) if hold else 0.0
        return self._joules[device] + extra, self._b2[device], self._samples[device]

    def b2_after(self, device: int, t: float) -> float:
        """The sampling error sum through the first segment that ends after `t`: a window's
        last partial segment counts whole (its error is not known to be smaller)."""
        view = self._view()
        cols = view[:, 1 + _FIELDS * device : 1 + _FIELDS * (device + 1)]
        b = int(np.searchsorted(cols[:, _T], t, "right"))
        return float(cols[b, _B2]) if b < len(cols) else float(self._b2[device])

    def nbytes(self) -> int:
        return int(self._rows.nbytes)
