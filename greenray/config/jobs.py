"""The training jobs greenray runs, as configs: a study (`greenray hpo`) and a mutation study
(`greenray mutate`), each composed of smaller configs, and the energy settings every job shares.
Each setting is one field: its default (what a user gets without flags; the study's own protocol,
64 rounds x 8 repetitions x 25 epochs, is in experiments/strategies.yaml), its check (its type)
and its help (`description`, with its unit): the CLI's options, the experiment files' fields and
the README's tables are generated from these fields (greenray.options)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, model_validator

from greenray.config.base import Config
from greenray.config.vocab import (
    DEFAULT_DATA_DIR,
    ENERGY_BACKENDS,
    GRID_VALUES,
    OBJECTIVES,
    SCHEDULERS,
    Count,
    DataDir,
    Dataset,
    EnergyBackend,
    Flag,
    Gpus,
    Listed,
    MaybeAccuracy,
    MaybeCount,
    MaybeFlag,
    MaybeJoules,
    Mutable,
    Net,
    NotNegative,
    Objective,
    ParamCount,
    Positive,
    Scheduler,
    Shape,
    Step,
    Strategy,
    Unique,
    WholeNumber,
    adam_count,
    default_relu,
    problem,
    searched_names,
    sentence,
)
from greenray.energy import EnergyMeter, open_meter
from greenray.energy import carbon as _carbon


def _intensity(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number < float("inf") or isinstance(value, bool):
        raise problem("a carbon intensity in gCO2e/kWh (a number of at least 0)")
    return number


def _region(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return _carbon.lookup(str(value)).code
    except _carbon.UnknownRegion:
        raise problem(
            "a country (ISO 3166-1 alpha-3: FRA, DEU, USA) or Google Cloud region (europe-west9) in "
            "greenray's carbon table; give the grid's gCO2e/kWh as --carbon-intensity instead"
        ) from None


class EnergyConfig(Config):
    """How energy is measured, wherever the work runs."""

    FLAT = {"backend": "energy", "require": "require_energy"}
    FLAGS = {"require_energy": "--require-energy"}

    backend: EnergyBackend = Field(
        "auto",
        description=f"Energy backend: {', '.join(ENERGY_BACKENDS)} (auto: NVML GPUs, else RAPL; simulated is "
        "labelled so).",
    )
    interval_ms: Positive = Field(10.0, description="Power sampling interval, milliseconds.")
    require: Flag = Field(False, description="Exit 2 instead of running unmeasured.")
    idle_seconds: NotNegative = Field(
        3.0,
        description="Idle baseline before the work, seconds (per GPU before trials, per replica before "
        "warm-up; simulated energy uses its model's idle); 0 skips it.",
    )
    carbon_intensity: Annotated[float | None, BeforeValidator(_intensity)] = Field(
        None,
        description="The grid's carbon intensity, gCO2e/kWh: every row and summary gains co2e_g, "
        "its kWh times this. Off by default.",
    )
    region: Annotated[str | None, BeforeValidator(_region)] = Field(
        None,
        description="Where the work runs, for co2e_g: an ISO country code (FRA, USA) or a Google Cloud "
        "region (europe-west9), looked up in the shipped table (CodeCarbon's, Our World in Data / Ember, "
        "2021-2023).",
    )

    @model_validator(mode="after")
    def _one_intensity(self) -> EnergyConfig:
        if self.carbon_intensity is not None and self.region is not None:
            raise sentence("give --carbon-intensity or --region, not both")
        return self

    @property
    def g_per_kwh(self) -> float | None:
        """The grid intensity co2e_g is counted at: the one given, the region's, or None."""
        if self.region is not None:
            return _carbon.lookup(self.region).g_per_kwh
        return self.carbon_intensity

    def open_meter(self, quiet: bool = False) -> EnergyMeter:
        """A meter for these settings, or an EnergyRequestError saying why there is none."""
        return open_meter(self.backend, interval_ms=self.interval_ms, require=self.require, quiet=quiet)


# ------------------------------------------------------------------------------ study


