import logging
import re

import pytest
from fake_nvml import FakeGpu, FakeNvml, four_gpus
from helpers import FakeClock

from greenray.energy import EnergyMeter, EnergyUnavailable
from greenray.energy.nvml import NvmlBackend, resolve_visible

UUIDS = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3", "GPU-ccdd-4"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("0", [0]),
        ("2,0", [2, 0]),
        ("3,1,0,2", [3, 1, 0, 2]),
        ("1, 3", [1, 3]),
        ("GPU-cccc-3,GPU-aaaa-1", [2, 0]),
        ("GPU-b,2", [1, 2]),  # a unique UUID prefix is enough, and forms may mix
        ("GPU-cc,1", []),  # an ambiguous prefix names nothing and ends the list
        ("1,7,2", [1]),  # like CUDA: the first invalid entry ends the list
        ("-1", []),
        ("2,2", [2]),
    ],
)
def test_cuda_visible_devices_map_to_nvml_indices(spec, expected):
    assert resolve_visible(spec, UUIDS) == expected


def test_devices_are_named_as_the_process_sees_them_and_read_by_uuid():
    backend = NvmlBackend(nvml=four_gpus(), visible="GPU-cccccccc-0000,0")
    devices = backend.devices()
    assert [d.key for d in devices] == ["cuda:0", "cuda:1"]
    assert [d.index for d in devices] == [2, 0]
    assert [d.uuid for d in devices] == ["GPU-cccccccc-0000", "GPU-aaaaaaaa-0000"]
    # cuda:0 is NVML device 2, which draws 300 W
    assert backend.read_power_w(devices[0]) == pytest.approx(300.0)
    assert backend.read_power_w(devices[1]) == pytest.approx(100.0)


@pytest.mark.parametrize("visible", ["3,1", "GPU-dddd,GPU-bbbb"])
def test_a_window_measures_the_permuted_devices(visible):
    clock = FakeClock(10.0)
    nvml = FakeNvml(
        [FakeGpu(uuid=f"GPU-{c * 4}", power_w=100.0 * (i + 1), clock=clock) for i, c in enumerate("abcd")]
    )
    meter = EnergyMeter([NvmlBackend(nvml=nvml, visible=visible)], clock=clock)
    meter.begin_window("w")
    clock.t = 12.0
    m = meter.end_window("w")
    assert m.energy_source == "nvml-power"  # 2 s with no background counter read: the samples
    assert [d.joules for d in m.devices] == [pytest.approx(800.0), pytest.approx(400.0)]
    assert m.joules == pytest.approx(1200.0)
    assert m.power_field == "instant"
    assert m.to_row()["device_uuid"] == "GPU-dddd,GPU-bbbb"


def test_without_a_counter_energy_comes_from_power_samples():
    clock = FakeClock(0.0)
    nvml = FakeNvml([FakeGpu(uuid="GPU-old", power_w=150.0, counter=False, instant=False, clock=clock)])
    backend = NvmlBackend(nvml=nvml)
    assert not backend.has_counter(backend.devices()[0])
    assert backend.power_field == "average"
    meter = EnergyMeter([backend], clock=clock)
    meter.begin_window("w")
    for step in range(1, 100):
        clock.t = step * 0.01
        meter.sample()
    clock.t = 1.0
    m = meter.end_window("w")
    assert m.energy_source == "nvml-power"
    assert m.joules == pytest.approx(150.0)
    assert nvml.calls.get("counter", 0) == 1  # the probe only


def test_windows_never_read_a_costly_counter_the_background_reader_does():
    clock = FakeClock(0.0)
    nvml = FakeNvml([FakeGpu(uuid="GPU-x", clock=clock)])
    meter = EnergyMeter([NvmlBackend(nvml=nvml)], clock=clock)
    probes = nvml.calls["counter"]
    for name, samples in (("long", 200), ("short", 20)):
        meter.begin_window(name)
        for _ in range(samples):
            clock.t += 0.01
            meter.sample()
        meter.end_window(name)
    assert nvml.calls["counter"] == probes  # 4 ms a read on an H100: none at window edges
    meter.anchor()
    assert nvml.calls["counter"] == probes + 1


def test_with_only_the_average_field_counter_windows_read_the_counter_at_their_edges():
    clock = FakeClock(0.0)
    nvml = FakeNvml([FakeGpu(uuid="GPU-a100", power_w=150.0, instant=False, clock=clock)])
    meter = EnergyMeter([NvmlBackend(nvml=nvml)], clock=clock)
    probes = nvml.calls["counter"]
    meter.begin_window("epoch")
    clock.t = 3.0
    m = meter.end_window("epoch")
    assert nvml.calls["counter"] == probes + 2 and m.energy_source == "nvml-counter"
    assert m.joules == pytest.approx(450.0, abs=0.01)
    meter.begin_window("batch", counter=False)
    clock.t = 3.05
    batch = meter.end_window("batch")
    assert nvml.calls["counter"] == probes + 2 and batch.energy_source == "nvml-power"


