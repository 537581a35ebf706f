"""The names a job may use (strategies, nets, data sets, precisions, ...) and the checked types its
fields are made of. pydantic checks them (strict types, bounds, Literal choices); each type says
in words what a value should be (`worded`), which `greenray.config.base.usage_error` turns into
the one sentence a user sees."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    Strict,
    StringConstraints,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from greenray.energy import ENERGY_CHOICES

STRATEGIES = ("grid", "random", "bayes")
NET_NAMES = ("dense-linear", "dense-poly", "cnn")
# Class names and spellings a user may give for each net (any case, _ or -).
NET_ALIASES = {
    "denselinear": "dense-linear",
    "denselinearnn": "dense-linear",
    "densepoly": "dense-poly",
    "densepolynn": "dense-poly",
    "simplecnn": "cnn",
    "simple-cnn": "cnn",
}
DATASETS = ("digits", "synthetic", "fashionmnist", "cifar10")
DOWNLOADABLE = ("fashionmnist", "cifar10")
# Adam's hyperparameters searched: the study's 3- and 5-parameter spaces.
ADAM_PARAMS = {3: ("lr", "beta1", "beta2"), 5: ("lr", "beta1", "beta2", "eps", "weight_decay")}
# Optional searchable dimensions beside Adam's (`--params 3+batch`): the knobs that move energy
# most. Each is named in --params by its key and searched as the hyperparameter beside it.
EXTRA_DIMS = {"batch": "batch_size", "epochs": "epochs"}
PARAMS_HELP = "one of 3, 5 (optionally with +batch and +epochs, e.g. 3+batch)"
# What `greenray mutate` may change, one at a time (Wang et al.'s mutation operators).
MUTABLE = ("epochs", "lr", "batch_size")
SCHEDULERS = ("fifo", "asha", "median")  # fifo: every trial to its last epoch (the study's)
OBJECTIVES = ("accuracy", "accuracy-per-kj", "pareto", "min-energy")
GRID_VALUES = 5  # the study's partial grid: 5 values per hyperparameter (125 or 3,125 points)
PRECISIONS = ("fp32", "bf16", "fp16")
ARRIVALS = ("constant", "jitter", "poisson")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DATA_DIR = "~/.cache/greenray/data"
ENERGY_BACKENDS = ENERGY_CHOICES


def problem(expected: str) -> PydanticCustomError:
    """A value that is not what its field takes; `expected` completes "VALUE is not ..."."""
    return PydanticCustomError("greenray", "{expected}", {"expected": expected})


def sentence(text: str) -> PydanticCustomError:
    """A problem that needs a whole sentence (several fields, or a fix to name)."""
    return PydanticCustomError("greenray_sentence", "{text}", {"text": text})


def worded(expected: str) -> WrapValidator:
    """Whatever pydantic finds wrong with a value (its type, a bound), said one way: VALUE is
    not `expected` (greenray.config.base.usage_error makes the sentence)."""

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise problem(expected) from None

    return WrapValidator(check)


def number(*, whole: bool = False, ge: float | None = None, gt: float | None = None, unit: str = "") -> Any:
    """A number pydantic checks strictly (no bool, no text, finite) against its bounds, with the
    bounds said in words: "a whole number of at least 1", "a positive number of Joules"."""
    if whole:
        return Annotated[int, Strict(), Ge(ge), worded(f"a whole number of at least {ge}")]
    expected = "a positive number" if gt == 0 else f"a number of at least {ge:g}"
    bound = Gt(gt) if gt is not None else Ge(ge)
    return Annotated[
        float, Strict(), bound, AllowInfNan(False), worded(expected + (f" of {unit}" if unit else ""))
    ]


def choice(names: Iterable) -> Any:
    """One of `names` (a Literal), given in any case and with surrounding space."""
    names = tuple(names)
    lower = BeforeValidator(lambda value: value.strip().lower() if isinstance(value, str) else value)
    return Annotated[Literal[names], lower, worded("one of " + ", ".join(str(n) for n in names))]


def _from_text(value: Any) -> Any:
    """A number given as text ('16', from a comma-separated flag) as that number."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


NET_HELP = f"one of {', '.join(NET_NAMES)} (or DenseLinearNN, DensePolyNN, SimpleCNN)"


def canonical_net(name: Any) -> str:
    """dense-linear, dense-poly or cnn for a net's name or class name, in any case."""
    key = str(name).strip().lower().replace("_", "-")
    key = NET_ALIASES.get(key.replace("-", ""), key)
    if key not in NET_NAMES:
        raise ValueError(f"unknown net {name!r}: use {NET_HELP}")
    return key


def _net(value: Any) -> str:
    try:
        return canonical_net(value)
    except ValueError:
        raise problem(NET_HELP) from None


def default_relu(net: str) -> bool:
    """Whether a net has ReLU when not told: SimpleCNN yes, the dense nets no (as studied)."""
    return canonical_net(net) == "cnn"


