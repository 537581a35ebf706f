"""benchmarks/gpu_suite.py in its dry mode (the stand-in NVML, no GPU): every check runs, both
files are written, and they say the numbers are the stand-in's."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_suite  # noqa: E402


def test_the_dry_run_runs_every_check_and_labels_its_numbers(tmp_path):
    report = gpu_suite.run(gpu_suite.CHECKS, gpu_suite.dry_context(scale=0.02), tmp_path)
    assert [c["name"] for c in report["checks"]] == [c.name for c in gpu_suite.CHECKS]
    assert all(c["status"] == "ok" for c in report["checks"]), report["checks"]
    stored = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert stored["dry_run"] and "not a GPU measurement" in stored["label"]
    markdown = (tmp_path / "gpu_suite.md").read_text()
    assert markdown.startswith("# gpu_suite: stand-in NVML (dry run): not a GPU measurement")
    results = {c["name"]: c["result"] for c in stored["checks"]}
    assert results["counter_period_and_read_cost"]["read_cost_ms_median"] >= 4.0  # the stand-in's 4 ms
    assert results["power_fields"]["instant_field"] is True
    assert results["idle_settling"]["settled_idle_w"] < results["idle_settling"]["hasty_idle_w"]
    for name, result in results.items():
        for metric in result:
            assert f"| {name} | {metric} |" in markdown


def test_a_failing_check_is_recorded_and_the_others_still_run(tmp_path):
    def broken(ctx):
        raise RuntimeError("no such field")

    checks = [gpu_suite.Check("broken", 1.0, broken), gpu_suite.CHECKS[0]]
    report = gpu_suite.run(checks, gpu_suite.dry_context(scale=0.02), tmp_path)
    assert [c["status"] for c in report["checks"]] == ["failed", "ok"]
    assert "RuntimeError: no such field" in (tmp_path / "gpu_suite.md").read_text()
