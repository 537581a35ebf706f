"""NVIDIA backend on nvidia-ml-py: the total-energy counter, power readings, NVML errors
translated (lost GPU or not), and the mapping from the devices this process sees
(CUDA_VISIBLE_DEVICES: indices, GPU UUIDs, MIG instance UUIDs) to NVML devices by UUID."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from types import ModuleType

from greenray.energy.backend import Device, DeviceLost, EnergyUnavailable

# Measured on one H100 before greenray existed (shared/reference/h100.md): the counter moves
# about every 100 ms and a read costs about 4 ms. benchmarks/gpu_suite.py measures both.
COUNTER_PERIOD_S = 0.1
COUNTER_READ_S = 0.004
# nvmlDeviceGetPowerUsage on Ampere and newer: a 1 s moving average (Yang et al., SC'24).
AVERAGE_WINDOW_S = 1.0
# NVML return codes after which the device is gone for this process.
_LOST_CODES = ("NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED")
_LOST_DEFAULTS = (15, 16)
MIG_NOTE = "NVML has no per-instance energy"


def _load_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency, but be plain if it is gone
        raise EnergyUnavailable("nvidia-ml-py is not installed") from exc
    return pynvml


@dataclass(frozen=True)
class Visible:
    """One entry of CUDA_VISIBLE_DEVICES resolved: the NVML index whose energy is read, and
    the MIG instance's UUID when the entry named one."""

    index: int
    mig_uuid: str | None = None


def resolve_visible(spec: str | None, uuids: list[str]) -> list[int]:
    """NVML indices of the devices CUDA would show for CUDA_VISIBLE_DEVICES=`spec` (GPUs by
    index or UUID only; see `resolve_entries` for MIG instances and the reason a list ends)."""
    return [v.index for v in resolve_entries(spec, uuids)[0]]


def resolve_entries(
    spec: str | None, uuids: list[str], mig_parents: dict[str, int] | None = None
) -> tuple[list[Visible], str | None]:
    """The devices CUDA would show for CUDA_VISIBLE_DEVICES=`spec`, and why the list stopped
    early, in words (None when it did not).

    `uuids[i]` is the UUID of NVML device i; `mig_parents` maps MIG instance UUIDs to their
    GPU's index. Entries are indices or UUIDs (a unique prefix is enough, as for CUDA); like
    CUDA, the first entry that names no device ends the list. Integer entries follow NVML's
    (PCI bus) order, which is CUDA's order when CUDA_DEVICE_ORDER=PCI_BUS_ID (what Ray and
    most clusters use) or the GPUs are alike. A MIG instance is measured as its whole GPU, once
    however many of its instances are listed.
    """
    if spec is None:
        return [Visible(i) for i in range(len(uuids))], None
    chosen: list[Visible] = []
    for entry in (e.strip() for e in spec.split(",")):
        found = _entry(entry, uuids, mig_parents or {})
        if found is None:
            return chosen, _unknown(entry, uuids, mig_parents or {})
        if any(v.index == found.index for v in chosen):
            if found.mig_uuid is None:
                return chosen, None  # a GPU listed twice: CUDA stops there too
            continue  # a second instance of the same GPU: its energy is already counted
        chosen.append(found)
    return chosen, None


def _entry(entry: str, uuids: list[str], mig_parents: dict[str, int]) -> Visible | None:
    if entry.lstrip("-").isdigit():
        index = int(entry)
        return Visible(index) if 0 <= index < len(uuids) else None
    if not entry:
        return None
    if entry.startswith("MIG-"):
        # CUDA 11.0's form names the parent: MIG-GPU-<uuid>/<gi>/<ci>
        if entry.startswith("MIG-GPU-"):
            parent = _unique_prefix(entry[4:].split("/")[0], uuids)
            return Visible(parent, entry) if parent is not None else None
        matches = [u for u in mig_parents if u.startswith(entry)]
        return Visible(mig_parents[matches[0]], matches[0]) if len(matches) == 1 else None
    index = _unique_prefix(entry, uuids)
    return Visible(index) if index is not None else None


