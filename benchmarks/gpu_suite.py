"""Every owed GPU check in one command: on one H200, under 8 minutes.

    python benchmarks/gpu_suite.py [--out DIR] [--only NAME ...] [--list]
    python benchmarks/gpu_suite.py --dry-run [--scale 0.1]     # here, on the stand-in NVML

Writes DIR/gpu_suite.json and DIR/gpu_suite.md (DIR: --out, else $OUT, else the current
folder), after every check, so a run cut short keeps what it had. Each check is a function
that returns a dict of results; it gets a time budget (scaled by --scale), and a check that
fails is recorded with its error while the others go on.

The meter checks: the counter's period and read cost; whether the instant power field exists
and how often it updates (and the average field); the meter against the raw counter on a
bursty torch matmul load; short and per-batch windows against the counter; the sampler's
overhead with NVML; idle settling after load.

--dry-run runs every check on the stand-in NVML of tests/nvml_standin.py (the real clock, a
load that follows the suite's work, no torch): it tests the suite on a machine without a
GPU. Its numbers describe the stand-in, never a GPU, and both files say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from greenray.energy import EnergyMeter
from greenray.energy.nvml import NvmlBackend

TESTS = Path(__file__).resolve().parents[1] / "tests"
BUSY_W, IDLE_W = 300.0, 70.0  # the dry run's stand-in load
TOTAL_BUDGET_S = 450.0  # the suite's own limit: under 8 minutes with torch's start


# ------------------------------------------------------------------------------- the machine


@dataclass
class Context:
    """What a check may use: NVML (or the stand-in), a GPU load, and its time."""

    dry_run: bool
    scale: float
    nvml: object
    handle: object
    work: Callable[[float, bool], None]  # run the load for s seconds (busy) or stay idle
    visible: str = "0"  # the one CUDA_VISIBLE_DEVICES entry measured: torch's cuda:0, which is loaded
    deadline: float = 0.0
    notes: list[str] = field(default_factory=list)

    def seconds(self, s: float) -> float:
        """A duration of the real suite, scaled for --scale."""
        return s * self.scale

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def meter(self, **kwargs) -> EnergyMeter:
        return EnergyMeter([NvmlBackend(nvml=self.nvml, visible=self.visible)], **kwargs)

    def counter_j(self) -> float:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0

    def bursty(self, seconds: float, on_s: float = 0.3, off_s: float = 0.3, seed: int = 0) -> None:
        """Bursts of load and rests, the lengths jittered by up to a third (random gaps)."""
        rng = random.Random(seed)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.work(min(on_s * rng.uniform(0.67, 1.33), max(end - time.monotonic(), 0)), True)
            self.work(min(off_s * rng.uniform(0.67, 1.33), max(end - time.monotonic(), 0)), False)


def gpu_context(scale: float) -> Context:
    """The first visible GPU through pynvml, loaded by bf16 matmuls."""
    import pynvml
    import torch

    pynvml.nvmlInit()
    visible = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    backend = NvmlBackend(nvml=pynvml, visible=visible)
    handle = pynvml.nvmlDeviceGetHandleByIndex(backend.devices()[0].index)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def work(seconds: float, busy: bool) -> None:
        end = time.monotonic() + seconds
        if not busy:
            time.sleep(max(seconds, 0.0))
            return
        while time.monotonic() < end:
            for _ in range(4):
                a @ b
            torch.cuda.synchronize()

    work(1.0, True)  # warm up cuBLAS
    return Context(False, scale, pynvml, handle, work, visible)


def dry_context(scale: float) -> Context:
    """The stand-in NVML on the real clock, its power following the suite's work."""
    sys.path.insert(0, str(TESTS))
    from nvml_standin import Load, RealClock, Segment, standin

    clock = RealClock()
    load = Load([Segment(-1e4, IDLE_W, 0.0)])
    nvml, (gpu,) = standin(1, clock=clock, load=load)
    lock = threading.Lock()

    def level(watts: float, ramp_s: float) -> None:
        with lock:
            load.append(Segment(clock(), watts, ramp_s))

    def work(seconds: float, busy: bool) -> None:
        if busy:
            level(BUSY_W, 0.002)
        time.sleep(max(seconds, 0.0))
        if busy:
            level(IDLE_W, 0.5)  # out of work, a GPU relaxes to idle over about half a second

    return Context(True, scale, nvml, gpu, work)


