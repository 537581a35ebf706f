"""A stand-in for the pynvml module, injected into NvmlBackend so device mapping, counter
support and lost GPUs can be tested without a GPU."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    def __init__(self, message: str = "Unknown Error", value: int = 999) -> None:
        super().__init__(message)
        self.value = value  # pynvml's return code


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's own name)
    def __init__(self, message: str = "Not Supported") -> None:
        super().__init__(message, 3)


@dataclass
class FakeGpu:
    uuid: str
    power_w: float = 100.0
    name: str = "Fake H100"
    counter: bool = True
    instant: bool = True
    lost: bool = False
    clock: callable = time.monotonic
    _origin: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._origin = self.clock()

    def energy_mj(self) -> int:
        return int(1000 * self.power_w * (self.clock() - self._origin)) + 5_000_000


class FakeNvml:
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_SUCCESS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_ERROR_RESET_REQUIRED = 16

    def __init__(self, gpus: list[FakeGpu], fail_init: bool = False) -> None:
        self.gpus = gpus
        self.fail_init = fail_init
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _check(self, gpu: FakeGpu) -> None:
        if gpu.lost:
            raise NVMLError("GPU is lost", 15)

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return gpu.name

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        self._count("counter")
        self._check(gpu)
        if not gpu.counter:
            raise NVMLError_NotSupported("Not Supported")
        return gpu.energy_mj()

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        self._count("power")
        self._check(gpu)
        return int(gpu.power_w * 1000)

    def nvmlDeviceGetFieldValues(self, gpu: FakeGpu, field_ids: list[int]):
        self._count("field")
        self._check(gpu)
        ok = gpu.instant and field_ids == [self.NVML_FI_DEV_POWER_INSTANT]
        value = SimpleNamespace(uiVal=int(gpu.power_w * 1000))
        return [SimpleNamespace(nvmlReturn=0 if ok else self.NVML_ERROR_NOT_SUPPORTED, value=value)]

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        return 700_000

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.00"


def four_gpus(**kwargs) -> FakeNvml:
    """Four GPUs drawing 100, 200, 300 and 400 W, so a reading tells which one was read."""
    letters = "abcd"
    return FakeNvml(
        [FakeGpu(uuid=f"GPU-{c * 8}-0000", power_w=100.0 * (i + 1), **kwargs) for i, c in enumerate(letters)]
    )
