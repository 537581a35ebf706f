"""serve-bench's warm-up: every batch asked for runs, in steps that keep the progress bar moving;
a warm-up or runs that will take long at the measured speed say so and name smaller settings.
(The real warm-up on a Serve replica runs in test_serve_bench.py.)"""

import asyncio

import pytest
from rich.console import Console
from rich.progress import Progress

from greenray.config import BenchConfig, parse_policy
from greenray.serve.run import RunPlan
from greenray.serve.warmup import runs_estimate_s, say_runs_estimate, warm_up


class TimedReplicas:
    """Replicas whose warm-up batches take `s_per_image` per image (the first one `cold` more),
    as seconds reported back; they record the batch counts asked for."""

    def __init__(self, n: int, s_per_image: float, cold: float = 0.0) -> None:
        self.handles, self.asked, self.s_per_image, self.cold = [object()] * n, [], s_per_image, cold

    async def call(self, method: str, batches: int, size: int) -> list[float]:
        assert method == "warmup"
        extra = self.cold if not self.asked else 0.0
        self.asked.append(batches)
        return [batches * size * self.s_per_image + extra] * len(self.handles)


def progress() -> Progress:
    return Progress(console=Console(record=True, width=300, force_terminal=False), disable=True)


def test_every_batch_runs_in_growing_steps_and_the_speed_excludes_the_cold_first():
    config = BenchConfig().replace(warmup_batches=40, warmup_batch_size=4)
    replicas = TimedReplicas(2, s_per_image=0.01, cold=5.0)
    shown = progress()
    warmed = asyncio.run(warm_up("m", replicas, config.deploy, shown))
    assert sum(replicas.asked) == 40 and replicas.asked[0] == 1 and max(replicas.asked) > 1
    assert warmed.s_per_image == pytest.approx(0.01)
    assert warmed.seconds == [pytest.approx(40 * 4 * 0.01 + 5.0)] * 2
    assert "notice" not in shown.console.export_text()  # 1.6 s: nothing to warn of


def test_a_long_warm_up_says_how_long_and_how_to_make_it_short():
    config = BenchConfig().replace(warmup_batches=256, warmup_batch_size=32)
    shown = progress()
    slow = TimedReplicas(1, s_per_image=0.46)  # the README's CPU speed
    asyncio.run(warm_up("convnext", slow, config.deploy, shown))
    text = shown.console.export_text()
    assert "convnext: the warm-up will take about 62 min" in text and "--warmup-batches 4" in text


def test_the_runs_estimate_is_the_slower_of_sending_and_computing():
    policy = parse_policy("fixed:8")
    plans = [RunPlan(10.0, policy, 100), RunPlan(1000.0, policy, 100)]
    # 10 Hz: 10 s of sending; 1000 Hz: 0.1 s of sending, but 100 x 0.04 / 2 = 2 s of computing
    assert runs_estimate_s(plans, 2, 0.04) == pytest.approx(12.0)
    shown = progress()
    say_runs_estimate(shown, "m", [RunPlan(f, policy, 8192) for f in (1.0, 2.0)], 1, 0.46)
    text = shown.console.export_text()
    assert "m: 2 run(s) of 8192 requests, about" in text and "fewer --requests" in text
