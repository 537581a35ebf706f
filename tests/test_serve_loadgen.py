"""The load generator: arrival schedules, and a sink it sends to without waiting for answers."""

import asyncio
import itertools

import numpy as np
import pytest

from greenray.serve.loadgen import LoadGenerator, arrival_offsets


def take(kind: str, frequency: float, n: int, seed: int = 0) -> np.ndarray:
    return np.array(list(itertools.islice(arrival_offsets(kind, frequency, seed), n)))


def test_constant_arrivals_are_exact_multiples_of_the_period():
    offsets = take("constant", 64.0, 10_000)
    assert offsets[0] == 0.0
    assert offsets[-1] == pytest.approx(9999 / 64.0, abs=1e-9)
    assert np.allclose(np.diff(offsets), 1 / 64.0)


def test_jitter_is_the_studys_uniform_gap_and_is_seeded():
    gaps = np.diff(take("jitter", 32.0, 10_000, seed=1))
    assert gaps.min() >= 0.8 / 32 and gaps.max() <= 1.2 / 32
    assert gaps.mean() == pytest.approx(1 / 32, rel=0.01)
    assert np.array_equal(take("jitter", 32.0, 100, seed=1), take("jitter", 32.0, 100, seed=1))
    assert not np.array_equal(take("jitter", 32.0, 100, seed=1), take("jitter", 32.0, 100, seed=2))


def test_poisson_gaps_are_exponential_with_the_same_mean():
    gaps = np.diff(take("poisson", 128.0, 20_001, seed=3))
    assert gaps.mean() == pytest.approx(1 / 128, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV = 1


@pytest.mark.parametrize(("kind", "frequency"), [("constant", 0.0), ("poisson", -16.0), ("burst", 16.0)])
def test_bad_schedules_are_refused(kind, frequency):
    with pytest.raises(ValueError):
        next(arrival_offsets(kind, frequency))


def test_the_generator_keeps_its_rate_while_answers_are_slow():
    answered = []

    async def slow_sink(request_id: int) -> int:
        await asyncio.sleep(0.3)
        if request_id % 10 == 9:
            raise ValueError(f"request {request_id} refused")
        return request_id

    async def scenario():
        generator = LoadGenerator(
            slow_sink, arrival_offsets("constant", 100.0), on_answer=lambda t, ok: answered.append(ok)
        )
        await generator.run(asyncio.Event(), max_requests=120)
        in_flight = generator.pending
        assert await generator.drain(timeout_s=5) == 0
        return generator, in_flight

    generator, in_flight = asyncio.run(scenario())
    stats = generator.stats()
    assert stats.sent == 120
    assert stats.achieved_rate_hz == pytest.approx(100.0, rel=0.03)
    assert in_flight >= 20  # it never waited: about 0.3 s of requests were still out when it stopped
    assert len(answered) == 120 and answered.count(False) == 12
    latencies = [t.latency_s for t in generator.timings]
    assert min(latencies) >= 0.3
    errors = [t.error for t in generator.timings if t.error]
    assert errors[0] == "request 9 refused"
    assert all(t.submitted_s >= t.scheduled_s for t in generator.timings)


def test_the_generator_stops_when_told():
    async def scenario():
        stop = asyncio.Event()

        def on_answer(timing, ok):
            if timing.request_id == 4:
                stop.set()

        async def sink(request_id):
            return request_id

        generator = LoadGenerator(sink, arrival_offsets("constant", 200.0), on_answer=on_answer)
        await asyncio.wait_for(generator.run(stop), timeout=5)
        return generator

    generator = asyncio.run(scenario())
    assert 5 <= len(generator.timings) <= 7  # stops within a period or two of the fifth answer


def test_a_send_window_holds_requests_at_the_caller_until_answers_free_it():
    async def scenario():
        gates: dict[int, asyncio.Event] = {}
        submitted = []

        async def gated(request_id: int) -> int:
            await gates.setdefault(request_id, asyncio.Event()).wait()
            return request_id

        def submit(request_id: int):
            submitted.append(request_id)
            return gated(request_id)

        generator = LoadGenerator(submit, arrival_offsets("constant", 1000.0), max_in_flight=3)
        sending = asyncio.ensure_future(generator.run(asyncio.Event(), max_requests=8))
        await asyncio.sleep(0.05)  # 50 requests' worth of time: only the window went out
        held = list(submitted)
        gates.setdefault(0, asyncio.Event()).set()
        await asyncio.sleep(0.01)
        after_one = list(submitted)
        for i in range(8):
            gates.setdefault(i, asyncio.Event()).set()
        await asyncio.wait_for(sending, timeout=5)
        assert await generator.drain(timeout_s=5) == 0
        return generator, held, after_one

    generator, held, after_one = asyncio.run(scenario())
    assert held == [0, 1, 2] and after_one == [0, 1, 2, 3]
    late = generator.timings[3]
    assert late.submitted_s - late.scheduled_s >= 0.04  # it waited for request 0, and says so
    assert generator.stats().p99_lateness_s >= 0.04
    with pytest.raises(ValueError):
        LoadGenerator(submit=lambda i: None, offsets=[0.0], max_in_flight=0)
