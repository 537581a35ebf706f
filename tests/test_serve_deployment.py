"""The model deployment on a real Ray Serve: batch sizes under each policy, bad requests, and the
run/batch energy bookkeeping against the simulated backend. One Serve application for the module."""

import asyncio
import os
import time

import numpy as np
import pytest
import torch

from greenray.config import EnergyConfig, ServingConfig, parse_policy
from greenray.serve.loadgen import LoadGenerator, arrival_offsets
from greenray.serve.replicas import Replicas

SIZE = 32
IDLE_W, WORK_W = 60.0, 190.0  # the simulated model: idle, and the power of one CPU second per second


@pytest.fixture(scope="module")
def server(ray_local):
    from ray import serve

    serving = ServingConfig(weights="none", image_size=SIZE, device="cpu")
    energy = EnergyConfig(backend="simulated")
    replicas = Replicas.deploy("shufflenet_x0_5", serving, energy, 1, num_cpus=0.5, num_gpus=0)
    handle = replicas.handles[0]
    info = handle.info.remote().result()
    assert info["setup_error"] is None
    assert handle.measure_idle.remote(0.0).result() == {"SIM-0": IDLE_W}  # the model's idle, no wait
    yield handle
    replicas.delete()
    serve.shutdown()


def image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


def use(handle, policy: str) -> None:
    p = parse_policy(policy)
    handle.set_policy.remote(p).result()


def run(handle, run_id: str, send):
    """begin_run, send(), end_run, take_records: what the bench does around a run."""
    handle.begin_run.remote(run_id).result()
    send()
    end = handle.end_run.remote(run_id).result()
    return end, handle.take_records.remote().result()


def test_fixed_batches_leave_full_and_the_remainder_only_after_the_max_wait(server):
    use(server, "fixed:4@1500")  # long enough for 10 requests to arrive on a loaded machine

    def send():
        answers = [server.remote(image(i), request_id=i) for i in range(10)]
        assert all(0 <= a.result() < 1000 for a in answers)

    end, records = run(server, "fixed-max-wait", send)
    batches = records["batches"]
    assert [b["size"] for b in batches] == [4, 4, 2]
    assert batches[2]["queue_wait_max_s"] >= 1.5  # the 2 left through the max wait
    assert max(b["queue_wait_max_s"] for b in batches[:2]) < 1.5
    assert end.served == 10 and end.batches == 3
    assert sorted(records["requests"]) == list(range(10))


def answered(answers, count: int, within_s: float) -> int:
    """How many of `answers` are in once `count` are (or `within_s` has passed); no answer is
    cancelled on the way (a cancelled request would leave its batch)."""
    done: set[int] = set()
    deadline = time.monotonic() + within_s
    while len(done) < count and time.monotonic() < deadline:
        for i, answer in enumerate(answers):
            if i not in done:
                try:
                    answer.result(timeout_s=0.01)
                    done.add(i)
                except TimeoutError:
                    pass
    return len(done)


def test_fixed_without_max_wait_holds_a_partial_batch_until_it_is_filled(server):
    use(server, "fixed:4")
    answers = [server.remote(image(i)) for i in range(6)]  # they may reach the replica in any order
    assert answered(answers, 4, within_s=30) == 4
    assert answered(answers, 6, within_s=1.0) == 4  # two wait for a full batch, however long
    # Serve fixes a batch's timeout when its first request arrives: a new one does not free it,
    # two more requests do (this is how the bench drains a run).
    use(server, "greedy:4")
    assert answered(answers, 6, within_s=0.5) == 4
    fillers = [server.remote(image()) for _ in range(2)]
    assert answered(answers + fillers, 8, within_s=30) == 8