def _params(value: Any) -> int | str:
    """3 or 5 (the study's spaces, kept as the numbers they always were), or either with
    extra dimensions as canonical text ("3+batch+epochs", the extras in EXTRA_DIMS' order)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise problem(PARAMS_HELP)
    head, *extras = str(value).strip().lower().split("+")
    if head not in ("3", "5") or any(e not in EXTRA_DIMS for e in extras) or len(set(extras)) < len(extras):
        raise problem(PARAMS_HELP)
    if not extras:
        return int(head)
    return "+".join([head, *(dim for dim in EXTRA_DIMS if dim in extras)])


def _whole_text(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def adam_count(params: int | str) -> int:
    """How many of Adam's hyperparameters a --params value searches (3 or 5)."""
    return int(str(params).split("+")[0])


def searched_names(params: int | str) -> tuple[str, ...]:
    """Every hyperparameter a --params value searches: Adam's, then the extra dimensions."""
    extras = str(params).split("+")[1:]
    return ADAM_PARAMS[adam_count(params)] + tuple(EXTRA_DIMS[e] for e in extras)


def _step(value: Any) -> float:
    """A mutation's factor: a positive number other than 1."""
    if value == 1:
        raise ValueError("1 changes nothing")
    return value


def _shape(value: Any) -> tuple[int, int, int]:
    """CxHxW as text ("3x32x32") or three whole numbers."""
    parts = value.lower().split("x") if isinstance(value, str) else value
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise problem("CxHxW of positive sizes, such as 3x32x32")
    return shape  # type: ignore[return-value]


def _gpus(value: float) -> float:
    if value > 1 and not value.is_integer():
        raise ValueError("a share of a GPU is below 1")
    return value


def _data_dir(value: str) -> str:
    """An absolute path: trials read it in Ray workers, whose working folder differs."""
    return str(Path(value).expanduser().absolute())


def _weights(value: str) -> str:
    if value not in ("default", "none") and not Path(value).is_file():
        raise ValueError("no such file")
    return value


def _listed(value: Any) -> tuple:
    """A list given as comma-separated text ("16,32") or as a list: parts stripped, empty ones
    dropped, at least one left; each part is then checked as the list's items are."""
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",")]
    if not isinstance(value, list | tuple):
        raise problem("a list of one value or more")
    parts = tuple(p for p in value if p != "")
    if not parts:
        raise problem("a list of one value or more")
    return parts


def unique(values: tuple) -> tuple:
    """The values in order, each once (a repeated policy or rate would only run twice)."""
    return tuple(dict.fromkeys(values))


Strategy = choice(STRATEGIES)
Net = Annotated[str, BeforeValidator(_net)]
Dataset = choice(DATASETS)
# (a number given as text, as the CLI gives it, is that number: --params 4 is 4 in the sentence)
ParamCount = Annotated[int | str, BeforeValidator(_params), BeforeValidator(_whole_text)]
Scheduler = choice(SCHEDULERS)
Mutable = choice(MUTABLE)
Objective = choice(OBJECTIVES)
Precision = choice(PRECISIONS)
Arrival = choice(ARRIVALS)
Device = choice(DEVICES)
EnergyBackend = choice(ENERGY_BACKENDS)
Count = number(whole=True, ge=1)
WholeNumber = number(whole=True, ge=0)
Positive = number(gt=0)
NotNegative = number(ge=0)
Flag = Annotated[bool, Strict(), worded("true or false")]
Text = Annotated[
    str, Strict(), StringConstraints(strip_whitespace=True, min_length=1), worded("a non-empty text")
]
Shape = Annotated[tuple[int, int, int], BeforeValidator(_shape)]
Gpus = Annotated[
    number(ge=0) | None,
    AfterValidator(lambda v: v if v is None else _gpus(v)),
    worded("0, a fraction below 1 or a whole number of GPUs"),
]
DataDir = Annotated[Text, AfterValidator(_data_dir)]
Weights = Annotated[
    Text,
    AfterValidator(_weights),
    worded("default (torchvision's pretrained), none (random) or a state-dict file that exists"),
]
# (worded again outside the text's conversion: the sentence quotes what the user gave, '0')
Frequency = Annotated[number(gt=0, unit="Hz"), BeforeValidator(_from_text), worded("a positive number of Hz")]
Step = Annotated[
    number(gt=0),
    AfterValidator(_step),
    BeforeValidator(_from_text),
    worded("a positive factor other than 1, such as 0.5 or 2"),
]
MaybeCount = Count | None
MaybeJoules = number(gt=0, unit="Joules") | None
MaybeAccuracy = (
    Annotated[float, Strict(), Gt(0), Le(1), AllowInfNan(False), worded("an accuracy in (0, 1]")] | None
)
MaybeFlag = Flag | None
MaybePixels = number(whole=True, ge=16) | None
Listed = BeforeValidator(_listed)
Unique = AfterValidator(unique)
