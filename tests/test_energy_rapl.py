from pathlib import Path

import pytest
from helpers import FakeClock

from greenray.energy import EnergyMeter, EnergyUnavailable
from greenray.energy.rapl import RaplBackend

MAX_UJ = 262_143_328_850


def make_zone(root: Path, name: str, number: int, energy_uj: int) -> Path:
    zone = root / f"intel-rapl:{number}"
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{name}\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    sub = zone / f"intel-rapl:{number}:0"  # a subzone (core): not a package, ignored
    sub.mkdir()
    (sub / "name").write_text("core\n")
    (sub / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    (sub / "energy_uj").write_text("0\n")
    return zone


def test_packages_are_found_and_subzones_ignored(tmp_path):
    make_zone(tmp_path, "package-0", 0, 1000)
    make_zone(tmp_path, "package-1", 1, 1000)
    backend = RaplBackend(root=tmp_path)
    assert [d.key for d in backend.devices()] == ["cpu:package-0", "cpu:package-1"]
    assert all(d.kind == "cpu" for d in backend.devices())


def test_the_counter_survives_wrap_around(tmp_path):
    zone = make_zone(tmp_path, "package-0", 0, MAX_UJ - 2_000_000)
    backend = RaplBackend(root=tmp_path)
    device = backend.devices()[0]
    start = backend.read_counter_j(device)
    (zone / "energy_uj").write_text("3000000\n")  # wrapped: 2 J before the wrap, 3 J after
    assert backend.read_counter_j(device) - start == pytest.approx(5.0 + 1e-6)
    (zone / "energy_uj").write_text("4000000\n")
    assert backend.read_counter_j(device) - start == pytest.approx(6.0 + 1e-6)


def test_a_window_over_a_wrap_measures_the_true_energy(tmp_path):
    zone = make_zone(tmp_path, "package-0", 0, MAX_UJ - 10_000_000)
    clock = FakeClock(0.0)
    meter = EnergyMeter([RaplBackend(root=tmp_path)], clock=clock)
    meter.begin_window("w")
    clock.t = 1.0
    (zone / "energy_uj").write_text("15000000\n")
    m = meter.end_window("w")
    assert m.energy_source == "rapl"
    assert m.joules == pytest.approx(25.0, abs=1e-5)


def test_unreadable_counters_mean_no_rapl(tmp_path):
    zone = make_zone(tmp_path, "package-0", 0, 1)
    (zone / "energy_uj").unlink()  # as if root-only
    with pytest.raises(EnergyUnavailable):
        RaplBackend(root=tmp_path)
    with pytest.raises(EnergyUnavailable):
        RaplBackend(root=tmp_path / "missing")
