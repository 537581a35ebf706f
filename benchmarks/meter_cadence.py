"""What a serving replica's energy accounting costs its process's CPU, with the sampler's old
cadence (every interval, busy or not) and the new one (every interval only while a busy window is
open; meter.IDLE_INTERVAL_S otherwise).

    python benchmarks/meter_cadence.py [--rate 64] [--batch-ms 5] [--seconds 10] [--energy simulated]

The replica is mimicked in one process: a running tally's counter window always open (as
ModelServer keeps one for /metrics), and at --rate Hz a batch of --batch-ms of CPU-bound Python
inside its own energy window, as measure_batches opens one per batch (counter=False). "The
rest" is the process's CPU less the batches' own work, over the process's CPU; the same loop
with no meter gives the rest that is not energy accounting (sleeping, the loop itself). Energy
accounting's share = rest(with a meter) - rest(no meter). The modes alternate (A B C C B A).
"""

from __future__ import annotations

import argparse
import platform
import time

from greenray.energy import EnergyMeter, RunningTally


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def replica(meter: EnergyMeter | None, rate: float, batch_s: float, seconds: float) -> tuple[float, float]:
    """(process CPU seconds, the batches' own CPU seconds) of `seconds` of serving at `rate`
    (no meter: the same loop without energy accounting)."""
    tally = RunningTally(meter) if meter is not None else None
    cpu0, work = time.process_time(), 0.0
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if meter is not None:
            meter.begin_window(f"batch-{i}", counter=False)
        t0 = time.thread_time()
        spin(batch_s)
        work += time.thread_time() - t0
        if meter is not None:
            meter.end_window(f"batch-{i}")
            meter.peak_power_w(t0)  # as measure_batches asks of every batch
            if tally.due():
                tally.tick()
    return time.process_time() - cpu0, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=64.0)
    parser.add_argument("--batch-ms", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--energy", default="simulated")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    interval = args.interval_ms / 1000
    cadences = {"no meter": 0.0, "old (every interval)": interval, "new (idle: meter.IDLE_INTERVAL_S)": None}
    shares: dict[str, list[float]] = {name: [] for name in cadences}
    order = [name for _ in range(args.repeats) for name in (*cadences, *reversed(cadences))]
    for name in order:
        idle = cadences[name]
        if idle == 0.0:
            cpu, work = replica(None, args.rate, args.batch_ms / 1000, args.seconds)
        else:
            kwargs = {"idle_interval_s": idle} if idle is not None else {}
            with EnergyMeter.create(args.energy, interval_s=interval, **kwargs) as meter:
                cpu, work = replica(meter, args.rate, args.batch_ms / 1000, args.seconds)
        shares[name].append((cpu - work) / cpu)
        share = 100 * (cpu - work) / cpu
        print(f"{name}: process CPU {cpu:.3f} s, batches {work:.3f} s, the rest {share:.1f}%")
    print(
        f"machine: {platform.node()}; {args.energy} energy, interval {args.interval_ms:g} ms, "
        f"{args.rate:g} Hz x {args.batch_ms:g} ms batches, {args.seconds:g} s each"
    )
    for name, values in shares.items():
        print(f"{name}: accounting {', '.join(f'{100 * v:.1f}%' for v in values)} of the process's CPU")


if __name__ == "__main__":
    main()
