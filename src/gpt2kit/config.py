"""Configuration dataclasses as the single source of CLI flags, YAML keys and saved configs.

A command's options are one dataclass. Each field is declared with `option(default, help)`,
or with `group(Options, title)` for a dataclass of related options that several commands share
or that belong together (the text-reading options, the optimizer's). `add_arguments` turns
every option, grouped ones included, into an argparse flag (`max_new_tokens` ->
`--max-new-tokens`; a group's options are listed under its title), `build_config` merges
defaults < YAML file < flags given on the command line, and `to_dict` gives the resolved values
to save beside a run. Flags, YAML keys and saved configs are flat: a group changes where a value
lives in Python (`config.optim.lr`), not how a user names it; a config decorated with
`flat_names` also takes and exposes its options by those names (`TrainConfig(lr=1e-3)`,
`config.lr`). Nothing is defaulted twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from gpt2kit.errors import UserError, raise_if_problems

T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    positional: bool = False,
    metavar: str | None = None,
) -> Any:
    """Declare a config field with its help text (shown by `--help`, and the YAML docs)."""
    meta = {"help": help, "positional": positional, "metavar": metavar}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def model_option() -> Any:
    """The MODEL argument of every command that loads a model (generate, eval, serve, export):
    declared once, so that they all say the same of what they accept."""
    return option(
        help="A Hugging Face-format model folder, a hub id (e.g. gpt2), a run folder from "
        "`gpt2kit train`, or a LoRA adapter folder (merged into its base).",
        positional=True,
        metavar="MODEL",
    )


def group(cls: type[T], title: str) -> T:
    """Declare a field that holds a dataclass of options (every one with a default): its
    options are flags of the command like the others, listed under `title` in `--help`, and
    flat keys in YAML files and saved configs. Option names must be unique across a command."""
    return dataclasses.field(default_factory=cls, metadata={"group": title})


def is_group(f: dataclasses.Field) -> bool:
    """Whether a config field was declared with `group`."""
    return "group" in f.metadata


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(tp: Any) -> tuple[Any, list[Any] | None, bool]:
    """Return (argparse type, choices, is_list) for a field type."""
    tp, _ = _unwrap_optional(tp)
    if typing.get_origin(tp) is list:
        inner = typing.get_args(tp)[0]
        conv, choices, _ = _converter(inner)
        return conv, choices, True
    if typing.get_origin(tp) is Literal:
        values = list(typing.get_args(tp))
        return type(values[0]), values, False
    if tp is bool:
        return _parse_bool, None, False
    if tp in (int, float, str):
        return tp, None, False
    if tp is Path:
        return str, None, False
    raise TypeError(f"unsupported config field type {tp!r}")


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def options_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """Every option of `cls` with its type, the options of its groups included (flattened)."""
    out: list[tuple[dataclasses.Field, Any]] = []
    for f, tp in _fields(cls):
        out.extend(options_of(tp) if is_group(f) else [(f, tp)])
    names = [f.name for f, _ in out]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TypeError(f"{cls.__name__}: options declared twice: {', '.join(clashes)}")
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag (or positional) per field of dataclass `cls` to `parser`.

    Defaults are not stored in the namespace (so `build_config` can tell which flags the user
    gave); they are printed in each flag's help instead. The options of a `group` field are
    added under the group's title.
    """
    options_of(cls)  # refuse clashing names before adding any
    for f, tp in _fields(cls):
        if is_group(f):
            add_arguments(parser.add_argument_group(f.metadata["group"]), tp)
            continue
        meta = f.metadata
        conv, choices, is_list = _converter(tp)
        base_tp, _ = _unwrap_optional(tp)
        default = _default(f)
        help_text = meta.get("help", "")
        if default is not dataclasses.MISSING and not meta.get("positional"):
            shown = (
                "none" if default is None else (" ".join(map(str, default)) if is_list else default)
            )
            if default != [] and default != "":
                help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if choices:
            kwargs["choices"] = choices
        if meta.get("positional"):
            kwargs["nargs"] = (
                "*" if is_list else ("?" if default is not dataclasses.MISSING else None)
            )
            if kwargs["nargs"] is None:
                del kwargs["nargs"]
            parser.add_argument(f.name, type=conv, **kwargs)
            continue
        names = [f"--{f.name.replace('_', '-')}"]
        if base_tp is bool:
            # `--flag` / `--no-flag`: takes no value, so it never swallows a positional.
            kwargs.pop("metavar", None)
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
        elif is_list:
            # A repeatable flag, one value each (`--stop a --stop b`), so it never swallows
            # the positionals that follow it.
            parser.add_argument(*names, type=conv, nargs=1, action="extend", **kwargs)
        else:
            parser.add_argument(*names, type=conv, **kwargs)


