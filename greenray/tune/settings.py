"""What a training study is asked to do (StudySettings: checked, stored in DIR/study.json) and
the part of it every trial needs (TrialSettings)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from greenray.data import DATASETS, DEFAULT_BATCH_SIZE, DEFAULT_DATA_DIR, SyntheticSpec
from greenray.energy import ENERGY_CHOICES
from greenray.errors import UsageError
from greenray.nets import canonical_net, default_relu
from greenray.tune.space import PARAMS

STRATEGIES = ("grid", "random", "bayes")
GRID_VALUES = 5  # the study's partial grid: 5 values per hyperparameter (125 or 3,125 points)
METRIC, MODE = "accuracy", "max"


@dataclass(frozen=True)
class TrialSettings:
    """Everything one trial needs besides its hyperparameters; `baseline` is the idle power
    the driver measured, {node: {device UUID: W}}."""

    net: str = "dense-poly"
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    synthetic: SyntheticSpec = SyntheticSpec()
    epochs: int = 25
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    n_conv: int = 2
    n_linear: int = 3
    relu: bool | None = None
    energy: str = "auto"
    interval_ms: float = 10.0
    baseline: dict[str, dict[str, float]] = field(default_factory=dict)
    share_counter: str | None = None  # the named ShareCounter actor, when trials hold GPUs


@dataclass(frozen=True)
class StudySettings:
    """A study: `rounds` configurations from `strategy`, each trained `repetitions` times.
    Defaults are the study's (64 rounds x 8 repetitions x 25 epochs); the CLI's are small."""

    strategy: str = "bayes"
    net: str = "dense-poly"
    dataset: str = "digits"
    data_dir: str = str(DEFAULT_DATA_DIR)
    download: bool = False
    synthetic_shape: tuple[int, int, int] = (1, 28, 28)
    params: int = 3
    uniform_lr: bool = False
    rounds: int = 64
    repetitions: int = 8
    epochs: int = 25
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    gpus_per_trial: float | None = None  # None: 1 where the cluster has GPUs, else 0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    energy: str = "auto"
    interval_ms: float = 10.0
    require_energy: bool = False
    idle_seconds: float = 3.0
    n_conv: int = 2
    n_linear: int = 3
    relu: bool | None = None  # None: the net's studied default (see greenray.nets.default_relu)

    @property
    def trials(self) -> int:
        return self.rounds * self.repetitions

    def checked(self) -> StudySettings:
        """These settings with names made canonical, or a UsageError naming the first bad one."""
        from greenray.tune.searchers import SEARCHERS

        strategy = self.strategy.strip().lower()
        if strategy not in STRATEGIES:
            raise UsageError(f"unknown --strategy {self.strategy!r}: use grid, random or bayes")
        if strategy not in SEARCHERS:
            raise UsageError(f"--strategy {strategy} is not available in this build: use random")
        try:
            net = canonical_net(self.net)
        except ValueError as exc:
            raise UsageError(f"--net: {exc}") from None
        dataset = self.dataset.strip().lower()
        if dataset not in DATASETS:
            raise UsageError(f"unknown --dataset {self.dataset!r}: use one of {', '.join(DATASETS)}")
        if self.params not in PARAMS:
            raise UsageError(
                f"--params takes 3 (lr, beta1, beta2) or 5 (+ eps, weight_decay), not {self.params}"
            )
        _positive(rounds=self.rounds, repetitions=self.repetitions, epochs=self.epochs)
        if strategy == "grid" and self.rounds > GRID_VALUES**self.params:
            raise UsageError(
                f"--rounds {self.rounds} is more than the partial grid's {GRID_VALUES**self.params} points "
                f"with --params {self.params}: use at most that, or --strategy random"
            )
        _positive(batch_size=self.batch_size, linear_layers=self.n_linear, conv_layers=self.n_conv)
        _positive(cpus_per_trial=self.cpus_per_trial, interval_ms=self.interval_ms)
        if self.max_concurrent is not None:
            _positive(max_concurrent=self.max_concurrent)
        if min(self.synthetic_shape) < 1:
            raise UsageError(f"--synthetic-shape needs positive sizes, not {self.synthetic_shape}")
        if self.idle_seconds < 0:
            raise UsageError(
                f"--idle-seconds cannot be negative (0 skips the idle baseline), not {self.idle_seconds}"
            )
        if self.energy not in ENERGY_CHOICES:
            raise UsageError(f"unknown --energy {self.energy!r}: use one of {', '.join(ENERGY_CHOICES)}")
        gpus = self.gpus_per_trial
        if gpus is not None and (gpus < 0 or (gpus > 1 and not float(gpus).is_integer())):
            raise UsageError(f"--gpus-per-trial takes 0, a fraction below 1 or a whole number, not {gpus:g}")
        return dataclasses.replace(
            self,
            strategy=strategy,
            net=net,
            dataset=dataset,
            data_dir=str(Path(self.data_dir).expanduser().absolute()),
            relu=default_relu(net) if self.relu is None else self.relu,
        )

    def trial(self, baseline: dict[str, dict[str, float]], share_counter: str | None = None) -> TrialSettings:
        return TrialSettings(
            net=self.net,
            dataset=self.dataset,
            data_dir=self.data_dir,
            download=self.download,
            synthetic=SyntheticSpec(shape=self.synthetic_shape, seed=self.seed),
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            n_conv=self.n_conv,
            n_linear=self.n_linear,
            relu=self.relu,
            energy=self.energy,
            interval_ms=self.interval_ms,
            baseline=baseline,
            share_counter=share_counter,
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> StudySettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "synthetic_shape" in values:
            values["synthetic_shape"] = tuple(values["synthetic_shape"])
        return cls(**values)


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0 or (isinstance(value, float) and math.isinf(value)):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be a positive number, not {value:g}")
