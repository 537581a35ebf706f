"""An experiment file's fields, generated from the config its cells run (greenray.experiments):
a `Kind` names the factors the study's files give by their own names (a list of levels each: one
cell per level) and what a file must give; every other setting of the config is a field by its
flat name, as one value (every cell takes it) or as a list of levels (another factor). Each value
is checked as the config checks the setting, so a new field of a config is a field of its
experiment files with no other edit."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Discriminator, Tag, create_model

from greenray.config.base import LEVELS, ONE, Config, Setting
from greenray.config.vocab import Text, problem


def _factor(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise problem("a list of one value or more, e.g. [a, b]")
    return value


def _distinct(values: tuple) -> tuple:
    if len(set(values)) < len(values):
        raise problem("a list of distinct values")
    return values


# A factor: a list of levels, each checked as the config checks the setting.
T = TypeVar("T")
Factor = Annotated[tuple[T, ...], BeforeValidator(_factor), AfterValidator(_distinct)]


def _one_or_levels(kind: Any) -> Any:
    """One value of a setting (every cell takes it) or a list of its levels (a factor)."""
    return Annotated[
        Annotated[kind, Tag(ONE)] | Annotated[Factor[kind], Tag(LEVELS)],
        Discriminator(lambda value: LEVELS if isinstance(value, list | tuple) else ONE),
    ]


class Experiment(Config):
    """What every experiment file says besides its settings."""

    experiment: Text
    description: str = ""


ABOUT = ("experiment", "description", "kind")


@dataclass(frozen=True)
class Kind:
    """What an experiment file of one kind may hold: `factors` by the names the study's files
    give them (a list of levels each, one cell per level, named by level in this order), and
    every setting of `config` by its flat name, as one value or as a list of levels (another
    factor, tagged in the cell's name); `required`, what the file must give."""

    name: str
    config: type[Config]
    factors: dict[str, str]  # file name -> the setting a level sets in its cell
    required: tuple[str, ...]
    prefixes: dict[str, str] = field(default_factory=dict)  # a level's prefix in a cell's name
    level_types: dict[str, Any] = field(default_factory=dict)  # where not the setting's own type
    flags: dict[str, str] = field(default_factory=dict)  # `greenray run`'s flags that replace a factor

    def schema(self) -> type[Config]:
        """The file's pydantic model (extra fields forbidden, as in every config)."""
        settings, defaults = self.config.settings(), self.config().flat()
        fields: dict[str, Any] = {"kind": (Literal[self.name], ...)}
        for name, flat in self.factors.items():
            level = self.level_types.get(name) or setting_type(settings[flat])
            fields[name] = (Factor[level], ... if name in self.required else (defaults[flat],))
        for flat, setting in settings.items():
            if flat in self.factors or flat in self.factors.values():
                continue
            own = setting_type(setting)
            kind = own if is_list(setting) else _one_or_levels(own)
            fields[flat] = (kind, ... if flat in self.required else defaults[flat])
        schema = create_model(f"{self.config.__name__}Experiment", __base__=Experiment, **fields)
        schema.FLAGS = self.flags
        return schema


def setting_type(setting: Setting) -> Any:
    """A setting's type with its checks, as its config declares it."""
    info = setting.field
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def is_list(setting: Setting) -> bool:
    """A setting whose own value is a list (a list of it in a file is that value, not levels)."""
    return typing.get_origin(setting.field.annotation) is tuple
