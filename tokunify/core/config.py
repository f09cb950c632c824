"""Typed dataclass configs <-> command-line options and YAML/TOML files.

Attribute docstrings become ``--help`` text; nested dataclasses become dotted options
(``--train.lr 3e-4``); config files are data only, checked against the dataclass types: a YAML
``1e-3`` (a string to PyYAML) becomes the float the field declares, and a wrong type, an unknown
key or a value outside a ``Literal`` is one :class:`ConfigError` line naming the file, the dotted
key and what is allowed.

Kept hand-written rather than jsonargparse (installed, and the usual choice): jsonargparse reads
attribute docstrings only through the optional docstring-parser, changes its error wording and
its positional/config interplay between releases, and its errors are multi-line usage dumps; the
one-line ``file: key: reason (allowed: ...)`` contract of the CLI and the positional arguments
of the existing commands are ~150 lines here, tested in tests/core/test_config.py.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import itertools
import json
import textwrap
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}  # fmt: skip


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


def parse_bool(value: Any, where: str = "value") -> bool:
    """``true/false/yes/no/on/off/1/0`` (any case) or a bool; :class:`ConfigError` otherwise."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word in BOOL_WORDS:
        return BOOL_WORDS[word]
    raise ConfigError(f"{where}: expected true or false (or yes/no, 1/0), got {value!r}")


def yaml_flow(text: str) -> Any:
    """A command-line value as YAML flow: ``{asr: 0.5}``, ``[a.jsonl, b.jsonl]`` (JSON is YAML)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise argparse.ArgumentTypeError(f"cannot parse {text!r} as YAML: {first}") from e


def yaml_mapping(text: str) -> dict[str, Any]:
    """argparse type of a ``dict`` field: ``'{asr: 0.5, tts: 0.5}'`` (YAML flow or JSON)."""
    value = yaml_flow(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping like '{{asr: 0.5}}', got {text!r}")
    return value


class ListAction(argparse.Action):
    """A list option: ``--x a b``, or one YAML flow list ``--x '[a, b]'``; items typed by field.

    ``extend`` (plain commands): repeated options add up; else (overrides) the last one wins.
    """

    def __init__(self, *args: Any, item: Any = str, extend: bool = False, **kw: Any) -> None:
        self.item, self.extend = item, extend
        super().__init__(*args, **kw)

    def __call__(self, parser: Any, ns: Any, values: Any, option: str | None = None) -> None:
        where = option or self.dest
        items: list[Any] = []
        for v in values if isinstance(values, list) else [values]:
            text = v.strip() if isinstance(v, str) else v
            if isinstance(text, str) and text.startswith("[") and text.endswith("]"):
                parsed = yaml_flow(text)
                items.extend(parsed if isinstance(parsed, list) else [parsed])
            else:
                items.append(v)
        try:
            typed = [coerce(self.item, x, f"{where}[{i}]") for i, x in enumerate(items)]
        except ConfigError as e:
            parser.error(str(e))
        old = getattr(ns, self.dest, None)
        keep = list(old) if self.extend and isinstance(old, list) else []
        setattr(ns, self.dest, keep + typed)


def bool_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{"--progress": "--no-progress", ...}`` of a parser's boolean options."""
    out = {}
    for a in parser._actions:
        if isinstance(a, argparse.BooleanOptionalAction):
            for opt in a.option_strings:
                if not opt.startswith("--no-"):
                    out[opt] = "--no-" + opt[2:]
    return out