class SearchConfig(Config):
    """What the searcher proposes: `rounds` configurations, each trained `repetitions` times."""

    strategy: Strategy = Field(
        "bayes",
        description="grid (the study's partial grid: 5 values per range, drawn without replacement), "
        "random, or bayes (a Gaussian process with Probability of Improvement).",
    )
    params: ParamCount = Field(
        3,
        description="3 (lr, beta1, beta2) or 5 (+ eps, weight_decay); add +batch, +epochs to search the "
        "batch size (16 to 1024, log-uniform, trained as the nearest power of two) and the epoch count "
        "(1 to --epochs) too (e.g. 3+batch).",
    )
    uniform_lr: Flag = Field(False, description="Draw lr uniformly as the study did (else log-uniform).")
    rounds: Count = Field(8, description="Configurations to try (the study: 64).")
    repetitions: Count = Field(2, description="Trainings per configuration (the study: 8).")


# CxHxW of each named data set's images (synthetic: --synthetic-shape).
IMAGE_SHAPES = {"digits": (1, 8, 8), "fashionmnist": (1, 28, 28), "cifar10": (3, 32, 32)}


class TrialConfig(Config):
    """What one trial trains: a net on a data set for some epochs."""

    FLAGS = {"n_conv": "--conv-layers", "n_linear": "--linear-layers", "relu": "--relu/--no-relu"}

    net: Net = Field(
        "dense-poly",
        description="dense-linear, dense-poly or cnn (or DenseLinearNN, DensePolyNN, SimpleCNN).",
    )
    dataset: Dataset = Field(
        "digits",
        description="digits (scikit-learn's 8x8, shipped with it), synthetic (seeded, --synthetic-shape), "
        "fashionmnist or cifar10.",
    )
    data_dir: DataDir = Field(
        DEFAULT_DATA_DIR,
        description="fashionmnist's four idx files (.gz or not) in DIR, DIR/fashion-mnist (Debian's "
        "layout) or DIR/FashionMNIST/raw (torchvision's), and with the default folder also Debian's "
        "/usr/share/datasets/fashion-mnist; cifar10 in torchvision's DIR/cifar-10-batches-py.",
    )
    download: Flag = Field(False, description="Download fashionmnist/cifar10 into --data-dir (online).")
    synthetic_shape: Shape = Field((1, 28, 28), description="CxHxW of --dataset synthetic.")
    epochs: Count = Field(10, description="Epochs per training (the study: 25).")
    batch_size: Count = Field(512, description="Training batch size (the study's).")
    n_linear: Count = Field(3, description="Linear layers of every net.")
    n_conv: Count = Field(2, description="SimpleCNN's conv layers.")
    relu: MaybeFlag = Field(
        None, description="ReLU (default on for cnn, off for the dense nets, as studied)."
    )

    @property
    def uses_relu(self) -> bool:
        return default_relu(self.net) if self.relu is None else self.relu

    @model_validator(mode="after")
    def _conv_fits(self) -> TrialConfig:
        """SimpleCNN's blocks halve the image and triple the channels: past a 1-pixel map a block
        only multiplies the weights (50 blocks once asked every trial for 41 GB)."""
        _, height, width = self.synthetic_shape if self.dataset == "synthetic" else IMAGE_SHAPES[self.dataset]
        most = 1 + int(math.log2(min(height, width)))  # one block per halving, and one on 1 pixel
        if self.net == "cnn" and self.n_conv > most:
            raise sentence(
                f"--conv-layers {self.n_conv} is more than a {height}x{width} image holds with cnn: "
                f"at most {most} (each block halves the image)"
            )
        return self


class ResourceConfig(Config):
    """What Ray gives each trial, and how many run at once."""

    gpus_per_trial: Gpus = Field(
        None,
        description="GPUs per trial, fractions share a GPU (default 1 where the cluster has GPUs, else 0).",
    )
    cpus_per_trial: Positive = Field(1.0, description="CPUs per trial.")
    max_concurrent: MaybeCount = Field(
        None, description="At most this many trials at once (default: as many as the cluster's nodes hold)."
    )