def flat_names(cls: type[T]) -> type[T]:
    """Class decorator: let a config with groups also be built, read and set with flat option
    names, the names users know from flags and YAML files.

    `cls(lr=1e-3)` puts `lr` into the group that declares it (on top of a group object given
    as well, as `dataclasses.replace` passes), and `config.lr` reads or sets it there. Each
    config gets its own copy of every group, so two configs never share one.
    """
    hints = typing.get_type_hints(cls)
    groups = {f.name: hints[f.name] for f in dataclasses.fields(cls) if is_group(f)}
    owner = {o.name: g for g, gcls in groups.items() for o in dataclasses.fields(gcls)}
    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for name, gcls in groups.items():
            flat = {k: kwargs.pop(k) for k in [k for k in kwargs if owner.get(k) == name]}
            if flat or name in kwargs:
                kwargs[name] = dataclasses.replace(
                    kwargs[name] if name in kwargs else gcls(), **flat
                )
        generated(self, *args, **kwargs)

    def accessor(name: str, in_group: str) -> property:
        return property(
            lambda self: getattr(getattr(self, in_group), name),
            lambda self, value: setattr(getattr(self, in_group), name, value),
            doc=f"`{in_group}.{name}`",
        )

    cls.__init__ = __init__  # type: ignore[method-assign]
    for name, in_group in owner.items():
        setattr(cls, name, accessor(name, in_group))
    return cls


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict whose keys use underscores."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"Config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"Config file {path} must be a mapping of option: value.")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check a YAML value against the field type, converting what is unambiguous."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"Config key {name!r} cannot be empty.")
    conv, choices, is_list = _converter(tp)
    if is_list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(name, v, typing.get_args(base)[0]) for v in items]
    try:
        out = conv(value) if not (conv is _parse_bool and isinstance(value, bool)) else value
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise UserError(
            f"Config key {name!r}: {value!r} is not a valid {getattr(base, '__name__', base)}."
        ) from None
    if choices and out not in choices:
        raise UserError(
            f"Config key {name!r}: {value!r} is not one of {', '.join(map(str, choices))}."
        )
    return out


def _construct(cls: type[T], values: dict[str, Any]) -> T:
    """A `cls` from flat option values: each group gets the values of its own options."""
    kwargs = {}
    for f, tp in _fields(cls):
        if is_group(f):
            kwargs[f.name] = _construct(tp, values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def build_config(
    cls: type[T], args: argparse.Namespace | dict, yaml_path: str | Path | None = None
) -> T:
    """Make a `cls` from its defaults, then a YAML file, then the flags given (highest).

    Keys are option names, flat whatever group an option belongs to; keys listed in the
    class's `DERIVED_KEYS` (values a command records beside its options) are ignored."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    hints = dict((f.name, tp) for f, tp in options_of(cls))
    values: dict[str, Any] = {}
    if yaml_path:
        derived = getattr(cls, "DERIVED_KEYS", ())  # recorded beside the options; not options
        file_values = {k: v for k, v in load_yaml(yaml_path).items() if k not in derived}
        unknown = sorted(set(file_values) - set(hints))
        problems = []
        if unknown:
            problems.append(
                f"unknown keys: {', '.join(unknown)}. Known keys: {', '.join(sorted(hints))}."
            )
        for k, v in file_values.items():
            if k in hints:
                try:
                    values[k] = _coerce(k, v, hints[k])
                except UserError as e:
                    problems.append(str(e))
        raise_if_problems(problems, f"Config file {yaml_path} has problems:")
    values.update({k: v for k, v in given.items() if k in hints})
    missing = [
        f.name
        for f, _ in options_of(cls)
        if _default(f) is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise UserError(f"Missing required option(s): {', '.join(missing)}.")
    return _construct(cls, values)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-able values keyed by option name, groups flattened (paths
    become strings): what `build_config` reads back from a YAML file."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if is_group(f):
            out.update(to_dict(v))
            continue
        out[f.name] = (
            [str(x) if isinstance(x, Path) else x for x in v]
            if isinstance(v, list)
            else (str(v) if isinstance(v, Path) else v)
        )
    return out
