"""A meter's batch spans (EnergyMeter.open_span / close_span / measure_spans): opened and closed
on the meter's sensor with a power reading and the time at each edge, and measured in bulk; the
arithmetic is in spans.py."""

from __future__ import annotations

import time

from greenray.energy import spans
from greenray.energy.sensor import Sensor, synchronize_cuda
from greenray.energy.spans import BatchSpan, DeviceTerms, SpanEnergy
from greenray.energy.window import sample_ratio


class Batches:
    """The batch spans open on a sensor (`open`, oldest first); each counts as busy work."""

    def __init__(self, sensor: Sensor) -> None:
        self.open: list[BatchSpan] = []
        self._sensor = sensor

    def open_span(self) -> BatchSpan:
        sensor = self._sensor
        with sensor.lock:
            sensor.add_busy(1)
        try:
            # Read before t0, as begin_window does: the span starts on a reading of the power
            # its work draws.
            begin = sensor.sample()
            t0 = sensor.clock()
            span = BatchSpan(t0, time.time(), begin, peak_from=t0 - sensor.interval_s)
            with sensor.lock:
                self.open.append(span)  # the rows integrated while it is open fold into its peak
        except BaseException:
            with sensor.lock:
                sensor.add_busy(-1)
            raise
        return span

    def close_span(self, span: BatchSpan) -> BatchSpan:
        sensor, devices = self._sensor, self._sensor.devices
        synchronize_cuda()
        try:
            end = sensor.sample()
            t1 = sensor.clock()
            with sensor.lock:
                ratios = devices.sample_ratios()
                if spans.own_readings(span.begin, end, sensor.trace.gap_s) and not devices.health.failing:
                    spans.close_on_readings(span, end, t1, ratios, devices.compute)
                else:
                    self._close_on_trace(span, t1, ratios)
                self._end(span)
        except BaseException:
            with sensor.lock:
                self._end(span)
            raise
        span.source = spans.source(span, devices.compute, devices.power_sources)
        return span

    def _close_on_trace(self, span: BatchSpan, t1: float, ratios: list[float]) -> None:
        """Close a span on the trace's running sums at its edges (another reading came between
        its own, or a device is failing)."""
        trace, devices = self._sensor.trace, self._sensor.devices
        n = len(devices)
        start = [trace.state(i, span.t0) for i in range(n)]
        end = [trace.state(i, t1, hold=devices.live(i)) for i in range(n)]
        spans.close_on_sums(span, start, end, t1, ratios, devices.compute)

    def _end(self, span: BatchSpan) -> None:
        if span in self.open:
            self.open.remove(span)
            self._sensor.add_busy(-1)

    def measure(self, closed: list[BatchSpan], idle_w: dict[str, float]) -> list[SpanEnergy]:
        """The full measurement of closed spans at the current ratios, swings and `idle_w`."""
        if not closed:
            return []
        devices = self._sensor.devices
        with self._sensor.lock:
            swing = self._sensor.trace.swing_w()
            terms = [
                DeviceTerms(
                    i,
                    sample_ratio(devices.state(i, idle_w))[1],
                    devices.all[i].average_s,
                    float(swing[i]),
                    idle_w.get(devices.all[i].device.key),
                )
                for i in devices.compute
            ]
        return spans.settle(closed, terms)