class LeversConfig(Config):
    """The green levers of a study: stop it once it stops paying off, stop bad trials early,
    and make energy part of what the searcher optimises. All off by default (the study's own
    protocol: every trial to its last epoch, accuracy alone)."""

    energy_budget: MaybeJoules = Field(
        None,
        description="Stop the study once its trials together spent this many Joules (idle-free where the "
        "idle baseline is known, as the summary counts them; failed and running trials count).",
    )
    patience: MaybeCount = Field(
        None, description="Stop the study after this many rounds without a better round."
    )
    target_accuracy: MaybeAccuracy = Field(
        None,
        description="Stop the study once a round's mean accuracy reaches this; with --objective "
        "min-energy, the accuracy the least energy must reach (a constraint, which stops nothing).",
    )
    scheduler: Scheduler = Field(
        "fifo",
        description=f"Stop bad trials early: {', '.join(SCHEDULERS)} (fifo: every trial to its last epoch, "
        "the study's; asha: Ray Tune's ASHAScheduler; median: its MedianStoppingRule; on the accuracy each "
        "epoch reports).",
    )
    objective: Objective = Field(
        "accuracy",
        description=f"What the searcher optimises: {', '.join(OBJECTIVES)} (pareto: the accuracy / "
        "energy front; min-energy: the least energy at --target-accuracy).",
    )

    @model_validator(mode="after")
    def _min_energy_has_a_target(self) -> LeversConfig:
        if self.objective == "min-energy" and self.target_accuracy is None:
            raise sentence(
                "--objective min-energy searches the least energy at an accuracy of at least "
                "--target-accuracy: give --target-accuracy"
            )
        return self

    @property
    def stop_accuracy(self) -> float | None:
        """The accuracy that stops the study once reached: --target-accuracy, except under
        min-energy, where it is the constraint (the search goes on for less energy)."""
        return None if self.objective == "min-energy" else self.target_accuracy

    @property
    def stopping(self) -> bool:
        """Whether any lever may stop the whole study before its budget of trials."""
        return any(v is not None for v in (self.energy_budget, self.patience, self.stop_accuracy))

    @property
    def needs_energy(self) -> tuple[str, ...]:
        """The flags set here that mean nothing without measured (or simulated) energy."""
        named = []
        if self.energy_budget is not None:
            named.append("--energy-budget")
        if self.objective != "accuracy":
            named.append(f"--objective {self.objective}")
        return tuple(named)


class StudyConfig(Config):
    """A training study (`greenray hpo`): stored whole in DIR/study.json."""

    FLAGS = {"uniform_lr": "--uniform"}
    # Settings that say how much to run or where data lives, not what a trial is: not row columns.
    NOT_IN_ROWS: ClassVar[tuple[str, ...]] = (
        "rounds",
        "repetitions",
        "data_dir",
        "download",
        "synthetic_shape",
        "max_concurrent",
    )

    search: SearchConfig = SearchConfig()
    trial: TrialConfig = TrialConfig()
    seed: WholeNumber = Field(0, description="Seeds the searcher and, with round and repetition, each trial.")
    resources: ResourceConfig = ResourceConfig()
    energy: EnergyConfig = EnergyConfig()
    levers: LeversConfig = LeversConfig()

    @model_validator(mode="after")
    def _grid_fits(self) -> StudyConfig:
        points = GRID_VALUES ** len(self.hyperparameters)
        if self.search.strategy == "grid" and self.search.rounds > points:
            raise sentence(
                f"--rounds {self.search.rounds} is more than the partial grid's {points} points with "
                f"--params {self.search.params}: use at most that, or --strategy random"
            )
        return self

    @model_validator(mode="after")
    def _levers_fit(self) -> StudyConfig:
        needs = self.levers.needs_energy
        if needs and self.energy.backend == "none":
            raise sentence(
                f"{needs[0]} counts energy, which --energy none does not measure: use --energy auto "
                "(or simulated on a machine without a GPU), or drop it"
            )
        if "epochs" in self.hyperparameters and self.trial.epochs < 2:
            raise sentence(
                f"--params {self.search.params} searches 1 to --epochs epochs: give --epochs 2 or more"
            )
        return self

    @property
    def trials(self) -> int:
        return self.search.rounds * self.search.repetitions

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """Every hyperparameter the searcher proposes (Adam's, then batch_size / epochs)."""
        return searched_names(self.search.params)

    @property
    def adam_params(self) -> int:
        """How many of Adam's hyperparameters are searched (3 or 5)."""
        return adam_count(self.search.params)

    def row_fields(self) -> dict[str, Any]:
        """The columns every trial row of this study carries besides its own results: what the
        search and each trial are (a new setting of theirs is a new column), and its resources."""
        parts = self.search.flat() | self.trial.flat() | {"seed": self.seed}
        parts |= self.resources.flat()
        fields = {k: v for k, v in parts.items() if k not in self.NOT_IN_ROWS}
        fields["n_conv"] = self.trial.n_conv if self.trial.net == "cnn" else 0  # the dense nets have none
        fields["relu"] = self.trial.uses_relu
        return fields