def _unique_prefix(prefix: str, uuids: list[str]) -> int | None:
    matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def _unknown(entry: str, uuids: list[str], mig_parents: dict[str, int]) -> str:
    """Why `entry` names no device, in words: what NVML does see."""
    seen = f"NVML sees {len(uuids)} GPU(s)" + (f", indices 0-{len(uuids) - 1}" if uuids else "")
    if entry.startswith("MIG-"):
        instances = f"{len(mig_parents)} MIG instance(s)" if mig_parents else "no MIG instance"
        return (
            f"CUDA_VISIBLE_DEVICES entry {entry!r} names no MIG instance NVML sees ({seen}, {instances}; "
            f"an instance is measured as its whole GPU, since {MIG_NOTE})"
        )
    return (
        f"CUDA_VISIBLE_DEVICES entry {entry!r} names no GPU ({seen}): "
        "it and the entries after it are not measured"
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlBackend:
    """GPUs through NVML. Energy from the counter on Volta and newer; power from the instant
    field where the driver has it (the average reading lags by about 1 s on Ampere+)."""

    counter_source = "nvml-counter"
    power_source = "nvml-power"
    counter_period_s = COUNTER_PERIOD_S
    counter_read_s = COUNTER_READ_S
    average_window_s = AVERAGE_WINDOW_S

    def __init__(self, nvml: ModuleType | None = None, visible: str | None = None) -> None:
        self._injected = nvml is not None
        self._nvml = nvml if nvml is not None else _load_pynvml()
        self._lost = tuple(
            getattr(self._nvml, n, d) for n, d in zip(_LOST_CODES, _LOST_DEFAULTS, strict=True)
        )
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise EnergyUnavailable(f"NVML could not start ({exc})") from exc
        if visible is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._visible = visible
        try:
            count = self._nvml.nvmlDeviceGetCount()
            handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(self._nvml.nvmlDeviceGetUUID(h)) for h in handles]
            migs = self._mig_instances(handles) if visible and "MIG-" in visible else {}
            entries, self.visibility_note = resolve_entries(
                visible, uuids, {u: i for u, (i, _) in migs.items()}
            )
            self._devices: list[Device] = []
            self._handles = {}
            for position, entry in enumerate(entries):
                handle = handles[entry.index]
                name = _text(self._nvml.nvmlDeviceGetName(handle))
                if entry.mig_uuid is not None:
                    instance = migs.get(entry.mig_uuid, (None, None))[1]
                    profile = _text(self._nvml.nvmlDeviceGetName(instance)) if instance is not None else "MIG"
                    name = f"{profile} (shares {name} {uuids[entry.index]})"
                device = Device(
                    key=f"cuda:{position}",
                    kind="gpu",
                    name=name,
                    uuid=uuids[entry.index],
                    index=entry.index,
                    shared=entry.mig_uuid is not None,
                    mig_uuid=entry.mig_uuid,
                )
                self._devices.append(device)
                self._handles[device.key] = handle
            self._counter = {d.key: self._probe_counter(d) for d in self._devices}
            self._instant = bool(self._devices) and all(self._probe_instant(d) for d in self._devices)
            self._limits = {d.key: self._read_limit(d) for d in self._devices}
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
            raise self._error(device, "energy counter unreadable", exc) from exc
        return mj / 1000.0

    def read_power_w(self, device: Device) -> float:
        handle = self._handles[device.key]
        try:
            if self._instant:
                (value,) = self._nvml.nvmlDeviceGetFieldValues(handle, [self._nvml.NVML_FI_DEV_POWER_INSTANT])
                if value.nvmlReturn == self._nvml.NVML_SUCCESS:
                    return value.value.uiVal / 1000.0
                raise EnergyUnavailable(
                    f"{device.key} instant power unreadable (NVML return {value.nvmlReturn})"
                )
            return self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except self._nvml.NVMLError as exc:
            raise self._error(device, "power unreadable", exc) from exc

    def power_limit_w(self, device: Device) -> float | None:
        return self._limits.get(device.key)

    def driver_version(self) -> str | None:
        try:
            return _text(self._nvml.nvmlSystemGetDriverVersion())
        except self._nvml.NVMLError:
            return None

    def set_busy(self, busy: bool) -> None:
        pass

    def spec(self) -> dict | None:
        """How a sampling process opens the same GPUs; None for an injected NVML (a test's)."""
        return None if self._injected else {"backend": "nvml", "options": {"visible": self._visible}}

    def model_idle_w(self, device: Device) -> float | None:
        return None  # measured, not modelled

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def _error(self, device: Device, what: str, exc: Exception) -> EnergyUnavailable:
        """An NVML error as the meter's: DeviceLost when the GPU is gone, else retryable."""
        kind = DeviceLost if getattr(exc, "value", None) in self._lost else EnergyUnavailable
        return kind(f"{device.key} {what} ({exc})")

    def _read_limit(self, device: Device) -> float | None:
        try:
            return self._nvml.nvmlDeviceGetEnforcedPowerLimit(self._handles[device.key]) / 1000.0
        except self._nvml.NVMLError:
            return None

    def _mig_instances(self, handles: list) -> dict[str, tuple[int, object]]:
        """MIG instance UUID -> (its GPU's NVML index, its handle), over the GPUs in MIG mode."""
        found: dict[str, tuple[int, object]] = {}
        for index, handle in enumerate(handles):
            try:
                current, _pending = self._nvml.nvmlDeviceGetMigMode(handle)
                if not current:
                    continue
                slots = self._nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
            except self._nvml.NVMLError:
                continue  # no MIG on this GPU (NotSupported), or not allowed to ask
            for slot in range(slots):
                try:
                    instance = self._nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                    found[_text(self._nvml.nvmlDeviceGetUUID(instance))] = (index, instance)
                except self._nvml.NVMLError:
                    continue  # an empty slot
        return found

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
