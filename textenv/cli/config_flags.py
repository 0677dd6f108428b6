"""Command-line flags built from config dataclasses: the config is the one list of options.

:func:`add_config_arguments` adds one flag per field (``--batch-size`` for ``batch_size``; a bool
field gets ``--name`` / ``--no-name``; a dict field takes JSON), with the help text taken from
the dataclass docstring's ``Attributes:`` section. Flags default to "not given", so
:func:`config_values` returns only what the user typed and the dataclass keeps its own defaults
and validation (``__post_init__``). Several dataclasses can share one parser (``textenv train``
offers the fields of every algorithm's config; a flag the chosen one lacks is an error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["add_config_arguments", "config_values"]

_FIELDS_ATTR = "_config_fields"


def _field_help(cls: type) -> dict[str, str]:
    """``name: text`` entries of the docstring's ``Attributes:`` section (continuations joined;
    ``a, b: text`` documents both)."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    current: list[str] = []
    in_attrs = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        m = re.match(r"^\s{4,8}([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*): (.*)$", line)
        if m and len(line) - len(line.lstrip()) <= 8:
            current = m.group(1).split(", ")
            for name in current:
                out[name] = m.group(2).strip()
        elif stripped and current:
            for name in current:
                out[name] += " " + stripped
        elif not stripped and out:
            current = []
    # Plain text for the terminal: no reST roles or literals; argparse needs %% for %.
    plain = {k: re.sub(r":\w+:`~?([^`]*)`", r"\1", v).replace("``", "") for k, v in out.items()}
    return {k: v.replace("%", "%%") for k, v in plain.items()}


def _base_type(hint: Any) -> Any:
    """``int | None`` → ``int``; other hints unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"key\": 1}'")
    return value


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def add_config_arguments(
    parser: argparse.ArgumentParser,
    configs: type | Sequence[type],
    *,
    flags: dict[str, str] | None = None,
    skip: Iterable[str] = (),
    extra_help: dict[str, str] | None = None,
) -> None:
    """Add a flag for every field of the dataclass(es) ``configs`` (fields of several classes
    are merged by name). ``flags`` renames a field's flag (``{"env_id": "--env"}``; for a bool
    field the name of its positive form), ``skip`` leaves fields out, ``extra_help`` appends to
    a field's help."""
    classes = [configs] if isinstance(configs, type) else list(configs)
    flags, extra_help, skipped = flags or {}, extra_help or {}, set(skip)
    seen: dict[str, list[tuple[type, dataclasses.Field[Any], Any]]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in skipped and f.init:
                seen.setdefault(f.name, []).append((cls, f, hints[f.name]))
    group = parser.add_argument_group("settings", "(each one a config field; defaults in brackets)")
    names: set[str] = set(parser.get_default(_FIELDS_ATTR) or ())
    for name, entries in seen.items():
        cls, f, hint = entries[0]
        base = _base_type(hint)
        flag = flags.get(name, "--" + name.replace("_", "-"))
        # The first class (or base class) whose docstring documents the field.
        docs = [_field_help(k) for c, *_ in entries for k in c.__mro__ if k is not object]
        text = next((d[name] for d in docs if name in d), "")
        defaults = {_default(c, e) for c, e, _ in entries}
        owners = [c.__name__ for c, *_ in entries]
        if len(defaults) > 1:
            text += " [depends on the config]"
        elif (default := defaults.pop()) is not None:
            text += f" [{default}]"
        if len(classes) > 1 and len(entries) < len(classes):
            text += f" (only {', '.join(owners)})"
        if name in extra_help:
            text += " " + extra_help[name]
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text.strip()}
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(base) is typing.Literal:
            group.add_argument(flag, choices=list(typing.get_args(base)), **kwargs)
        elif base in (int, float):
            group.add_argument(flag, type=_number(base), metavar=base.__name__.upper(), **kwargs)
        elif base is dict or typing.get_origin(base) is dict:
            group.add_argument(flag, type=_json_object, metavar="JSON", **kwargs)
        else:
            group.add_argument(flag, **kwargs)
        names.add(name)
    parser.set_defaults(**{_FIELDS_ATTR: frozenset(names)})


def _default(cls: type, f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return json.dumps(f.default_factory())  # hashable, shown as JSON
    return None


def config_values(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of ``config`` the user gave on the command line. A given flag that ``config``
    lacks (another algorithm's setting) raises ValueError naming it."""
    names = {f.name for f in dataclasses.fields(config)}
    offered = getattr(args, _FIELDS_ATTR, frozenset(names))
    given = {k: v for k, v in vars(args).items() if k in offered}
    foreign = sorted(set(given) - names)
    if foreign:
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise ValueError(f"{flags}: not a setting of {config.__name__}")
    return given
