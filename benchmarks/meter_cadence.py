"""What a serving replica's energy accounting costs its process's CPU: each batch in a general
energy window (EnergyMeter.begin_window / end_window and a peak read), or as measure_batches
measures it (its _OpenBatch and the replica's BatchLedger: a general window, a BatchEnergy and
Ray's metrics per batch before issue 21's spans; a span, settled in bulk, after).

    python benchmarks/meter_cadence.py [--rate 64] [--batch-ms 5] [--seconds 8] [--energy simulated]

The replica is mimicked in one process: a running tally's counter window always open (as
ModelServer keeps one for /metrics), and at --rate Hz a batch of --batch-ms of CPU-bound Python
inside its own energy window. "The rest" is the process's CPU less the batches' own work, over
the process's CPU; the same loop with no meter gives the rest that is not energy accounting
(sleeping, the loop itself). Energy accounting's share = rest(with a meter) - rest(no meter).
The modes alternate (A B C C B A). Run it with PYTHONPATH at a checkout from before the spans for
their "before": the same script measures that checkout's measure_batches."""

from __future__ import annotations

import argparse
import hashlib
import platform
import time
import types

import ray  # noqa: F401 (a replica has Ray imported, which the batches' metrics ask: not their cost)

import greenray
from greenray.energy import EnergyMeter, RunningTally
from greenray.serve.measure import _OpenBatch, batch_ledger


def spin(seconds: float) -> None:
    """CPU-bound Python, which holds the GIL throughout."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


_BLOCK = bytes(64 * 1024)


def hash_work(seconds: float) -> None:
    """CPU work that releases the GIL while it runs (hashlib does for large buffers), as a
    model's forward in torch does."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        hashlib.sha256(_BLOCK).digest()


WORK = {"python": spin, "released": hash_work}


def batches(meter: EnergyMeter | None, mode: str):
    """What each mode does at a batch's start and end: (open, close)."""
    if mode == "window":

        def open_(i):
            meter.begin_window(f"batch-{i}", counter=False)
            return meter.now()

        def close(i, t0):
            meter.end_window(f"batch-{i}")
            meter.peak_power_w(t0)  # as measure_batches asked of every batch

        return open_, close
    if mode == "measure_batches":
        ledger = batch_ledger(types.SimpleNamespace())
        return (lambda i: _OpenBatch(meter, ledger, 1)), (
            lambda i, batch: (batch.close(), ledger.describe_last(None))
        )
    return (lambda i: None), (lambda i, token: None)


def replica(
    meter: EnergyMeter | None, mode: str, rate: float, batch_s: float, seconds: float, work_fn=spin
) -> tuple[float, float]:
    """(process CPU seconds, the batches' own CPU seconds) of `seconds` of serving at `rate`
    (no meter: the same loop without energy accounting)."""
    tally = RunningTally(meter) if meter is not None else None
    open_, close = batches(meter, mode)
    cpu0, work = time.process_time(), 0.0
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        token = open_(i)
        t0 = time.thread_time()
        work_fn(batch_s)
        work += time.thread_time() - t0
        close(i, token)
        if tally is not None and tally.due():
            tally.tick()
    return time.process_time() - cpu0, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=64.0)
    parser.add_argument("--batch-ms", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--energy", default="simulated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--work",
        default="python",
        choices=sorted(WORK),
        help="a batch's work: Python holding the GIL, or not",
    )
    args = parser.parse_args()
    modes = {"no meter": "none", "general window per batch": "window", "measure_batches": "measure_batches"}
    shares: dict[str, list[float]] = {name: [] for name in modes}
    order = [name for _ in range(args.repeats) for name in (*modes, *reversed(modes))]
    for name in order:
        mode = modes[name]
        if mode == "none":
            cpu, work = replica(None, mode, args.rate, args.batch_ms / 1000, args.seconds, WORK[args.work])
        else:
            with EnergyMeter.create(args.energy, interval_s=args.interval_ms / 1000) as meter:
                cpu, work = replica(
                    meter, mode, args.rate, args.batch_ms / 1000, args.seconds, WORK[args.work]
                )
        shares[name].append((cpu - work) / cpu)
        print(
            f"{name}: process CPU {cpu:.3f} s, batches {work:.3f} s, the rest {100 * (cpu - work) / cpu:.1f}%"
        )
    print(
        f"greenray at {greenray.__file__}; machine: {platform.node()}; {args.energy} energy, "
        f"interval {args.interval_ms:g} ms, "
        f"{args.rate:g} Hz x {args.batch_ms:g} ms batches ({args.work} work), {args.seconds:g} s each"
    )
    for name, values in shares.items():
        print(f"{name}: the rest {', '.join(f'{100 * v:.1f}%' for v in values)} of the process's CPU")


if __name__ == "__main__":
    main()
