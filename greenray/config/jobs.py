"""The jobs greenray runs, as configs: a training study (`greenray hpo`) and a serving bench
(`greenray serve-bench`), each composed of smaller configs, with the energy settings shared.
Defaults are what a user gets without flags; the study's own protocol (64 rounds x 8
repetitions x 25 epochs) is in experiments/strategies.yaml."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, model_validator

from greenray.config.base import Config
from greenray.config.policy import BatchPolicy, PolicyError, parse_policy
from greenray.config.vocab import (
    DEFAULT_DATA_DIR,
    GRID_VALUES,
    Arrival,
    Count,
    DataDir,
    Dataset,
    Device,
    EnergyBackend,
    Flag,
    Frequency,
    Gpus,
    Listed,
    MaybeAccuracy,
    MaybeCount,
    MaybeFlag,
    MaybeJoules,
    MaybePixels,
    Mutable,
    Net,
    NotNegative,
    Objective,
    ParamCount,
    Positive,
    Precision,
    Scheduler,
    Shape,
    Step,
    Strategy,
    Text,
    Unique,
    Weights,
    WholeNumber,
    adam_count,
    default_relu,
    problem,
    searched_names,
    sentence,
)
from greenray.energy import EnergyMeter, open_meter


class EnergyConfig(Config):
    """How energy is measured, wherever the work runs."""

    FLAT = {"backend": "energy", "require": "require_energy"}

    backend: EnergyBackend = "auto"  # auto: NVML GPUs, else RAPL; nvml, rapl, simulated, none
    interval_ms: Positive = 10.0  # power sampling interval, milliseconds
    require: Flag = False  # refuse to run where nothing is measurable (exit 2)
    idle_seconds: NotNegative = 3.0  # idle baseline before the work, seconds; 0 skips it

    def open_meter(self, quiet: bool = False) -> EnergyMeter:
        """A meter for these settings, or an EnergyRequestError saying why there is none."""
        return open_meter(self.backend, interval_ms=self.interval_ms, require=self.require, quiet=quiet)


# ------------------------------------------------------------------------------ study


class SearchConfig(Config):
    """What the searcher proposes: `rounds` configurations, each trained `repetitions` times."""

    strategy: Strategy = "bayes"  # grid (the study's partial grid), random, bayes (GP with PI)
    # 3 (lr, beta1, beta2) or 5 (+ eps, weight_decay); "3+batch", "5+batch+epochs", ... also
    # search the batch size and the epoch count (the number stays a number without extras)
    params: ParamCount = 3
    uniform_lr: Flag = False  # draw lr uniformly as the study did (else log-uniform)
    rounds: Count = 8
    repetitions: Count = 2


class TrialConfig(Config):
    """What one trial trains: a net on a data set for some epochs."""

    net: Net = "dense-poly"
    dataset: Dataset = "digits"
    data_dir: DataDir = DEFAULT_DATA_DIR  # torchvision's layout; made absolute (trials run elsewhere)
    download: Flag = False
    synthetic_shape: Shape = (1, 28, 28)  # CxHxW of --dataset synthetic
    epochs: Count = 10
    batch_size: Count = 512  # the study's
    n_conv: Count = 2  # SimpleCNN's conv blocks
    n_linear: Count = 3  # every net's linear layers
    relu: MaybeFlag = None  # None: the net's studied default (on for cnn, off for the dense nets)

    @property
    def uses_relu(self) -> bool:
        return default_relu(self.net) if self.relu is None else self.relu


class ResourceConfig(Config):
    """What Ray gives each trial, and how many run at once."""

    gpus_per_trial: Gpus = None  # None: 1 where the cluster has GPUs, else 0; fractions share
    cpus_per_trial: Positive = 1.0
    max_concurrent: MaybeCount = None  # None: as many as the cluster's nodes hold


class LeversConfig(Config):
    """The green levers of a study: stop it once it stops paying off, stop bad trials early,
    and make energy part of what the searcher optimises. All off by default (the study's own
    protocol: every trial to its last epoch, accuracy alone)."""

    # Joules of all trials together, idle-free where the idle baseline is known (as the summary)
    energy_budget: MaybeJoules = None
    patience: MaybeCount = None  # stop after this many rounds without a better round
    # stop once a round's mean accuracy reaches this; with --objective min-energy, the accuracy
    # the least energy must reach (a constraint, which stops nothing)
    target_accuracy: MaybeAccuracy = None
    scheduler: Scheduler = "fifo"  # fifo (no early stopping), asha, median (Ray Tune's own)
    # accuracy, accuracy-per-kj, pareto (accuracy and energy), min-energy (at --target-accuracy)
    objective: Objective = "accuracy"

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

    FLAGS = {"uniform_lr": "--uniform", "n_conv": "--conv-layers", "n_linear": "--linear-layers"}

    seed: WholeNumber = 0  # seeds the searcher and, with round and repetition, each trial
    search: SearchConfig = SearchConfig()
    trial: TrialConfig = TrialConfig()
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
        """The columns every trial row of this study carries besides its own results."""
        trial = self.trial
        return {
            "strategy": self.search.strategy,
            "net": trial.net,
            "dataset": trial.dataset,
            "params": self.search.params,
            "uniform_lr": self.search.uniform_lr,
            "n_conv": trial.n_conv if trial.net == "cnn" else 0,  # the dense nets have none
            "n_linear": trial.n_linear,
            "relu": trial.uses_relu,
            "epochs": trial.epochs,
            "batch_size": trial.batch_size,
            "seed": self.seed,
            "gpus_per_trial": self.resources.gpus_per_trial,
            "cpus_per_trial": self.resources.cpus_per_trial,
        }


# ----------------------------------------------------------------------------- mutate

BASE_ADAM = {"beta1": 0.9, "beta2": 0.999}  # Adam's defaults: the base configuration's betas


class MutationConfig(Config):
    """What `greenray mutate` changes: a base configuration, and one mutant per hyperparameter
    and step, each with that one value multiplied by the step (Wang et al.'s operators)."""

    FLAT = {"hyperparameters": "mutate"}

    hyperparameters: Annotated[tuple[Mutable, ...], Listed, Unique] = ("epochs", "lr", "batch_size")
    steps: Annotated[tuple[Step, ...], Listed, Unique] = (0.5, 2.0)  # factors on the base value
    lr: Positive = 1e-3  # the base's learning rate (Adam's default; betas 0.9, 0.999)
    repetitions: Count = 2  # trainings of each configuration
    parallel: Count = 1  # trials at once (1: serially); on a GPU they share it, 1/N each
    cpus_per_trial: Positive = 1.0


class MutateConfig(Config):
    """A mutation study (`greenray mutate`): stored in DIR/study.json beside the StudyConfig
    it runs as (one round per configuration)."""

    FLAGS = {"n_conv": "--conv-layers", "n_linear": "--linear-layers"}

    seed: WholeNumber = 0
    mutation: MutationConfig = MutationConfig()
    trial: TrialConfig = TrialConfig()
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


# ------------------------------------------------------------------------------ bench

STUDY_POLICIES = "fixed:16,fixed:32,fixed:64,fixed:128,greedy"
STUDY_FREQUENCIES = (16.0, 32.0, 64.0, 128.0)


def _policy(value: Any) -> BatchPolicy:
    try:
        return parse_policy(value)
    except PolicyError as exc:
        raise problem(f"a batching policy ({exc})") from None


Policy = Annotated[BatchPolicy, PlainValidator(_policy), PlainSerializer(str, return_type=str)]


class ServingConfig(Config):
    """How a replica runs its model."""

    weights: Weights = "default"  # default (pretrained when cached or online), none (random), a file
    precision: Precision = "fp32"  # bf16/fp16 through torch.autocast; fp16 needs a GPU
    device: Device = "auto"  # auto: a GPU where the cluster has one
    image_size: MaybePixels = None  # None: the weights' own (224)
    # uint8 -> float, normalisation and the copy to the device inside each batch's energy window
    preprocess_in_window: Flag = False

    @model_validator(mode="after")
    def _fp16_needs_a_gpu(self) -> ServingConfig:
        if self.precision == "fp16" and self.device == "cpu":
            raise sentence("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return self


class BenchConfig(Config):
    """A serving bench (`greenray serve-bench`): every model x frequency x policy; stored whole
    in DIR/bench.json."""

    FLAGS = {
        "models": "--model",
        "policies": "--policy",
        "frequencies": "--frequency",
        "replica_cpus": "--cpus-per-replica",
        "ingress_cpus": "--cpus-per-ingress",
    }

    models: Annotated[tuple[Text, ...], Listed, Unique] = ("convnext",)
    policies: Annotated[tuple[Policy, ...], Listed, Unique] = tuple(
        map(parse_policy, STUDY_POLICIES.split(","))
    )
    frequencies: Annotated[tuple[Frequency, ...], Listed, Unique] = STUDY_FREQUENCIES
    requests: Count = 8192  # a run ends once this many are served (the study's 2^13)
    warmup_batches: WholeNumber = 256  # before each model's runs (the study's)
    warmup_batch_size: Count = 32
    arrival: Arrival = "constant"
    seed: WholeNumber = 0  # seeds the arrivals and the images
    replicas: Count = 1  # one per GPU with --device cuda
    replica_cpus: Positive = 0.5  # CPUs Ray reserves per replica
    # 0: the load generator calls the model replicas itself (the study's path); N: through N
    # ingress replicas that validate and group requests for them (greenray.serve.ingress)
    ingress_replicas: WholeNumber = 0
    ingress_cpus: Positive = 0.25  # CPUs Ray reserves per ingress replica
    serving: ServingConfig = ServingConfig()
    energy: EnergyConfig = EnergyConfig(idle_seconds=5.0)