def bool_words_to_flags(argv: list[str], flags: dict[str, str]) -> list[str]:
    """``--progress false`` / ``--progress=no`` -> ``--no-progress`` (argparse's spelling)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if name in flags and eq:
            out.append(name if parse_bool(value, name) else flags[name])
        elif a in flags and i + 1 < len(argv) and argv[i + 1].lower() in BOOL_WORDS:
            out.append(a if BOOL_WORDS[argv[i + 1].lower()] else flags[a])
            i += 1
        else:
            out.append(a)
        i += 1
    return out


def closest_options(parser: argparse.ArgumentParser, wrong: str, n: int = 3) -> list[str]:
    """The valid option names closest to a mistyped one (difflib)."""
    names = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    key = wrong.partition("=")[0]
    return difflib.get_close_matches(key, names, n=n, cutoff=0.5)


def _flags(dest: str) -> list[str]:
    """``--a.b-c`` and, as an alias, the field's own spelling ``--a.b_c``."""
    dashed = "--" + dest.replace("_", "-")
    return [dashed] if "_" not in dest else [dashed, "--" + dest]


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
            if f.metadata.get("positional"):
                kw.update(nargs="+", type=item)
            else:  # --x a b, or --x '[a, b]'
                kw.update(action=ListAction, nargs="+", item=item, extend=not overrides)
        elif origin is dict:
            kw["type"] = yaml_mapping  # --data.mixture '{asr: 0.5, tts: 0.5}' (or JSON)
        elif origin is Literal:
            kw["choices"] = list(typing.get_args(tp))
            kw["type"] = type(kw["choices"][0])
        else:
            kw["type"] = tp
        if default is not MISSING:
            shown = "none" if default is None else default
            kw["help"] += f" (default: {shown})".replace("%", "%%")
        positional = bool(f.metadata.get("positional"))
        if overrides:  # absent options leave the config file's value untouched
            if positional:
                kw["nargs"] = "?" if kw.get("nargs") is None else "*"
                parser.add_argument(dest, metavar=f.name.upper(), default=argparse.SUPPRESS, **kw)
                continue
            parser.add_argument(*_flags(dest), dest=dest, default=argparse.SUPPRESS, **kw)
            continue
        if positional:
            parser.add_argument(dest, metavar=f.name.upper(), **kw)
            continue
        if default is MISSING:
            kw["required"] = True
        else:
            kw["default"] = None if kw.get("action") is ListAction else default
        parser.add_argument(*_flags(dest), dest=dest, **kw)


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


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` as the declared type ``tp``; :class:`ConfigError` naming ``where`` otherwise.

    Numbers may come as strings (PyYAML reads ``1e-3`` as one); a bool is never a number.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{where}: expected {_type_name(tp)}")
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        allowed = ", ".join(str(a) for a in args)
        raise ConfigError(f"{where}: {value!r} is not allowed (allowed: {allowed})")
    if is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {
            coerce(kt, k, f"{where}.{k}"): coerce(vt, v, f"{where}.{k}") for k, v in value.items()
        }
    if tp is Any or not isinstance(tp, type):
        return value
    if tp is bool:
        if isinstance(value, int) and not isinstance(value, bool) and value not in (0, 1):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return parse_bool(value, where)
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a path or name that YAML read as a number
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from nested data (a parsed YAML/TOML file), checked and coerced by type.

    ``source`` prefixes every error: ``"run.yaml: optim.lr"``. Unknown keys, wrong types, values
    outside a ``Literal`` and missing required keys raise :class:`ConfigError`.
    """
    hints = typing.get_type_hints(cls)
    fs = {f.name: f for f in fields(cls)}
    file, _, prefix = source.partition(": ")
    dotted = (prefix + ".") if prefix else ""
    unknown = [k for k in data if k not in fs]
    if unknown:
        raise ConfigError(f"{file}: unknown key {dotted}{unknown[0]} (allowed: {', '.join(fs)})")
    kwargs: dict[str, Any] = {}
    for name, f in fs.items():
        if name not in data:
            if _default(f) is MISSING:
                raise ConfigError(f"{file}: missing required key {dotted}{name}")
            continue
        kwargs[name] = coerce(hints[name], data[name], f"{file}: {dotted}{name}")
    return cls(**kwargs)


def read_data_file(path: str | Path) -> dict[str, Any]:
    """A YAML, TOML or JSON file as a dict; a clear error names the file on failure."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
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
