"""CPU package energy from Linux powercap (RAPL), when its counters are readable."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from greenray.energy.backend import Device, EnergyUnavailable

POWERCAP = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^[a-z]+-rapl:(\d+)$")  # intel-rapl:0, not the subzone intel-rapl:0:1


class _Zone:
    """One package counter made monotonic: the raw microjoule counter wraps at
    max_energy_range_uj, and every read (the sampler reads often) adds what it moved."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.max_uj = int((path / "max_energy_range_uj").read_text())
        self._last_uj = self._raw()
        self._total_uj = 0
        self._last_t = time.monotonic()
        self._last_total_uj = 0

    def _raw(self) -> int:
        return int((self.path / "energy_uj").read_text())

    def total_uj(self) -> int:
        raw = self._raw()
        step = raw - self._last_uj
        if step < 0:  # wrapped past max_energy_range_uj
            step += self.max_uj + 1
        self._total_uj += step
        self._last_uj = raw
        return self._total_uj

    def power_w(self) -> float:
        """Mean power since the previous power read."""
        total, now = self.total_uj(), time.monotonic()
        watts = (total - self._last_total_uj) / 1e6 / max(now - self._last_t, 1e-9)
        self._last_total_uj, self._last_t = total, now
        return watts


class RaplBackend:
    """CPU packages; a device per top-level powercap zone."""

    counter_source = "rapl"
    power_source = "rapl"
    power_field = "derived"
    counter_period_s = 0.001  # RAPL's energy status updates about every millisecond
    counter_read_s = 2e-5  # a sysfs read: cheap enough to read at every window edge
    average_window_s = 0.0

    def __init__(self, root: Path | str | None = None) -> None:
        # GREENRAY_POWERCAP: where a container mounts powercap elsewhere (and for tests)
        root = Path(root) if root is not None else Path(os.environ.get("GREENRAY_POWERCAP", POWERCAP))
        self._root = root
        self._lock = threading.Lock()
        self._zones: dict[str, _Zone] = {}
        self._devices: list[Device] = []
        paths = sorted(p for p in root.glob("*-rapl:*") if _PACKAGE_ZONE.match(p.name))
        for path in paths:
            try:
                name = (path / "name").read_text().strip()
                zone = _Zone(path)
            except (OSError, ValueError):
                continue  # energy_uj is root-only on many kernels: absent, not guessed
            number = int(_PACKAGE_ZONE.match(path.name).group(1))
            device = Device(key=f"cpu:{name}", kind="cpu", name=name, index=number)
            self._zones[device.key] = zone
            self._devices.append(device)
        if not self._devices:
            raise EnergyUnavailable(f"no readable RAPL package counter under {root}")

    def devices(self) -> list[Device]:
        return list(self._devices)

    def has_counter(self, device: Device) -> bool:
        return True

    def read_counter_j(self, device: Device) -> float:
        try:
            with self._lock:
                return self._zones[device.key].total_uj() / 1e6
        except (OSError, ValueError) as exc:
            raise EnergyUnavailable(f"{device.key} RAPL counter unreadable ({exc})") from exc

    def read_power_w(self, device: Device) -> float:
        try:
            with self._lock:
                return self._zones[device.key].power_w()
        except (OSError, ValueError) as exc:
            raise EnergyUnavailable(f"{device.key} RAPL counter unreadable ({exc})") from exc

    def power_limit_w(self, device: Device) -> float | None:
        return None  # not read: powercap's constraints are package limits, not a bound to trust

    def set_busy(self, busy: bool) -> None:
        pass

    def spec(self) -> dict | None:
        """How a sampling process opens the same packages."""
        return {"backend": "rapl", "options": {"root": str(self._root)}}

    def model_idle_w(self, device: Device) -> float | None:
        return None  # measured, not modelled

    def close(self) -> None:
        pass
