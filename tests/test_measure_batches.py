"""`greenray.serve.measure_batches` on a deployment greenray did not write, on a real Ray Serve
(the session's local Ray), with the simulated backend (60 W, and 190 W more per CPU second of
the replica's work while a batch runs): a record per
batch, Joules per item, the replica's report through its handle, and reset."""

import asyncio
import sys
import time

import pytest
from ray import cloudpickle, serve

from greenray.serve import EnergyReport, energy_report, measure_batches

IDLE_W, WORK_W = 60.0, 190.0
GRID = 56.039  # gCO2e/kWh, France's in the shipped table
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Doubler:
    """A user's deployment: batches of numbers, doubled (slowly, so batches have a length)."""

    def __init__(self) -> None:
        self.cpu_s: list[float] = []  # the process's CPU seconds in each batch, in order

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    @measure_batches(energy="simulated", carbon_intensity=GRID)
    async def double(self, xs: list[float]) -> list[float]:
        start = time.process_time()
        while time.process_time() - start < 0.02:
            pass  # 20 ms of CPU work, so that a batch has a length and an energy
        self.cpu_s.append(time.process_time() - start)
        return [2 * x for x in xs]

    async def work(self) -> list[float]:
        return list(self.cpu_s)

    async def __call__(self, x: float) -> float:
        return await self.double(x)

    async def energy(self, reset: bool = False) -> EnergyReport:
        return energy_report(self, reset=reset)


@pytest.fixture(scope="module")
def doubler(ray_local):
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    handle = serve.run(Doubler.bind(), name="doubler", route_prefix=None)
    yield handle
    serve.delete("doubler")
    serve.shutdown()


def test_each_batch_has_a_record_with_its_energy(doubler):
    async def send():
        return await asyncio.gather(*(doubler.remote(float(i)) for i in range(10)))

    assert asyncio.run(send()) == [2.0 * i for i in range(10)]
    report = doubler.energy.remote(reset=True).result()
    work = doubler.work.remote().result()[-len(report.batches) :]
    assert report.items == 10 == sum(b.size for b in report.batches)
    assert report.batch_count == len(report.batches) and max(b.size for b in report.batches) <= 4
    for batch, cpu_s in zip(report.batches, work, strict=True):
        # the model: idle W over the batch's seconds, and WORK_W per CPU second of its work
        above_idle = batch.energy_j - IDLE_W * batch.seconds
        assert above_idle == pytest.approx(WORK_W * cpu_s, rel=0.1, abs=batch.uncertainty_j + 0.5)
        assert batch.started_s <= batch.ended_s and cpu_s >= 0.02
        assert batch.peak_power_w >= IDLE_W and batch.energy_source == "simulated"
        assert batch.joules_per_item == pytest.approx(batch.energy_j / batch.size)
        assert batch.co2e_g == pytest.approx(batch.energy_j / 3.6e6 * GRID)
    assert report.energy_j == pytest.approx(sum(b.energy_j for b in report.batches))
    assert report.joules_per_item == pytest.approx(report.energy_j / 10)
    assert report.co2e_g == pytest.approx(report.energy_j / 3.6e6 * GRID)
    assert report.device == "sim:0" and report.energy_source == "simulated"


def test_a_reset_starts_the_report_over(doubler):
    doubler.remote(1.0).result()
    doubler.energy.remote(reset=True).result()
    assert doubler.energy.remote().result().items == 0
    doubler.remote(2.0).result()
    after = doubler.energy.remote().result()
    assert after.items == 1 and after.batch_count == 1


def test_only_batch_methods_can_be_measured():
    with pytest.raises(TypeError, match="batch method"):
        measure_batches(lambda xs: xs)
    with pytest.raises(ValueError, match="energy must be one of"):
        measure_batches(energy="gpu")