# --------------------------------------------------------------------------------- the checks


def counter_period_and_read_cost(ctx: Context) -> dict:
    """Read the counter back to back under load: what a read costs, how often the value moves
    and how regularly."""
    loader = threading.Thread(target=lambda: ctx.bursty(ctx.seconds(6), 1.0, 0.0), daemon=True)
    loader.start()
    reads = []
    end = time.monotonic() + ctx.seconds(5)
    while time.monotonic() < end and ctx.left() > 0:
        before = time.perf_counter()
        value = ctx.counter_j()
        reads.append((before, time.perf_counter(), value))
    loader.join()
    costs = [t1 - t0 for t0, t1, _ in reads]
    moves = [
        (t0 + t1) / 2
        for (t0, t1, v), (_, _, previous) in zip(reads[1:], reads, strict=False)
        if v != previous
    ]
    periods = [b - a for a, b in zip(moves, moves[1:], strict=False)]
    result = {
        "reads": len(reads),
        "read_cost_ms_median": 1000 * statistics.median(costs),
        "read_cost_ms_p95": 1000 * _quantile(costs, 0.95),
    }
    if len(periods) >= 3:
        result |= {
            "period_ms_median": 1000 * statistics.median(periods),
            "period_ms_p10": 1000 * _quantile(periods, 0.1),
            "period_ms_p90": 1000 * _quantile(periods, 0.9),
        }
    return result


def power_fields(ctx: Context) -> dict:
    """Whether the instant field exists, how often each field's value changes under a bursty
    load, and what a read costs."""
    instant_id = getattr(ctx.nvml, "NVML_FI_DEV_POWER_INSTANT", None)

    def instant() -> float | None:
        (value,) = ctx.nvml.nvmlDeviceGetFieldValues(ctx.handle, [instant_id])
        return value.value.uiVal / 1000.0 if value.nvmlReturn == ctx.nvml.NVML_SUCCESS else None

    def average() -> float:
        return ctx.nvml.nvmlDeviceGetPowerUsage(ctx.handle) / 1000.0

    try:
        present = instant_id is not None and instant() is not None
    except ctx.nvml.NVMLError:
        present = False
    result = {"instant_field": present}
    readers = {"average": average} | ({"instant": instant} if present else {})
    loader = threading.Thread(target=lambda: ctx.bursty(ctx.seconds(7), 0.1, 0.1), daemon=True)
    loader.start()
    for name, read in readers.items():
        values, costs = [], []
        end = time.monotonic() + ctx.seconds(3)
        while time.monotonic() < end:
            before = time.perf_counter()
            values.append(read())
            costs.append(time.perf_counter() - before)
            time.sleep(0.001)
        changes = sum(a != b for a, b in zip(values, values[1:], strict=False))
        result |= {
            f"{name}_updates_per_s": changes / ctx.seconds(3),
            f"{name}_read_us_median": 1e6 * statistics.median(costs),
            f"{name}_w_min": min(values),
            f"{name}_w_max": max(values),
        }
    loader.join()
    return result


def meter_vs_counter(ctx: Context) -> dict:
    """A bursty matmul load (0.3 s on / 0.3 s off, jittered) for 30 s: the meter's window
    against the raw counter read at its two edges (their edge error is under 0.2% of 30 s)."""
    with ctx.meter() as meter:
        ctx.work(ctx.seconds(12), False)  # let the background counter reads calibrate
        before = ctx.counter_j()
        with meter.window("run") as w:
            ctx.bursty(ctx.seconds(30))
        counter = ctx.counter_j() - before
        ratio, ratio_error = next(iter(meter.calibration().values()), (None, None))
    m = w.measurement
    return {
        "seconds": m.seconds,
        "meter_j": m.joules,
        "counter_j": counter,
        "meter_vs_counter_pct": 100 * (m.joules / counter - 1),
        "uncertainty_pct": 100 * m.uncertainty_j / m.joules,
        "energy_source": m.energy_source,
        "power_field": m.power_field,
        "counter_over_samples": ratio,
        "counter_over_samples_error_pct": 100 * ratio_error if ratio_error is not None else None,
    }


