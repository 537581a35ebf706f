"""NVIDIA backend on nvidia-ml-py: the total-energy counter, power readings, and the mapping
from the devices this process sees (CUDA_VISIBLE_DEVICES) to NVML devices by UUID."""

from __future__ import annotations

import contextlib
import os
from types import ModuleType

from greenray.energy.backend import Device, EnergyUnavailable


def _load_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency, but be plain if it is gone
        raise EnergyUnavailable("nvidia-ml-py is not installed") from exc
    return pynvml


def resolve_visible(spec: str | None, uuids: list[str]) -> list[int]:
    """NVML indices of the devices CUDA would show for CUDA_VISIBLE_DEVICES=`spec`.

    `uuids[i]` is the UUID of NVML device i. Entries are indices or UUIDs (a unique prefix
    is enough, as for CUDA); like CUDA, the first entry that names no device ends the list.
    Integer entries follow NVML's (PCI bus) order, which is CUDA's order when
    CUDA_DEVICE_ORDER=PCI_BUS_ID (what Ray and most clusters use) or the GPUs are alike.
    """
    if spec is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for entry in (e.strip() for e in spec.split(",")):
        index = _entry_index(entry, uuids)
        if index is None or index in chosen:
            break
        chosen.append(index)
    return chosen


def _entry_index(entry: str, uuids: list[str]) -> int | None:
    if entry.lstrip("-").isdigit():
        index = int(entry)
        return index if 0 <= index < len(uuids) else None
    if not entry:
        return None
    matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlBackend:
    """GPUs through NVML. Energy from the counter on Volta and newer; power from the instant
    field where the driver has it (the average reading lags by about 1 s on Ampere+)."""

    counter_source = "nvml-counter"
    power_source = "nvml-power"

    def __init__(self, nvml: ModuleType | None = None, visible: str | None = None) -> None:
        self._nvml = nvml if nvml is not None else _load_pynvml()
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise EnergyUnavailable(f"NVML could not start ({exc})") from exc
        if visible is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            count = self._nvml.nvmlDeviceGetCount()
            handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(self._nvml.nvmlDeviceGetUUID(h)) for h in handles]
            self._devices: list[Device] = []
            self._handles = {}
            for position, index in enumerate(resolve_visible(visible, uuids)):
                handle = handles[index]
                device = Device(
                    key=f"cuda:{position}",
                    kind="gpu",
                    name=_text(self._nvml.nvmlDeviceGetName(handle)),
                    uuid=uuids[index],
                    index=index,
                )
                self._devices.append(device)
                self._handles[device.key] = handle
            self._counter = {d.key: self._probe_counter(d) for d in self._devices}
            self._instant = all(self._probe_instant(d) for d in self._devices)
        except self._nvml.NVMLError as exc:
            raise EnergyUnavailable(f"NVML could not list the GPUs ({exc})") from exc
        self.power_field = "instant" if self._instant else "average"

    def devices(self) -> list[Device]:
        return list(self._devices)

    def has_counter(self, device: Device) -> bool:
        return self._counter[device.key]

    def read_counter_j(self, device: Device) -> float:
        try:
            mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[device.key])
        except self._nvml.NVMLError as exc:
            raise EnergyUnavailable(f"{device.key} energy counter unreadable ({exc})") from exc
        return mj / 1000.0

    def read_power_w(self, device: Device) -> float:
        handle = self._handles[device.key]
        try:
            if self._instant:
                (value,) = self._nvml.nvmlDeviceGetFieldValues(handle, [self._nvml.NVML_FI_DEV_POWER_INSTANT])
                if value.nvmlReturn == self._nvml.NVML_SUCCESS:
                    return value.value.uiVal / 1000.0
            return self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except self._nvml.NVMLError as exc:
            raise EnergyUnavailable(f"{device.key} power unreadable ({exc})") from exc

    def power_limit_w(self, device: Device) -> float | None:
        try:
            return self._nvml.nvmlDeviceGetEnforcedPowerLimit(self._handles[device.key]) / 1000.0
        except self._nvml.NVMLError:
            return None

    def driver_version(self) -> str | None:
        try:
            return _text(self._nvml.nvmlSystemGetDriverVersion())
        except self._nvml.NVMLError:
            return None

    def set_busy(self, busy: bool) -> None:
        pass

    def model_idle_w(self, device: Device) -> float | None:
        return None  # measured, not modelled

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def _probe_counter(self, device: Device) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[device.key])
        except self._nvml.NVMLError:
            return False  # pre-Volta GPUs: NotSupported; integrate power samples instead
        return True

    def _probe_instant(self, device: Device) -> bool:
        field = getattr(self._nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field is None:
            return False
        try:
            (value,) = self._nvml.nvmlDeviceGetFieldValues(self._handles[device.key], [field])
        except self._nvml.NVMLError:
            return False
        return value.nvmlReturn == self._nvml.NVML_SUCCESS