def test_greedy_never_exceeds_its_cap(server):
    use(server, "greedy:8")

    def send():
        # Holds the replica in long forwards (about 0.3 s each here), yielding only between
        # them: requests queue up meanwhile, even from a slow driver (64-image forwards let
        # only 7 in at a time once, on a loaded CI machine).
        busy = server.warmup.remote(3, 1024)
        answers = [server.remote(image(i), request_id=i) for i in range(40)]
        [a.result() for a in answers]
        busy.result()

    _, records = run(server, "greedy-cap", send)
    sizes = [b["size"] for b in records["batches"]]
    assert sum(sizes) == 40
    assert max(sizes) == 8  # some batch is full, none above the cap


def test_a_malformed_request_gets_an_error_and_the_others_are_served(server):
    use(server, "fixed:4@100")
    good = [server.remote(image(1)), server.remote(np.random.rand(3, SIZE, SIZE).astype(np.float32))]
    bad = [
        server.remote(torch.zeros((3, 16, 16), dtype=torch.uint8)),
        server.remote(torch.zeros((3, SIZE, SIZE), dtype=torch.int64)),
        server.remote("not an image"),
    ]
    assert all(isinstance(a.result(), int) for a in good)  # sent together with the bad ones
    messages = ["3x32x32 image", "uint8 or float", "tensor or numpy array"]
    for answer, message in zip(bad, messages, strict=True):
        with pytest.raises(ValueError, match=message):
            answer.result()
    assert isinstance(server.remote(image(2)).result(), int)  # and it keeps serving


def test_run_energy_adds_up_from_idle_and_batch_windows(server):
    use(server, "greedy")

    def send():
        async def go():
            generator = LoadGenerator(
                lambda i: server.remote(image(i), request_id=i), arrival_offsets("constant", 50.0)
            )
            await generator.run(asyncio.Event(), max_requests=25)
            await generator.drain(timeout_s=30)
            time.sleep(0.2)  # an idle tail inside the run

        asyncio.run(go())

    end, records = run(server, "energy", send)
    energy = end.energy
    batches = [b for b in records["batches"] if b["in_run"]]
    busy_s = sum(b["compute_s"] for b in batches)
    assert energy.energy_source == "simulated"
    assert end.served == 25 == sum(b["size"] for b in batches)
    # idle-free = the run's energy less idle W x its seconds ...
    assert energy.joules - energy.idle_free_joules == pytest.approx(IDLE_W * energy.seconds)
    assert energy.idle_w == pytest.approx(IDLE_W)
    # ... which is the extra power of the batch windows only (busy=True; the model's extra power
    # is WORK_W per CPU second of the replica's work in them), the run window is idle (15%: on a
    # loaded machine a batch that straddles the run's edge is busy inside the window)
    above_idle = [b["energy_j"] - IDLE_W * b["compute_s"] for b in batches]
    bound = sum(b["uncertainty_j"] for b in batches)
    assert energy.idle_free_joules == pytest.approx(sum(above_idle), rel=0.15, abs=bound + 0.05)
    # A batch's Joules come from the power trace: at least idle power over it, at most one busy
    # core's worth more per CPU the machine has, each within its error bound
    cores = os.cpu_count() or 1
    assert all(
        -b["uncertainty_j"] <= a <= WORK_W * cores * b["compute_s"] + b["uncertainty_j"]
        for a, b in zip(above_idle, batches, strict=True)
    )
    assert 0 < energy.idle_free_joules <= WORK_W * cores * busy_s + bound
    assert sum(b["energy_j"] for b in batches) < energy.joules
    assert all(b["peak_power_w"] >= IDLE_W for b in batches)
    run_start, run_end = energy.started_at, energy.started_at + energy.seconds
    assert all(run_start <= b["started_s"] <= b["ended_s"] <= run_end + 1e-3 for b in batches)
    assert energy.seconds > 0.5 and busy_s < energy.seconds
    # the replica's own report (greenray.serve.EnergyReport) counts the same batches
    report = server.energy_report.remote().result()
    assert report.items >= 25 and report.energy_source == "simulated" and report.device == "sim:0"
    assert report.joules_per_item == pytest.approx(report.energy_j / report.items)