def short_windows_vs_counter(ctx: Context) -> dict:
    """Back-to-back windows of 0.2, 0.5 and 1 s, and 50 ms per-batch windows (counter=False),
    on a bursty load: their sum against the counter over the same span (a bias shows; the
    error of one window does not), how many were approximate, and their stated error."""
    result = {}
    with ctx.meter() as meter:
        ctx.work(ctx.seconds(12), False)
        loader = threading.Thread(target=lambda: ctx.bursty(ctx.seconds(4 * 16 + 2), 0.15, 0.25), daemon=True)
        loader.start()
        for seconds, counter in ((0.2, True), (0.5, True), (1.0, True), (0.05, False)):
            before, found = ctx.counter_j(), []
            end = time.monotonic() + ctx.seconds(15)
            while time.monotonic() < end:
                meter.begin_window("w", counter=counter)
                time.sleep(seconds)
                found.append(meter.end_window("w"))
            spanned = ctx.counter_j() - before
            total = sum(m.joules for m in found)
            key = f"{int(seconds * 1000)}ms"
            result |= {
                f"{key}_windows": len(found),
                f"{key}_sum_vs_counter_pct": 100 * (total / spanned - 1),
                f"{key}_approximate_pct": 100 * sum(m.approximate for m in found) / len(found),
                f"{key}_stated_error_pct_median": 100
                * statistics.median(m.uncertainty_j / m.joules for m in found),
            }
        loader.join()
    return result


