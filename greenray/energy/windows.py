"""A meter's open windows (EnergyMeter.begin_window / end_window / read_window), by name: opened
and closed on the meter's sensor (a power reading, and edge counter reads where they are cheap),
given the background counter reads that fall in them, and measured at their close; how a
window's Joules are read off the trace is in window.py."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from greenray.energy.calibration import Anchor
from greenray.energy.measurement import Measurement
from greenray.energy.sensor import Sensor, synchronize_cuda
from greenray.energy.window import Window, fold, measure


class Windows:
    """The windows open on a sensor (`open`: None for one being opened); `idle_w()` is the
    baseline their idle-free Joules subtract."""

    def __init__(
        self, sensor: Sensor, idle_w: Callable[[], dict[str, float]], warn: Callable[[str, str], None]
    ):
        self.open: dict[str, Window | None] = {}
        self._sensor = sensor
        self._idle_w = idle_w
        self._warn = warn

    def begin(self, name: str, *, counter: bool, busy: bool) -> None:
        sensor, n = self._sensor, len(self._sensor.devices)
        with sensor.lock:
            if name in self.open:
                raise ValueError(f"a window named {name!r} is already open")
            self.open[name] = None
            if busy:
                sensor.add_busy(1)
        try:
            # Sampled before t0 is taken: the window then starts on a reading of the power its
            # work draws (the busy step is before it), not on a line from the last idle one.
            sensor.sample()
            edge = [
                i
                for i, c in enumerate(sensor.devices.all)
                if counter and c.edge_counter and sensor.devices.live(i)
            ]
            t0, counters = sensor.edge_counters(edge)
            with sensor.lock:
                window = Window(
                    name=name,
                    t0=t0,
                    wall0=time.time() - (sensor.clock() - t0),
                    busy=busy,
                    start=[sensor.trace.at(i, t0) for i in range(n)],
                    counters=counters,
                    anchors=[None] * n,
                    peak_w=[math.nan] * n,
                )
                self.catch_up(window)
                self.open[name] = window
        except BaseException:
            with sensor.lock:
                self.open.pop(name, None)
                if busy:
                    sensor.add_busy(-1)
            raise

    def end(self, name: str) -> Measurement:
        synchronize_cuda()
        with self._sensor.lock:
            window = self.open.get(name)
            if window is None:
                raise ValueError(f"no open window named {name!r}")
            del self.open[name]
        try:
            return self._close_reading(window)
        finally:
            if window.busy:
                with self._sensor.lock:
                    self._sensor.add_busy(-1)

    def read(self, name: str) -> Measurement:
        synchronize_cuda()
        with self._sensor.lock:
            window = self.open.get(name)
            if window is None:
                raise ValueError(f"no open window named {name!r}")
        return self._close_reading(window)

    def _close_reading(self, window: Window) -> Measurement:
        sensor = self._sensor
        edge = [i for i in window.counters if sensor.devices.live(i)]
        t1, counters = sensor.edge_counters(edge)
        sensor.sample()
        with sensor.lock:
            self.catch_up(window)
            idle_w = self._idle_w()
            states = [sensor.devices.state(i, idle_w) for i in range(len(sensor.devices))]
            return measure(
                window, states, t1, counters, sensor.trace, self._warn, sensor.devices.power_field()
            )

    def give_anchor(self, i: int, t: float, anchor: Anchor) -> None:
        """A background counter read of device `i`: the open windows it falls in that have none
        yet take it as their first."""
        for window in self.open.values():
            if window is not None and window.anchors[i] is None and t >= window.t0:
                window.anchors[i] = anchor

    def catch_up(self, window: Window) -> None:
        """Fold the trace rows since the window opened into its peaks (it was being opened, or
        closed and so no longer among the open windows)."""
        times, watts = self._sensor.trace.rows(max(window.t0, window.seen_t), None)
        rows = watts.tolist()
        fold(window, times.tolist(), rows, [self._sensor.devices.summed_row(row) for row in rows])
