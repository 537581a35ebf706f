"""The names a job may use (strategies, nets, data sets, precisions, ...) and the checked types its
fields are made of. Each check raises one `ConfigProblem` saying what a value should be, which
`greenray.config.base.usage_error` turns into the one sentence a user sees."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
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


def _checked(check: Callable[[Any], Any]) -> BeforeValidator:
    return BeforeValidator(check)


def _optional(check: Callable[[Any], Any]) -> BeforeValidator:
    """`check`, with None let through (the setting then takes its documented default)."""
    return BeforeValidator(lambda value: None if value is None else check(value))


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


def choice(names: Iterable, lower: bool = True) -> Callable[[Any], Any]:
    """One of `names` (text compared without case or surrounding space)."""
    names = tuple(names)

    def check(value: Any) -> Any:
        key = value.strip().lower() if lower and isinstance(value, str) else value
        if isinstance(key, bool) or key not in names:
            raise problem("one of " + ", ".join(str(n) for n in names))
        return key

    return check


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


def adam_count(params: int | str) -> int:
    """How many of Adam's hyperparameters a --params value searches (3 or 5)."""
    return int(str(params).split("+")[0])


def searched_names(params: int | str) -> tuple[str, ...]:
    """Every hyperparameter a --params value searches: Adam's, then the extra dimensions."""
    extras = str(params).split("+")[1:]
    return ADAM_PARAMS[adam_count(params)] + tuple(EXTRA_DIMS[e] for e in extras)


def whole(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise problem(f"a whole number of at least {minimum}")
        return value

    return check


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _positive(value: Any) -> float:
    number = _number(value)
    if number is None or not 0 < number < math.inf:
        raise problem("a positive number")
    return number


def _not_negative(value: Any) -> float:
    number = _number(value)
    if number is None or not 0 <= number < math.inf:
        raise problem("a number of at least 0")
    return number


def _joules(value: Any) -> float:
    number = _number(value)
    if number is None or not 0 < number < math.inf:
        raise problem("a positive number of Joules")
    return number


def _accuracy(value: Any) -> float:
    number = _number(value)
    if number is None or not 0 < number <= 1:
        raise problem("an accuracy in (0, 1]")
    return number


def _step(value: Any) -> float:
    """A mutation's factor: a positive number other than 1, as a number or its text ('0.5')."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise problem("a positive factor other than 1, such as 0.5 or 2") from None
    number = _number(value)
    if number is None or not 0 < number < math.inf or number == 1:
        raise problem("a positive factor other than 1, such as 0.5 or 2")
    return number


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise problem("true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise problem("a non-empty text")
    return value.strip()


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


def _gpus(value: Any) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is None or number < 0 or (number > 1 and not number.is_integer()) or math.isinf(number):
        raise problem("0, a fraction below 1 or a whole number of GPUs")
    return number


def _data_dir(value: Any) -> str:
    """An absolute path: trials read it in Ray workers, whose working folder differs."""
    return str(Path(_text(value)).expanduser().absolute())


def _weights(value: Any) -> str:
    text = _text(value)
    if text not in ("default", "none") and not Path(text).is_file():
        raise problem("default (torchvision's pretrained), none (random) or a state-dict file that exists")
    return text


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


def _frequency(value: Any) -> float:
    """Hz, as a number or its text ('16')."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise problem("a positive number of Hz") from None
    return _positive(value)


Strategy = Annotated[str, _checked(choice(STRATEGIES))]
Net = Annotated[str, _checked(_net)]
Dataset = Annotated[str, _checked(choice(DATASETS))]
ParamCount = Annotated[int | str, _checked(_params)]
Scheduler = Annotated[str, _checked(choice(SCHEDULERS))]
Mutable = Annotated[str, _checked(choice(MUTABLE))]
Step = Annotated[float, _checked(_step)]
Objective = Annotated[str, _checked(choice(OBJECTIVES))]
Precision = Annotated[str, _checked(choice(PRECISIONS))]
Arrival = Annotated[str, _checked(choice(ARRIVALS))]
Device = Annotated[str, _checked(choice(DEVICES))]
EnergyBackend = Annotated[str, _checked(choice(ENERGY_BACKENDS))]
Count = Annotated[int, _checked(whole(1))]
WholeNumber = Annotated[int, _checked(whole(0))]
Positive = Annotated[float, _checked(_positive)]
NotNegative = Annotated[float, _checked(_not_negative)]
Flag = Annotated[bool, _checked(_flag)]
Text = Annotated[str, _checked(_text)]
Shape = Annotated[tuple[int, int, int], _checked(_shape)]
Gpus = Annotated[float | None, _checked(_gpus)]
DataDir = Annotated[str, _checked(_data_dir)]
Weights = Annotated[str, _checked(_weights)]
Frequency = Annotated[float, _checked(_frequency)]
MaybeCount = Annotated[int | None, _optional(whole(1))]
MaybeJoules = Annotated[float | None, _optional(_joules)]
MaybeAccuracy = Annotated[float | None, _optional(_accuracy)]
MaybeFlag = Annotated[bool | None, _optional(_flag)]
MaybePixels = Annotated[int | None, _optional(whole(16))]
Listed = _checked(_listed)
Unique = AfterValidator(unique)