def test_a_gpu_lost_mid_window_keeps_what_it_measured_and_says_so_once(caplog):
    clock = FakeClock(0.0)
    gpus = [
        FakeGpu(uuid="GPU-x", power_w=100.0, clock=clock),
        FakeGpu(uuid="GPU-y", power_w=200.0, clock=clock),
    ]
    meter = EnergyMeter([NvmlBackend(nvml=FakeNvml(gpus))], clock=clock)
    with caplog.at_level(logging.WARNING, logger="greenray.energy"):
        meter.begin_window("w")
        for step in range(1, 51):
            clock.t = step * 0.01
            meter.sample()
        gpus[1].lost = True  # after 0.5 s
        for step in range(51, 101):
            clock.t = step * 0.01
            meter.sample()
        m = meter.end_window("w")
        meter.begin_window("after")
        clock.t = 3.0
        after = meter.end_window("after")
    x, y = m.devices
    assert x.joules == pytest.approx(100.0) and not x.partial
    assert y.joules == pytest.approx(200.0 * 0.5) and y.partial and y.seconds == pytest.approx(0.5)
    assert m.joules == pytest.approx(200.0) and m.energy_partial and m.energy_source == "nvml-power"
    assert "cuda:1 stopped answering" in m.note and "GPU is lost" in m.note
    assert after.devices[1].joules is None and after.energy_partial
    assert after.joules == pytest.approx(100.0 * 2.0) and after.to_row()["energy_partial"]
    assert len([r for r in caplog.records if "no longer measured" in r.message]) == 1


def test_nvml_missing_raises_energy_unavailable():
    with pytest.raises(EnergyUnavailable, match="could not start"):
        NvmlBackend(nvml=FakeNvml([], fail_init=True))


def test_auto_without_gpu_or_rapl_runs_unmeasured():
    # this machine has neither; on a GPU machine this test checks the opposite case
    with EnergyMeter.create("auto") as meter, meter.window("w") as w:
        pass
    if meter.devices:
        assert w.measurement.energy_source in {"nvml-counter", "nvml-power", "rapl"}
    else:
        assert w.measurement.energy_source == "none"


# ---- MIG instances and entries that name nothing


def mig_nvml():
    from nvml_standin import Load, VirtualClock, standin

    clock = VirtualClock()
    nvml, gpus = standin(2, clock=clock, load=Load.steady(150.0))
    gpus[1].mig_uuids = ("MIG-aaaa1111-0000", "MIG-bbbb2222-0000")
    return nvml, gpus, clock


@pytest.mark.parametrize("visible", ["MIG-bbbb2222-0000", "MIG-bbbb", "MIG-GPU-00000001-stand-in/1/0"])
def test_a_mig_instance_is_measured_as_its_whole_gpu_and_labelled_shared(visible):
    nvml, gpus, clock = mig_nvml()
    backend = NvmlBackend(nvml=nvml, visible=visible)
    (device,) = backend.devices()
    assert device.index == 1 and device.uuid == gpus[1].uuid and device.shared
    assert device.mig_uuid.startswith("MIG-")
    meter = EnergyMeter([backend], clock=clock)
    meter.begin_window("w")
    clock.t += 2.0
    m = meter.end_window("w")
    assert m.joules == pytest.approx(300.0, rel=1e-3)  # the whole GPU's 150 W
    assert m.device_shared and m.to_row()["device_shared"] and "MIG instance" in m.note


def test_two_instances_of_one_gpu_count_its_energy_once():
    nvml, _, _ = mig_nvml()
    backend = NvmlBackend(nvml=nvml, visible="MIG-aaaa1111-0000,MIG-bbbb2222-0000")
    assert [d.index for d in backend.devices()] == [1]


@pytest.mark.parametrize(
    ("visible", "phrase"),
    [
        ("MIG-ffff", "names no MIG instance NVML sees (NVML sees 2 GPU(s), indices 0-1, 2 MIG instance(s)"),
        ("7", "entry '7' names no GPU (NVML sees 2 GPU(s), indices 0-1)"),
        ("GPU-nope", "entry 'GPU-nope' names no GPU"),
    ],
)
def test_an_entry_that_names_nothing_is_said_in_one_sentence(visible, phrase, caplog):
    from greenray.energy.discover import _nonempty

    nvml, _, _ = mig_nvml()
    with pytest.raises(EnergyUnavailable, match=re.escape(phrase)):
        _nonempty(NvmlBackend(nvml=nvml, visible=visible))
    with caplog.at_level(logging.WARNING, logger="greenray.energy"):
        EnergyMeter([], empty_reason=f"NVML: {phrase}")
    assert [r.message for r in caplog.records] == [
        f"no energy source (NVML: {phrase}): energy is not measured"
    ]
