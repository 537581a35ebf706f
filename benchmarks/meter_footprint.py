"""What the meter costs beside the work it measures, on a stand-in NVML (tests/nvml_standin.py):
memory over an hour, and the background threads' CPU per second, for 1 and 8 GPUs.

    python benchmarks/meter_footprint.py [--gpus 1 8] [--hours 1] [--cpu-seconds 10]

Memory: an hour in virtual time with a trial window open throughout and a served batch
window (counter=False) every 100 ms, as `greenray serve` runs for days; the process's resident
memory after the first minute and at the end. CPU: the sampler (every 10 ms) and the
counter reader (every second) on real threads for --cpu-seconds while this thread sleeps;
process CPU time per second of wall time. The stand-in's reads are Python calls of a few
microseconds, NVML's are C calls of about 2 us (shared/reference/h100.md); these are stand-in
results, not GPU measurements.
"""

from __future__ import annotations

import argparse
import inspect
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the stand-in NVML

from nvml_standin import Driver, Load, RealClock, VirtualClock, standin  # noqa: E402

from greenray.energy import EnergyMeter  # noqa: E402
from greenray.energy.nvml import NvmlBackend  # noqa: E402

BATCH_EVERY_S = 0.1
BATCH_S = 0.03


def resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def memory(gpus: int, hours: float) -> dict:
    """Resident bytes after one virtual minute and after `hours`, a trial window open."""
    clock = VirtualClock()
    nvml, _ = standin(gpus, clock=clock, load=Load.steady(135.0))
    # Also runs against an older greenray (PYTHONPATH), whose meter took fewer arguments.
    accepted = inspect.signature(EnergyMeter).parameters
    meter = EnergyMeter(
        [NvmlBackend(nvml=nvml)], clock=clock, **({"sleep": clock.sleep} if "sleep" in accepted else {})
    )
    driver = Driver(meter, clock, jitter_s=0.002)
    meter.begin_window("trial", busy=False)
    marks = {}
    end = hours * 3600.0
    t = 0.0
    while t < end:
        driver.run_to(t)
        meter.begin_window("batch", counter=False)
        driver.run_for(BATCH_S)
        meter.end_window("batch")
        t += BATCH_EVERY_S
        if "minute" not in marks and t >= 60.0:
            marks["minute"] = resident_bytes()
    marks["end"] = resident_bytes()
    trial = meter.end_window("trial")
    return {
        "gpus": gpus,
        "hours": hours,
        "after_minute_mb": marks["minute"] / 1e6,
        "at_end_mb": marks["end"] / 1e6,
        "growth_mb_per_hour": (marks["end"] - marks["minute"]) / 1e6 / (hours - 1 / 60),
        "trace_mb": meter.memory_bytes() / 1e6 if hasattr(meter, "memory_bytes") else float("nan"),
        "trial_joules": trial.joules,
        "trial_expected_joules": 135.0 * gpus * trial.seconds,
    }


def cpu(gpus: int, seconds: float) -> dict:
    """Process CPU seconds per wall second while the meter's threads run and this one sleeps."""
    nvml, _ = standin(gpus, clock=RealClock(), load=Load.steady(135.0))
    meter = EnergyMeter([NvmlBackend(nvml=nvml)])
    idle_start = time.process_time()
    time.sleep(seconds / 4)
    idle = (time.process_time() - idle_start) / (seconds / 4)
    meter.start()
    wall, start = time.monotonic(), time.process_time()
    time.sleep(seconds)
    used = (time.process_time() - start) / (time.monotonic() - wall)
    samples = len(meter.trace()[0])
    meter.close()
    return {"gpus": gpus, "cpu_per_s": used - idle, "samples_per_s": samples / min(seconds, 30.0)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    args = parser.parse_args()
    machine = f"{platform.node()} {platform.machine()}, python {platform.python_version()}"
    print(f"machine: {machine}; stand-in NVML, not a GPU\n")
    print("| GPUs | memory after 1 min | after the run | growth per hour | trace (fixed) | sampler CPU |")
    print("|---|---|---|---|---|---|")
    for gpus in args.gpus:
        mem, used = memory(gpus, args.hours), cpu(gpus, args.cpu_seconds)
        print(
            f"| {gpus} | {mem['after_minute_mb']:.2f} MB | {mem['at_end_mb']:.2f} MB ({args.hours:g} h) "
            f"| {mem['growth_mb_per_hour']:+.3f} MB | {mem['trace_mb']:.2f} MB "
            f"| {100 * used['cpu_per_s']:.2f}% of a core ({used['samples_per_s']:.0f} samples/s) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
