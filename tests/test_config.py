"""The config spine: one declaration per setting, flat names and nested configs agreeing, JSON
round trips, the CLI's flags and defaults taken from the configs, and the layering rules
(greenray.energy imports nothing else of greenray; greenray.config imports neither torch nor Ray)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from greenray.cli import hpo, mutate, serve, serve_bench, serve_tune
from greenray.config import BenchConfig, MutateConfig, PolicyTuneConfig, ServeConfig, StudyConfig
from greenray.errors import UsageError

PACKAGE = Path(__file__).resolve().parents[1] / "greenray"
INVOCATION = {"ctx", "out_dir", "resume", "trust_folder", "address"}  # where and how to run, not what


COMMANDS = (
    (hpo, StudyConfig),
    (serve_bench, BenchConfig),
    (mutate, MutateConfig),
    (serve, ServeConfig),
    (serve_tune, PolicyTuneConfig),
)
CONFIGS = [config for _, config in COMMANDS]


@pytest.mark.parametrize("config", CONFIGS)
def test_flat_names_are_unique_and_round_trip(config):
    flat = config().flat()
    assert len(flat) == len(config.flat_paths())
    assert config.from_flat(flat) == config()
    rebuilt = config.model_validate(json.loads(json.dumps(config().model_dump(mode="json"))))
    assert rebuilt == config()


def test_a_changed_setting_lands_in_its_nested_config():
    config = StudyConfig().replace(rounds=5, energy="simulated", n_conv=4, uniform_lr=True)
    assert (config.search.rounds, config.energy.backend, config.trial.n_conv) == (5, "simulated", 4)
    assert config.search.uniform_lr and StudyConfig.flag("n_conv") == "--conv-layers"
    with pytest.raises(UsageError, match="'roundz' is not a setting"):
        StudyConfig.from_flat({"roundz": 5})


def test_each_command_has_a_default_per_setting_and_they_agree(monkeypatch):
    import inspect

    for command, config in COMMANDS:
        params = inspect.signature(command).parameters
        names = set(params) - INVOCATION
        assert names == set(config.flat_paths()), command.__name__
        defaults = config().flat()
        for name in names:
            default = params[name].default
            if isinstance(default, str) and not isinstance(defaults[name], str):
                default = config.from_flat({name: default}).flat()[name]  # "16,32" for a list
            assert default == defaults[name], name


def test_a_serve_policy_is_auto_or_a_policy_and_live_configs_share_one_deployment():
    config = ServeConfig.from_flat({"policy": "AUTO", "port": 8080, "frequency": 32, "slo_ms": 50})
    assert config.policy == "auto" and config.batch_policy is None
    assert str(ServeConfig.from_flat({"policy": "fixed:8@5"}).batch_policy) == "fixed:8@5"
    with pytest.raises(UsageError, match="--policy 'fixed:0' is not auto or a batching policy"):
        ServeConfig.from_flat({"policy": "fixed:0"})
    with pytest.raises(UsageError, match="--port 70000 is not a TCP port"):
        ServeConfig.from_flat({"port": 70000})
    with pytest.raises(UsageError, match="--runs 1 is not a whole number of at least 2"):
        PolicyTuneConfig.from_flat({"runs": 1})
    tune = PolicyTuneConfig.from_flat({"model": "vit", "ingress_replicas": 2, "energy": "simulated"})
    assert tune.model == "vit" and isinstance(tune.deploy, type(BenchConfig().deploy))
    assert tune.deploy.ingress_replicas == 2 and tune.deploy.energy.backend == "simulated"
    assert BenchConfig().deploy.ingress_replicas == 0  # serve-bench keeps the study's path unless asked


def test_the_hpo_resume_of_an_unrelated_study_json_is_one_sentence(tmp_path):
    from greenray.tune.study import stored_config

    with pytest.raises(UsageError, match="holds no settings"):
        stored_config({"kind": "hpo"}, tmp_path)
    with pytest.raises(UsageError, match="--rounds 0 is not"):
        stored_config({"settings": {"rounds": 0}}, tmp_path)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_greenray_energy_imports_nothing_else_of_greenray():
    for path in (PACKAGE / "energy").glob("*.py"):
        ours = {name for name in imports_of(path) if name.startswith("greenray")}
        assert all(name.startswith("greenray.energy") for name in ours), (path.name, ours)


def test_results_and_config_import_only_the_layers_below():
    allowed = {
        "results": ("greenray.results", "greenray.errors"),
        "config": ("greenray.config", "greenray.energy", "greenray.errors"),
    }
    for package, prefixes in allowed.items():
        for path in (PACKAGE / package).glob("*.py"):
            ours = {name for name in imports_of(path) if name.startswith("greenray")}
            assert all(name.startswith(prefixes) for name in ours), (path.name, ours)


def test_importing_the_config_imports_neither_torch_nor_ray():
    code = (
        "import sys, greenray.config; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch','ray'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_live_servers_ingress_and_hub_replicas_import_no_torch():
    """Their module is what their replica processes import: torch there is seconds of CPU and
    hundreds of MB per replica for nothing (only the model replicas run a model)."""
    code = "import sys, greenray.serve.app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_package_has_no_import_cycle():
    """Every import counts, a function's own included: a cycle hidden inside a function is
    still one module needing the other to be whole."""
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")
    }
    modules = {name.removesuffix(".__init__"): path for name, path in modules.items()}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            # a package's own __init__ is imported with any of its modules: not an edge back
            graph[name] |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(
            n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in graph[start]
        )

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert cycles == []
