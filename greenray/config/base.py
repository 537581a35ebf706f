"""What every config shares: frozen, no unknown fields, a flat name per setting (the CLI's
flags, the experiment files' cells and old study.json files use flat names), and the one
translator from a validation error to the sentence a user sees (`usage_error`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar, Self, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from greenray.errors import UsageError


@dataclass(frozen=True)
class Source:
    """Where config values came from, so an error names them the user's way: a command's
    flags (`--rounds 0 is not ...`) or a file's fields (`x.yaml: rounds 0 is not ...`)."""

    prefix: str = ""  # "experiments/x.yaml: "
    flags: bool = True
    subject: str = "this command"  # what a missing or unknown field is missing from


COMMAND = Source()
# The two forms of a setting an experiment file gives as one value or as a list of levels
# (greenray.experiments): pydantic puts them in an error's location; the user wrote neither.
ONE, LEVELS = "<one>", "<levels>"


@dataclass(frozen=True)
class Setting:
    """One setting of a config tree, where it is declared: the field (its default, type and
    `description`, the help) of the config class that owns it, and how a user names it."""

    flat: str  # its name in flat form: CLI flags, experiment files, index.json
    path: tuple[str, ...]  # the field names that reach it from the top config
    owner: type[Config]  # the config class that declares the field
    flag: str  # --flat-name unless a FLAGS entry says otherwise ("--relu/--no-relu" for both)
    named: bool = False  # a FLAGS entry names it (a switch then has only the names given)

    @property
    def field(self) -> FieldInfo:
        return self.owner.model_fields[self.path[-1]]

    @property
    def help(self) -> str:
        return self.field.description or ""


class Config(BaseModel):
    """A frozen, checked config. Sub-configs nest; every leaf setting has a flat name (its
    field name unless FLAT says otherwise), unique across the whole tree, and a flag (FLAGS,
    declared by the config that owns the setting or by one that holds it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    FLAT: ClassVar[dict[str, str]] = {}  # field -> flat name, where they differ
    FLAGS: ClassVar[dict[str, str]] = {}  # flat name -> CLI flag, where not --flat-name

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """Flat name -> its Setting, in field order: what a command's options, an experiment
        file's fields and the README's tables are generated from."""
        return _settings(cls)

    @classmethod
    def flat_paths(cls) -> dict[str, tuple[str, ...]]:
        """Flat name -> the path of field names that reaches it."""
        return {flat: setting.path for flat, setting in cls.settings().items()}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], source: Source = COMMAND) -> Self:
        """A config from flat names (the defaults for the rest), or a UsageError in one sentence."""
        paths = cls.flat_paths()
        unknown = [key for key in values if key not in paths]
        if unknown:
            raise UsageError(f"{source.prefix}{unknown[0]!r} is not a setting of {source.subject}")
        nested = cls.model_construct().model_dump() if _all_defaults(cls) else {}
        for key, value in values.items():
            node = nested
            *parents, leaf = paths[key]
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls.checked(nested, source)

    @classmethod
    def checked(cls, data: Mapping[str, Any], source: Source = COMMAND) -> Self:
        """model_validate, with a ValidationError turned into one sentence."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise usage_error(exc, cls, source) from None

    def flat(self) -> dict[str, Any]:
        """Flat name -> value, JSON-ready (policies as text, tuples as lists)."""
        dumped = self.model_dump(mode="json")
        out = {}
        for flat, path in self.flat_paths().items():
            value = dumped
            for part in path:
                value = value[part]
            out[flat] = value
        return out

    def replace(self, **flat: Any) -> Self:
        """A checked copy with some settings (by flat name) changed."""
        return self.from_flat(self.flat() | flat)

    @classmethod
    def flag(cls, flat: str) -> str:
        """The flag of a setting of this config or of one it holds (its first name for a switch)."""
        setting = cls.settings().get(flat)
        return (setting.flag if setting else _own_flag(cls, flat)).split("/")[0]

    @classmethod
    def defaults(cls) -> SimpleNamespace:
        """Each setting's default by flat name."""
        return SimpleNamespace(**cls().flat())


@functools.cache
def _settings(cls: type[Config]) -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    for name, info in cls.model_fields.items():
        sub = _config_class(info.annotation)
        if sub is None:
            flat = cls.FLAT.get(name, name)
            found[flat] = Setting(flat, (name,), cls, _own_flag(cls, flat), flat in cls.FLAGS)
        else:
            for flat, inner in sub.settings().items():
                flag, named = cls.FLAGS.get(flat, inner.flag), inner.named or flat in cls.FLAGS
                found[flat] = dataclasses.replace(inner, path=(name, *inner.path), flag=flag, named=named)
    return found


def _own_flag(cls: type[Config], flat: str) -> str:
    return cls.FLAGS.get(flat, "--" + flat.replace("_", "-"))


def _config_class(annotation: Any) -> type[Config] | None:
    candidates = [annotation, *get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, Config)), None)


def _all_defaults(cls: type[Config]) -> bool:
    return all(not info.is_required() for info in cls.model_fields.values())


# ------------------------------------------------------------------------------ errors


def usage_error(exc: ValidationError, model: type[Config], source: Source = COMMAND) -> UsageError:
    """The first problem of a validation error as one sentence, naming the flag or field."""
    error = exc.errors(include_url=False)[0]
    kind, loc = error["type"], tuple(p for p in error["loc"] if p not in (ONE, LEVELS))
    if kind == "greenray_sentence":
        return UsageError(source.prefix + error["ctx"]["text"])
    where = _where(model, loc, source)
    if kind == "missing":
        return UsageError(f"{source.prefix}'{where}' is missing; {source.subject} needs it")
    if kind == "extra_forbidden":
        known = ", ".join(_fields(model, loc[:-1]))
        return UsageError(f"{source.prefix}{loc[-1]!r} is not a field of {source.subject} (fields: {known})")
    shown = repr(error.get("input"))
    if kind == "greenray":
        return UsageError(f"{source.prefix}{where} {shown} is not {error['ctx']['expected']}")
    return UsageError(f"{source.prefix}{where} {shown} is not valid ({error['msg']})")


def _where(model: type[Config], loc: tuple, source: Source) -> str:
    if not source.flags:
        return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))
    cls, flat = model, None
    for part in loc:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(part)
        sub = _config_class(info.annotation) if info is not None else None
        if sub is None:
            flat = cls.FLAT.get(part, part)
            break
        cls = sub
    return model.flag(flat) if flat else "a setting"


def _fields(model: type[Config], path: tuple) -> list[str]:
    cls = model
    for part in path:
        if isinstance(part, str) and part in cls.model_fields:
            cls = _config_class(cls.model_fields[part].annotation) or cls
    return list(cls.model_fields)
