"""Every setting declared once: a field added to a config, and nothing else edited, is a flag of
every command that takes that config (with its default and help), a field of both kinds of
experiment file, and part of study.json; the README's settings tables are the configs' own."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from greenray.options import COMMANDS, settings_table

ROOT = Path(__file__).resolve().parents[1]
NEW_FIELD = (
    '    scratch_level: Positive = Field(2.5, description="A setting no command has heard of, in widgets.")\n'
)

CHECK = textwrap.dedent(
    """
    import json, sys
    from typer.testing import CliRunner
    from greenray import experiments
    from greenray.cli import app
    from greenray.config import StudyConfig
    from greenray.results import run_record

    found = {}
    for command in ("hpo", "mutate", "serve-bench", "serve", "serve-tune", "meter"):
        shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        found[command] = "--scratch-level" in shown and "widgets" in shown and "2.5" in shown
    hpo = experiments.load_experiment(sys.argv[1])
    serve = experiments.load_experiment(sys.argv[2])
    found["hpo cells"] = sorted(c.name for c in experiments.cells(hpo))
    options = experiments.RunOptions()
    found["hpo config"] = experiments.hpo_config(experiments.cells(hpo)[0], options).flat()
    found["serve config"] = experiments.bench_config(experiments.cells(serve)[0], options).flat()
    found["study.json"] = run_record("hpo", StudyConfig.from_flat({"scratch_level": 4}))["config"]
    print(json.dumps(found))
    """
)


def test_a_new_config_field_is_a_flag_an_experiment_field_and_in_study_json(tmp_path):
    shutil.copytree(ROOT / "greenray", tmp_path / "greenray", ignore=shutil.ignore_patterns("__pycache__"))
    jobs = tmp_path / "greenray" / "config" / "jobs.py"
    source = jobs.read_text()
    energy = source.index("class EnergyConfig(Config):")
    first_field = energy + re.search(r"\n    \w+: \w+ = ", source[energy:]).start() + 1
    jobs.write_text(source[:first_field] + NEW_FIELD + source[first_field:])
    (tmp_path / "hpo.yaml").write_text(
        "experiment: x\nkind: hpo\nstrategies: [random]\nnets: [cnn]\nparams: [3]\ndatasets: [digits]\n"
        "rounds: 2\nrepetitions: 2\nepochs: 1\nscratch_level: [1, 3]\n"
    )
    (tmp_path / "serve.yaml").write_text(
        "experiment: y\nkind: serve-bench\nmodels: [alexnet]\nfrequencies: [16]\npolicies: [greedy]\n"
        "requests: 8\nscratch_level: 7\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "hpo.yaml"), str(tmp_path / "serve.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    for command in ("hpo", "mutate", "serve-bench", "serve", "serve-tune", "meter"):
        assert found[command], command
    # A list in an experiment file is a factor (a cell per level); one value goes to every cell.
    assert found["hpo cells"] == [
        "digits-cnn-p3-random-scratch_level1",
        "digits-cnn-p3-random-scratch_level3",
    ]
    assert found["hpo config"]["scratch_level"] == 1.0
    assert found["serve config"]["scratch_level"] == 7.0
    assert found["study.json"]["energy"]["scratch_level"] == 4.0


def test_the_readme_settings_tables_are_the_configs_own():
    readme = (ROOT / "README.md").read_text()
    for command, config in COMMANDS.items():
        begin, end = f"<!-- settings {command} -->\n", f"<!-- end settings {command} -->"
        assert begin in readme, f"README.md has no settings table for {command}"
        table = readme.split(begin, 1)[1].split(end, 1)[0]
        assert table == settings_table(config), (
            f"README.md's {command} table differs from the configs: regenerate it with "
            f"python -m greenray.options {command}"
        )
