"""The recent power samples of every device in a fixed-size ring, with running integrals, so
memory stays bounded however long a window is open: a window keeps the integrals at its
start and subtracts them at its end, and needs no sample it has seen."""

from __future__ import annotations

import math

import numpy as np

# Per device and row: reading time, Watts, Joules so far, sampling error so far (J^2), whether
# the row holds a reading of it, and its readings so far. A row where a device gave no reading
# carries its previous time, Watts and sums, so each device's times are non-decreasing and a
# span is found by binary search.
_FIELDS = 6
_T, _W, _J, _B2, _OK, _N = range(_FIELDS)


class PowerTrace:
    """The last `capacity` sample rows of `n_devices` devices.

    Each device's samples are integrated as they arrive (trapezoids between its valid
    readings); `b2` sums the square of each segment's worst trapezoid error, |dW| x dt / 2
    (a step anywhere inside the segment), which a window turns into its sampling error.
    Segments longer than `gap_s` (missed readings) count as if the power could have swung by
    `swing_w()` inside them. Not thread-safe: the meter holds its lock around every call."""

    def __init__(
        self, n_devices: int, capacity: int, gap_s: float, limits_w: np.ndarray | None = None
    ) -> None:
        if capacity < 2:
            raise ValueError("a trace needs room for two rows at least")
        self.n = n_devices
        self.capacity = capacity
        self.gap_s = gap_s
        # The most each device can draw: its power limit, else twice the most it was seen to.
        self._limits_w = limits_w if limits_w is not None else np.full(n_devices, np.nan)
        # Every row is written twice, at i and i + capacity, so the last `count` rows are
        # always one contiguous slice (no copy to unroll the ring).
        self._rows = np.full((2 * capacity, 1 + _FIELDS * n_devices), np.nan)
        self._next = 0
        self.count = 0
        # Per device: its last reading, running Joules and J^2, readings, lowest and highest.
        self._last_t = [-math.inf] * n_devices
        self._last_w = [math.nan] * n_devices
        self._joules = [0.0] * n_devices
        self._b2 = [0.0] * n_devices
        self._count_d = [0] * n_devices
        self._lo = [math.inf] * n_devices
        self._hi = [-math.inf] * n_devices
        self.last_row_t = -math.inf

    @property
    def last_t(self) -> np.ndarray:
        return np.array(self._last_t)

    @property
    def last_w(self) -> np.ndarray:
        return np.array(self._last_w)

    @property
    def joules(self) -> np.ndarray:
        return np.array(self._joules)

    @property
    def b2(self) -> np.ndarray:
        return np.array(self._b2)

    @property
    def samples(self) -> np.ndarray:
        return np.array(self._count_d)

    def high_w(self) -> np.ndarray:
        """What each device may draw at most: its power limit, else twice its highest reading."""
        hi = np.array(self._hi)
        seen = np.where(np.isfinite(hi), 2 * hi, 0.0)
        return np.where(np.isnan(self._limits_w), seen, self._limits_w)

    def swing_w(self) -> np.ndarray:
        """How far each device's power may swing: from its lowest reading to `high_w`."""
        lo = np.array(self._lo)
        return np.maximum(self.high_w() - np.where(np.isfinite(lo), lo, 0.0), 0.0)

    # ---- writing -------------------------------------------------------------------

    def append(self, stamps: list[float], watts: list[float]) -> list[float] | None:
        """Add one reading per device (NaN: none) taken at `stamps`; a reading older than the
        device's last one is dropped (another thread got a later one in first). Returns the
        readings kept (NaN where none), or None when the row held nothing new. Plain Python:
        for a handful of devices it is several times faster than numpy on arrays this small."""
        n, gap_s = self.n, self.gap_s
        last_t, last_w, joules, b2 = self._last_t, self._last_w, self._joules, self._b2
        kept = [math.nan] * n
        row = [0.0] * (1 + _FIELDS * n)
        swing = None
        row_t = math.inf
        for d in range(n):
            t, w = stamps[d], watts[d]
            base = 1 + _FIELDS * d
            if w == w and t >= last_t[d]:
                t_prev = last_t[d]
                if t_prev > -math.inf:
                    dt = t - t_prev
                    w_prev = last_w[d]
                    joules[d] += (w + w_prev) * dt / 2
                    worst = abs(w - w_prev) * dt / 2
                    if dt > gap_s:  # missed readings: the power may have swung anywhere inside
                        swing = self.swing_w() if swing is None else swing
                        worst = max(worst, float(swing[d]) * dt / 2)
                    b2[d] += worst * worst
                last_t[d], last_w[d] = t, w
                self._count_d[d] += 1
                if w < self._lo[d]:
                    self._lo[d] = w
                if w > self._hi[d]:
                    self._hi[d] = w
                kept[d] = w
                row[base + _OK] = 1.0
                row_t = min(row_t, t)
            row[base + _T] = last_t[d]
            row[base + _W] = last_w[d]
            row[base + _J] = joules[d]
            row[base + _B2] = b2[d]
            row[base + _N] = self._count_d[d]
        if row_t == math.inf:
            return None
        row[0] = row_t = max(row_t, self.last_row_t)
        self._rows[self._next] = row
        self._rows[self._next + self.capacity] = self._rows[self._next]
        self._next = (self._next + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)
        self.last_row_t = row_t
        return kept

    # ---- reading -------------------------------------------------------------------

    def _view(self) -> np.ndarray:
        end = self._next + self.capacity
        return self._rows[end - self.count : end]

    @property
    def oldest_t(self) -> float:
        """The time of the oldest row kept (inf when empty)."""
        return float(self._view()[0, 0]) if self.count else math.inf

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
        if not self.count:
            return None
        view = self._view()
        cols = view[:, 1 + _FIELDS * device : 1 + _FIELDS * (device + 1)]
        stamps = cols[:, _T]
        b = int(np.searchsorted(stamps, t, "right"))  # first row whose reading is after t
        a = b - 1
        before_first = a < 0 or not np.isfinite(stamps[a])
        if before_first and self.count == self.capacity:
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

    def b2_after(self, device: int, t: float) -> float:
        """The sampling error sum through the first segment that ends after `t`: a window's
        last partial segment counts whole (its error is not known to be smaller)."""
        view = self._view()
        cols = view[:, 1 + _FIELDS * device : 1 + _FIELDS * (device + 1)]
        b = int(np.searchsorted(cols[:, _T], t, "right"))
        return float(cols[b, _B2]) if b < len(cols) else float(self.b2[device])

    def nbytes(self) -> int:
        return int(self._rows.nbytes)
