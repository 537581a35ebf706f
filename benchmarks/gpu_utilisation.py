"""GPU utilisation of a training trial: SimpleCNN with 4 conv and 7 linear layers on 3x32x32
images (CIFAR-10 when --data-dir holds it, else synthetic images of its size), the study's batch
of 512, sampled through NVML's utilisation counter while greenray's trial trains, and while a
bare PyTorch loop does the same work. The study's GPU ran at 40-60% load.

    python benchmarks/gpu_utilisation.py [--data-dir DIR] [--epochs 20] [--interval-ms 50]

Needs a CUDA GPU and nvidia-ml-py (pynvml). The GPU is found in NVML by the UUID torch reports,
so CUDA_VISIBLE_DEVICES is honoured.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time

import torch
from trainable_throughput import CONFIG, bare_loop

from greenray.config import TrialConfig
from greenray.energy import EnergyMeter
from greenray.tune.data import SyntheticSpec, load_on
from greenray.tune.trainable import run_trial


class UtilisationSampler:
    """nvmlDeviceGetUtilizationRates(gpu) every interval on a thread, kept with their times."""

    def __init__(self, interval_s: float) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        matches = [h for h in handles if uuid in str(pynvml.nvmlDeviceGetUUID(h))]
        self._handle = matches[0] if matches else handles[0]
        self._interval = interval_s
        self.samples: list[tuple[float, int, int]] = []  # (time, gpu %, memory %)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self.samples.append((time.monotonic(), rates.gpu, rates.memory))
            self._stop.wait(self._interval)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()

    def between(self, t0: float, t1: float) -> list[int]:
        return [gpu for t, gpu, _ in self.samples if t0 <= t <= t1]


def measured(fn, sampler: UtilisationSampler) -> tuple[float, list[int]]:
    t0 = time.monotonic()
    fn()
    torch.cuda.synchronize()
    t1 = time.monotonic()
    return t1 - t0, sampler.between(t0, t1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None, help="a folder holding torchvision's CIFAR10")
    parser.add_argument("--epochs", type=int, default=20)  # of 6,000 synthetic images (or CIFAR-10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--energy", default="auto")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (torch.cuda.is_available() is False)")

    dataset = "cifar10" if args.data_dir else "synthetic"
    settings = TrialConfig(
        net="cnn",
        dataset=dataset,
        data_dir=args.data_dir or TrialConfig().data_dir,
        synthetic_shape=(3, 32, 32),
        n_conv=4,
        n_linear=7,
        relu=True,
        epochs=args.epochs,
        batch_size=args.batch_size,
    )
    synthetic = SyntheticSpec(shape=settings.synthetic_shape, seed=0)  # run_trial's, with seed 0
    data = load_on(settings.dataset, "cuda", settings.data_dir, False, synthetic)
    images = len(data.train_y) * args.epochs
    meter = EnergyMeter.create(args.energy).start()

    def greenray_trial() -> None:
        run_trial(CONFIG, settings, 0, lambda r: None, meter)

    greenray_trial()  # warm up: data on the GPU, cuDNN's choices made
    with UtilisationSampler(args.interval_ms / 1000) as sampler:
        time.sleep(1.0)
        idle = sampler.between(0, time.monotonic())
        rows = {}
        for name, fn in (
            ("greenray trial", greenray_trial),
            ("bare loop", lambda: bare_loop(settings, torch.device("cuda"))),
        ):
            seconds, util = measured(fn, sampler)
            rows[name] = (
                seconds,
                images / seconds,
                statistics.mean(util),
                statistics.median(util),
                len(util),
            )
    print(f"machine: {platform.node()}, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    before = statistics.mean(idle) if idle else float("nan")
    print(f"SimpleCNN 4 conv / 7 linear, {dataset} 3x32x32, {images // args.epochs} images x {args.epochs}")
    print(f"epochs, batch {args.batch_size}; utilisation idle before the runs: {before:.0f}%")
    print("| run | seconds | images/s | GPU util mean % | median % | samples |")
    print("|---|---|---|---|---|---|")
    for name, (seconds, rate, mean, median, n) in rows.items():
        print(f"| {name} | {seconds:.2f} | {rate:.0f} | {mean:.1f} | {median:.0f} | {n} |")


if __name__ == "__main__":
    main()
