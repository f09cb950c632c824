"""Typed dataclass configs <-> command-line options and YAML/TOML files.

Attribute docstrings become ``--help`` text; nested dataclasses become dotted options
(``--train.lr 3e-4``); config files are data only. Hand-written (about a hundred lines) because
the libraries that do this (jsonargparse, tyro) are large dependencies for what we need.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import json
import textwrap
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal placed under each attribute."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", overrides: bool = False
) -> None:
    """Add one option per field of ``cls`` (recursing into nested dataclasses).

    With ``overrides``, every field is an optional ``--a.b`` whose absence leaves the value of a
    config file untouched (see :func:`apply_overrides`).
    """
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    for f in fields(cls):
        tp = _unwrap_optional(hints[f.name])
        dest = prefix + f.name
        if is_dataclass(tp):
            add_arguments(parser, tp, dest + ".", overrides)
            continue
        default = _default(f)
        kw: dict[str, Any] = {"help": docs.get(f.name, "")}
        origin = typing.get_origin(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            item = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kw.update(nargs="+" if f.metadata.get("positional") else "*", type=item)
            if not f.metadata.get("positional"):
                kw.update(action="extend", nargs="+")
        elif origin is dict:
            kw["type"] = json.loads  # --data.mixture '{"asr": 0.5, "tts": 0.5}'
        elif origin is Literal:
            kw["choices"] = list(typing.get_args(tp))
            kw["type"] = type(kw["choices"][0])
        else:
            kw["type"] = tp
        if overrides:
            if kw.get("action") == "extend":
                kw["action"], kw["nargs"] = "store", "+"
            parser.add_argument(
                "--" + dest.replace("_", "-"), dest=dest, default=argparse.SUPPRESS, **kw
            )
            continue
        if f.metadata.get("positional"):
            parser.add_argument(dest, metavar=f.name.upper(), **kw)
            continue
        if default is MISSING:
            kw["required"] = True
        else:
            kw["default"] = None if kw.get("action") == "extend" else default
            if default not in (None, [], ()) and not isinstance(default, bool):
                kw["help"] += f" (default: {default})"
        flag = "--" + dest.replace("_", "-")
        parser.add_argument(flag, dest=dest, **kw)


def from_flat(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from a flat ``{"a.b": value}`` dict (argparse's namespace)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        tp = _unwrap_optional(hints[f.name])
        key = prefix + f.name
        if is_dataclass(tp):
            kwargs[f.name] = from_flat(tp, values, key + ".")
        elif key in values and values[key] is not None:
            v = values[key]
            kwargs[f.name] = tuple(v) if typing.get_origin(tp) is tuple else v
    return cls(**kwargs)


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from nested data (a parsed YAML/TOML file). Unknown keys raise."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)} for {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        tp = _unwrap_optional(hints[f.name])
        v = data[f.name]
        if is_dataclass(tp) and isinstance(v, dict):
            v = from_dict(tp, v, f"{source}:{f.name}")
        elif typing.get_origin(tp) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def read_data_file(path: str | Path) -> dict[str, Any]:
    """A YAML, TOML or JSON file as a dict; a clear error names the file on failure."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise ConfigError(f"{p}: cannot parse: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``{"optim.lr": 0.1}``) into nested config data (a copy)."""
    out = json.loads(json.dumps(data))
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return out