def sampler_overhead(ctx: Context) -> dict:
    """A CPU-bound Python loop with the NVML sampler on and off (shuffled), and the meter
    threads' CPU per second while this thread sleeps."""

    def loop(n: int = 2_000_000) -> float:
        start = time.perf_counter()
        total = 0
        for i in range(n):
            total += i * i % 7
        return time.perf_counter() - start

    meter = ctx.meter()
    size = int(2_000_000 * min(ctx.scale * 10, 1.0)) or 1
    loop(100_000)
    runs = max(int(ctx.seconds(40) / 0.2), 4)
    order = [False, True] * (runs // 2)
    random.Random(0).shuffle(order)
    times: dict[bool, list[float]] = {False: [], True: []}
    for on in order:
        if on:
            meter.start()
        times[on].append(loop(size))
        meter.stop()
    start_cpu, wall = time.process_time(), time.monotonic()
    meter.start()
    time.sleep(ctx.seconds(5))
    cpu = (time.process_time() - start_cpu) / (time.monotonic() - wall)
    meter.close()
    off, on = times[False], times[True]
    return {
        "runs": len(order),
        "slowdown_median_pct": 100 * (statistics.median(on) / statistics.median(off) - 1),
        "slowdown_min_pct": 100 * (min(on) / min(off) - 1),
        "meter_cpu_pct_of_core": 100 * cpu,
    }


def idle_settling(ctx: Context) -> dict:
    """Full load for 5 s, then the idle baseline measured at once and after settling: how long
    the power takes to settle, and what measuring too early costs."""
    result = {}
    for label, settle_max_s in (("hasty", 0.0), ("settled", 10.0 * ctx.scale + 2.0)):
        with ctx.meter() as meter:
            ctx.work(ctx.seconds(5), True)
            meter.measure_idle(max(ctx.seconds(3), 0.5), settle_max_s=settle_max_s)
            stats = next(iter(meter.idle_stats.values()))
        result |= {
            f"{label}_idle_w": stats.mean_w,
            f"{label}_spread_w": stats.spread_w,
            f"{label}_settle_s": stats.settle_s,
            f"{label}_settled": stats.settled,
        }
    result["hasty_over_settled_pct"] = 100 * (result["hasty_idle_w"] / result["settled_idle_w"] - 1)
    return result


# ------------------------------------------------------------------ training and inference

STUDY_MODELS = ("alexnet", "densenet121", "shufflenet_v2_x1_0", "vit_b_16", "convnext_base")


def _device(ctx: Context) -> str:
    return "cpu" if ctx.dry_run else "cuda"


def _utilisation(ctx: Context, fn: Callable[[], None]) -> tuple[float, float | None]:
    """Seconds of fn() and NVML's mean GPU utilisation (%) while it ran (None in a dry run)."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(ctx.nvml.nvmlDeviceGetUtilizationRates(ctx.handle).gpu)
            stop.wait(0.05)

    sampler = None if ctx.dry_run else threading.Thread(target=sample, daemon=True)
    if sampler:
        sampler.start()
    started = time.monotonic()
    fn()
    seconds = time.monotonic() - started
    stop.set()
    if sampler:
        sampler.join()
    return seconds, (statistics.mean(samples) if samples else None)


def trainable_vs_bare(ctx: Context) -> dict:
    """SimpleCNN 4 conv / 7 linear on 3x32x32 synthetic images, batch 512: greenray's trial
    (run_trial with its meter's sampler on) against a bare PyTorch loop doing the same work,
    images/s and GPU utilisation each (the study's GPU ran at 40-60%)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trainable_throughput import CONFIG, bare_loop

    from greenray.config import TrialConfig
    from greenray.tune.data import SyntheticSpec
    from greenray.tune.trainable import run_trial

    # The dry run only tests the plumbing: a small dense net, one epoch.
    net, shape, epochs = ("dense-poly", (1, 8, 8), 1) if ctx.dry_run else ("cnn", (3, 32, 32), 3)
    trial = TrialConfig(
        net=net, dataset="synthetic", synthetic_shape=shape, n_conv=4, n_linear=7, relu=True, epochs=epochs
    )
    images = SyntheticSpec().train * epochs
    device = torch.device(_device(ctx))
    result: dict = {}
    with ctx.meter() as meter:
        runs = {
            "greenray": lambda: run_trial(CONFIG, trial, 0, lambda r: None, meter),
            "bare": lambda: bare_loop(trial, device),
        }
        if not ctx.dry_run:
            for fn in runs.values():  # warm up: data on the device, cuDNN's choices made
                fn()
        for repeat in range(1 if ctx.dry_run else 3):
            for name, fn in runs.items():
                if ctx.left() <= 0 and repeat:
                    break
                seconds, util = _utilisation(ctx, fn)
                result.setdefault(f"{name}_images_per_s", []).append(images / seconds)
                result.setdefault(f"{name}_gpu_util_pct", []).append(util)
    out = {key: max(values) if "images" in key else values[-1] for key, values in result.items()}
    out["ratio_greenray_over_bare"] = out["greenray_images_per_s"] / out["bare_images_per_s"]
    return out


def models_j_per_image(ctx: Context) -> dict:
    """The study's five models (random weights, 224 px), fp32 and bf16, batches of 1, 32 and
    128 fed back to back for a second each: J/image and idle-free J/image from greenray's
    meter (next to shared/reference/h100.md, plain PyTorch on an H100)."""
    import torch

    from greenray.serve import zoo

    models, precisions, batches, size, window_s = (
        (("shufflenet_v2_x0_5",), ("fp32",), (1, 4), 32, 0.05)
        if ctx.dry_run
        else (STUDY_MODELS, ("fp32", "bf16"), (1, 32, 128), 224, 1.0)
    )
    result: dict = {}
    with ctx.meter() as meter:
        meter.measure_idle(max(ctx.seconds(3), 0.1), settle_max_s=0.0 if ctx.dry_run else 10.0)
        for name in models:
            model = zoo.load_model(name, "none", size).model.to(_device(ctx))
            for precision, batch in ((p, b) for p in precisions for b in batches):
                if ctx.left() <= 0 and result:  # at least one cell, then within the budget
                    result["stopped_early"] = f"out of time before {name} {precision} {batch}"
                    return result
                x = torch.rand((batch, 3, size, size), device=_device(ctx))
                with torch.inference_mode(), zoo.autocast(precision, torch.device(_device(ctx)).type):
                    for _ in range(3):
                        model(x).argmax(1).tolist()
                    meter.begin_window("forward")
                    done, end = 0, time.monotonic() + window_s
                    while time.monotonic() < end:
                        model(x).argmax(1).tolist()
                        done += batch
                    m = meter.end_window("forward")
                key = f"{name}_{precision}_b{batch}"
                result[f"{key}_j_per_image"] = m.joules / done if m.joules is not None else None
                result[f"{key}_idle_free_j_per_image"] = (
                    m.idle_free_joules / done if m.idle_free_joules is not None else None
                )
                result[f"{key}_images_per_s"] = done / m.seconds
            del model
            if not ctx.dry_run:
                torch.cuda.empty_cache()
    return result


@dataclass(frozen=True)
class Check:
    name: str
    budget_s: float  # on the real suite; scaled by --scale
    run: Callable[[Context], dict]


# ---- The registry: every owed GPU check, in the order they run. ------------------------
# Trainable and serving checks go below the meter checks: a function taking the Context and
# returning a dict, and one Check line with its budget (keep the sum under TOTAL_BUDGET_S).
CHECKS: list[Check] = [
    Check("counter_period_and_read_cost", 15.0, counter_period_and_read_cost),
    Check("power_fields", 20.0, power_fields),
    Check("meter_vs_counter", 45.0, meter_vs_counter),
    Check("short_windows_vs_counter", 70.0, short_windows_vs_counter),
    Check("sampler_overhead", 45.0, sampler_overhead),
    Check("idle_settling", 50.0, idle_settling),
    # ---- trainable checks
    Check("trainable_vs_bare", 45.0, trainable_vs_bare),
    # ---- inference checks
    Check("models_j_per_image", 90.0, models_j_per_image),
]


# ---------------------------------------------------------------------------------- running


def run(checks: list[Check], ctx: Context, out: Path) -> dict:
    """Run `checks` in order, writing both files after each."""
    report = {
        "dry_run": ctx.dry_run,
        "label": "stand-in NVML (dry run): not a GPU measurement" if ctx.dry_run else "GPU measurement",
        "machine": f"{platform.node()} {platform.machine()}, python {platform.python_version()}",
        "gpu": _gpu_name(ctx),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scale": ctx.scale,
        "checks": [],
    }
    # The suite's own limit is the GPU machine's; a dry run (a test of the plumbing) runs every check.
    suite_end = time.monotonic() + (float("inf") if ctx.dry_run else TOTAL_BUDGET_S * ctx.scale)
    for check in checks:
        budget = check.budget_s * ctx.scale
        ctx.deadline = min(time.monotonic() + budget, suite_end)
        entry = {"name": check.name, "budget_s": budget}
        if ctx.left() <= 0:
            entry |= {"status": "skipped", "error": "the suite's time ran out"}
        else:
            started = time.monotonic()
            try:
                entry |= {"status": "ok", "result": check.run(ctx)}
            except Exception as exc:  # one broken check must not cost the others
                entry |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
            entry["seconds"] = time.monotonic() - started
            if entry["seconds"] > budget * 1.5:
                entry["over_budget"] = True
        report["checks"].append(entry)
        write(report, out)
        print(f"{check.name}: {entry['status']} ({entry.get('seconds', 0):.1f} s)", flush=True)
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_suite.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        f"# gpu_suite: {report['label']}",
        "",
        f"{report['gpu']} on {report['machine']}, started {report['started']}, scale {report['scale']:g}.",
        "",
        "| check | metric | value |",
        "|---|---|---|",
    ]
    for entry in report["checks"]:
        if entry["status"] != "ok":
            lines.append(f"| {entry['name']} | {entry['status']} | {entry.get('error', '')} |")
            continue
        for metric, value in entry["result"].items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {entry['name']} | {metric} | {shown} |")
        lines.append(f"| {entry['name']} | seconds | {entry['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _gpu_name(ctx: Context) -> str:
    name = ctx.nvml.nvmlDeviceGetName(ctx.handle)
    return name.decode() if isinstance(name, bytes) else str(name)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the two files (default $OUT, else .)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="the stand-in NVML: tests the suite without a GPU"
    )
    parser.add_argument("--scale", type=float, default=None, help="durations x this (default 1, dry run 0.1)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these checks")
    parser.add_argument("--list", action="store_true", help="list the checks and their budgets")
    args = parser.parse_args()
    if args.list:
        for check in CHECKS:
            print(f"{check.name}: {check.budget_s:g} s")
        return
    unknown = set(args.only or []) - {c.name for c in CHECKS}
    if unknown:
        parser.error(f"no check named {', '.join(sorted(unknown))}; see --list")
    checks = [c for c in CHECKS if args.only is None or c.name in args.only]
    scale = args.scale if args.scale is not None else (0.1 if args.dry_run else 1.0)
    out = args.out or Path(os.environ.get("OUT", "."))
    ctx = dry_context(scale) if args.dry_run else gpu_context(scale)
    report = run(checks, ctx, out)
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}")
    sys.exit(0 if all(c["status"] == "ok" for c in report["checks"]) else 1)


if __name__ == "__main__":
    main()