# ----------------------------------------------------------------------------- mutate

BASE_ADAM = {"beta1": 0.9, "beta2": 0.999}  # Adam's defaults: the base configuration's betas


class MutationConfig(Config):
    """What `greenray mutate` changes: a base configuration, and one mutant per hyperparameter
    and step, each with that one value multiplied by the step (Wang et al.'s operators)."""

    FLAT = {"hyperparameters": "mutate"}

    hyperparameters: Annotated[tuple[Mutable, ...], Listed, Unique] = Field(
        ("epochs", "lr", "batch_size"),
        description="Hyperparameters to change, one at a time: epochs, lr, batch_size.",
    )
    steps: Annotated[tuple[Step, ...], Listed, Unique] = Field(
        (0.5, 2.0), description="Factors each is multiplied by, one mutant each (e.g. 0.5,2)."
    )
    lr: Positive = Field(1e-3, description="The base configuration's learning rate (Adam's default).")
    repetitions: Count = Field(2, description="Trainings of each configuration.")
    parallel: Count = Field(1, description="Trials at once (1: serially); on a GPU they share it, 1/N each.")
    cpus_per_trial: Positive = Field(1.0, description="CPUs per trial.")


class MutateConfig(Config):
    """A mutation study (`greenray mutate`): stored in DIR/study.json beside the StudyConfig
    it runs as (one round per configuration)."""

    mutation: MutationConfig = MutationConfig()
    trial: TrialConfig = TrialConfig()
    seed: WholeNumber = Field(0, description="Seeds each trial with its round and repetition.")
    energy: EnergyConfig = EnergyConfig()

    def base(self) -> dict[str, Any]:
        """The base configuration: Adam's defaults with --lr, the trial's batch size and epochs."""
        return {
            "lr": self.mutation.lr,
            **BASE_ADAM,
            "batch_size": self.trial.batch_size,
            "epochs": self.trial.epochs,
        }

    def configurations(self) -> list[dict[str, Any]]:
        """The base, then one mutant per hyperparameter and step (a mutant equal to the base or
        to an earlier one is left out), each labelled for its row: `__mutation__` ("base",
        "lr x2"), `__mutated__` (the hyperparameter, None for the base), `__step__`."""
        base = self.base()
        found = [base | {"__mutation__": "base", "__mutated__": None, "__step__": 1.0}]
        seen = [base]
        for name in self.mutation.hyperparameters:
            for step in self.mutation.steps:
                value = base[name] * step
                if name != "lr":  # epochs and batch size are whole numbers
                    value = max(1, round(value))
                mutant = base | {name: value}
                if mutant in seen:
                    continue
                seen.append(mutant)
                found.append(
                    mutant | {"__mutation__": f"{name} x{step:g}", "__mutated__": name, "__step__": step}
                )
        return found

    def study(self, gpus: bool) -> StudyConfig:
        """The StudyConfig a mutation study runs as: a round per configuration, `parallel`
        trials at once, each holding 1/parallel of a GPU where the cluster has GPUs."""
        mutation = self.mutation
        share = 1.0 / mutation.parallel if gpus else 0.0
        return StudyConfig(
            seed=self.seed,
            search=SearchConfig(
                strategy="random", rounds=len(self.configurations()), repetitions=mutation.repetitions
            ),
            trial=self.trial,
            resources=ResourceConfig(
                gpus_per_trial=share, cpus_per_trial=mutation.cpus_per_trial, max_concurrent=mutation.parallel
            ),
            energy=self.energy,
        )
