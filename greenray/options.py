"""A command's options, generated from the config it takes: one typer option per setting, with
the setting's flag, default and help (its field's `description`), so that a new field of a config
is a new flag of every command that takes that config, with no other edit.

typer builds its options from a function's signature; `takes(Config)` gives the command a
signature with one parameter per setting beside its own (where to write, what to resume) and
calls it with `settings`, the values by flat name, for `Config.from_flat` to check. A value the
shell gives as text (a list, a shape, a policy) is passed on as text: the config's own checks
parse it, so the CLI and the experiment files accept the same spellings.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from greenray.config import (
    BenchConfig,
    Config,
    MutateConfig,
    PolicyTuneConfig,
    ServeConfig,
    Setting,
    StudyConfig,
)

SCALARS = (bool, int, float, str)
# The config each command takes (the README's settings tables follow it).
COMMANDS = {
    "hpo": StudyConfig,
    "mutate": MutateConfig,
    "serve-bench": BenchConfig,
    "serve": ServeConfig,
    "serve-tune": PolicyTuneConfig,
}


def takes(config: type[Config], *, leave_out: Iterable[str] = ()) -> Callable:
    """Decorate a command that takes `settings` (a dict by flat name) and its own parameters:
    typer then sees one option per setting of `config` (but those left out) before them."""
    wanted = {flat: s for flat, s in config.settings().items() if flat not in set(leave_out)}
    defaults = config().flat()

    def decorate(command: Callable) -> Callable:
        own = [
            p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"
        ]
        generated = [_parameter(s, defaults[flat]) for flat, s in wanted.items()]

        @functools.wraps(command)
        def run(**given: Any) -> Any:
            settings = {flat: given.pop(flat) for flat in wanted}
            return command(settings=settings, **given)

        parameters = generated + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _parameter(setting: Setting, default: Any) -> inspect.Parameter:
    kind = option_type(setting.field.annotation)
    base = kind if kind in SCALARS else next(a for a in typing.get_args(kind) if a is not type(None))
    if base is str and default is not None:
        default = as_text(default, setting.field.annotation)
    option = typer.Option(*([setting.flag] if setting.named else []), help=setting.help)  # else --x/--no-x
    return inspect.Parameter(
        setting.flat, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def option_type(annotation: Any) -> Any:
    """The type typer parses a setting's flag as: its own where it is a scalar (or a scalar or
    None), else text (lists, shapes, policies, a number or text such as --params 3+batch)."""
    if annotation in SCALARS:
        return annotation
    members = typing.get_args(annotation) if _is_union(annotation) else ()
    scalars = [typing.get_args(m)[0] if typing.get_origin(m) is Annotated else m for m in members]
    scalars = [m for m in scalars if m is not type(None)]
    if len(scalars) == 1 and scalars[0] in SCALARS:
        return scalars[0] | None
    return str | None if type(None) in members else str


def as_text(value: Any, annotation: Any = None) -> str:
    """A default as a user types it: lists comma-separated, a shape as CxHxW, numbers as %g."""
    if isinstance(value, list | tuple):
        fixed = typing.get_origin(annotation) is tuple and Ellipsis not in typing.get_args(annotation)
        return ("x" if fixed else ",").join(as_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def settings_table(config: type[Config]) -> str:
    """The README's table of a command's settings: flag, default and meaning (the field's help)."""
    defaults = config().flat()
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for flat, setting in config.settings().items():
        shown = _shown(defaults[flat], setting.field.annotation)
        lines.append(f"| `{setting.flag}` | {shown} | {setting.help.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _shown(value: Any, annotation: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    return as_text(value, annotation).replace(str(Path.home()), "~")  # (a folder's default)


if __name__ == "__main__":  # python -m greenray.options hpo: the README's table of a command
    import sys

    print(settings_table(COMMANDS[sys.argv[1]]), end="")
