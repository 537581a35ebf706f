"""Trainable throughput: images/s of greenray's trial (run_trial: the net and data it builds, the
energy meter with its 10 ms sampler, an epoch window per epoch, a test pass and a report after
every epoch) against a bare PyTorch loop doing the same work on the same net, data and device.
Target: ratio >= 0.95.

    python benchmarks/trainable_throughput.py                      # CPU, one torch thread (a 1-CPU trial)
    python benchmarks/trainable_throughput.py --net cnn --device cuda --shape 3x32x32 --threads 0

Both sides start from the same cached tensors on the device; each timed run builds its model and
optimizer and trains --epochs epochs, testing after each. Runs alternate; images/s is
training images x epochs / the run's wall time. Noise only adds time, so the best runs are the
cleaner estimate on a quiet machine; on a shared one, the median of the ratios of back-to-back
pairs is.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from greenray.config import TrialConfig
from greenray.energy import EnergyMeter
from greenray.tune.data import SyntheticSpec, load_on, shuffled_batches
from greenray.tune.keys import REPETITION_KEY, ROUND_KEY, trial_seed
from greenray.tune.nets import build_net
from greenray.tune.space import adam_kwargs
from greenray.tune.trainable import run_trial

CONFIG = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, ROUND_KEY: 0, REPETITION_KEY: 0}


def bare_loop(settings: TrialConfig, device: torch.device) -> None:
    """What one writes by hand: tensors on the device, a permutation per epoch, Adam, a test pass."""
    synthetic = SyntheticSpec(shape=settings.synthetic_shape, seed=0)  # what run_trial loads with seed 0
    data = load_on(settings.dataset, str(device), settings.data_dir, settings.download, synthetic)
    seed = trial_seed(0, 0, 0)
    torch.manual_seed(seed)
    model = build_net(
        settings.net, data.input_shape, data.n_classes, n_conv=settings.n_conv, n_linear=settings.n_linear
    )
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), **adam_kwargs(CONFIG), fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(seed)
    for _ in range(settings.epochs):
        model.train()
        total = torch.zeros((), device=device)
        for x, y in shuffled_batches(data.train_x, data.train_y, settings.batch_size, generator):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * y.shape[0]
        total.item()
        model.eval()
        with torch.inference_mode():
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for start in range(0, len(data.test_y), 4096):
                logits = model(data.test_x[start : start + 4096])
                correct += (logits.argmax(1) == data.test_y[start : start + 4096]).sum()
            correct.item()


def timed(fn, cpu: list[float]) -> float:
    """Wall seconds of fn(); its CPU seconds (every thread of this process) go to `cpu`."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--net", default="cnn")
    parser.add_argument("--shape", default="1x28x28", help="CxHxW of the synthetic images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--energy", default="simulated", help="the trial's meter; simulated keeps the sampler on"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)  # Ray gives a 1-CPU trial one thread
    device = torch.device(args.device)
    shape = tuple(int(p) for p in args.shape.split("x"))
    settings = TrialConfig(net=args.net, dataset="synthetic", synthetic_shape=shape, epochs=args.epochs)
    if device.type == "cpu" and torch.cuda.is_available():
        raise SystemExit("run_trial takes the GPU when there is one: pass --device cuda here")
    meter = EnergyMeter.create(args.energy).start()

    def greenray_trial() -> None:
        run_trial(CONFIG, settings, 0, lambda r: None, meter)

    greenray_trial()  # warm up: data cached, kernels chosen
    bare_loop(settings, device)
    times: dict[str, list[float]] = {"bare": [], "greenray": []}
    cpu: dict[str, list[float]] = {"bare": [], "greenray": []}
    for _ in range(args.repeats):
        times["bare"].append(timed(lambda: bare_loop(settings, device), cpu["bare"]))
        times["greenray"].append(timed(greenray_trial, cpu["greenray"]))
    images = SyntheticSpec().train * args.epochs
    rate = {k: [images / t for t in v] for k, v in times.items()}
    best = {k: max(v) for k, v in rate.items()}
    median = {k: statistics.median(v) for k, v in rate.items()}
    print(
        f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}, torch",
        torch.__version__,
    )
    print(
        f"{args.net} on synthetic {args.shape}, {SyntheticSpec().train} images x {args.epochs} epochs, "
        f"{args.device}, "
        f"{torch.get_num_threads()} thread(s), energy {args.energy}, {args.repeats} runs each"
    )
    for k in ("bare", "greenray"):
        print(f"{k:9s} images/s: best {best[k]:.0f}, median {median[k]:.0f}")
    # Each greenray run follows its bare run: the median of these pairs' ratios is the least
    # touched by other load on the machine, which drifts over minutes.
    paired = statistics.median(b / g for b, g in zip(times["bare"], times["greenray"], strict=True))
    ratios = (best["greenray"] / best["bare"], median["greenray"] / median["bare"], paired)
    print("ratio greenray / bare: best {:.3f}, median {:.3f}, median of pairs {:.3f}".format(*ratios))
    # CPU seconds (the sampler thread's included) barely move with other processes' load.
    by_cpu = statistics.median(cpu["bare"]) / statistics.median(cpu["greenray"])
    print(f"ratio of images per CPU-second (medians): {by_cpu:.3f}")


if __name__ == "__main__":
    main()
