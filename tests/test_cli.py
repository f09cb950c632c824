from __future__ import annotations

import subprocess
import sys
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Literal

import pytest
import yaml

from tokunify.cli import COMMANDS, build_parser, main, parse_command
from tokunify.core.config import ConfigError


def dummy(tp):  # type: ignore[no-untyped-def]
    """A value of a (required) field's type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)[0]
    if origin in (list, tuple):
        return [dummy(typing.get_args(tp)[0])]
    return {str: "x", int: 3, float: 0.5, bool: True}.get(tp, "x")


def leaf_fields(cls, prefix=""):  # type: ignore[no-untyped-def]
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            yield from leaf_fields(hints[f.name], prefix + f.name + ".")
        else:
            yield prefix + f.name, f, hints[f.name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_builds_its_parser(name, tmp_path):
    cmd = COMMANDS[name]
    cls, run = cmd.load()
    assert callable(run) and cls.__doc__
    help_text = build_parser(name)._subparsers._group_actions[0].choices[name].format_help()
    flat = " ".join(help_text.split())
    assert cls.__doc__.split()[0] in help_text and "--config FILE" in flat
    leaves = list(leaf_fields(cls))
    with_default = [
        f for _, f, _ in leaves if f.default is not MISSING or f.default_factory is not MISSING
    ]
    assert flat.count("(default: ") >= len(with_default)  # every default is shown
    # The same command from a config file holding its required keys; options override it.
    data: dict = {}
    for key, f, tp in leaves:
        if f.default is MISSING and f.default_factory is MISSING:
            node = data
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = dummy(tp)
        elif not f.metadata.get("positional"):
            assert "--" + key.replace("_", "-") in help_text, key
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(data))
    got_name, args = parse_command([name, "--config", str(path)])
    assert got_name == name and isinstance(args, cls)
    for key, _, _ in leaves:
        if key in data:
            assert getattr(args, key) == data[key] or list(getattr(args, key)) == data[key]
    numeric = next(((k, tp) for k, f, tp in leaves if tp in (int, float) and "." not in k
                    and (f.default is not MISSING)), None)  # fmt: skip
    if numeric:
        key, tp = numeric
        _, args = parse_command([name, "--config", str(path), "--" + key.replace("_", "-"), "7"])
        assert getattr(args, key) == tp(7) and type(getattr(args, key)) is tp


def test_console_help_runs():
    res = subprocess.run(
        [sys.executable, "-m", "tokunify", "extend", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "scratch:llama-tiny" in res.stdout and "--codebook-size" in res.stdout


def test_values_as_users_type_them(tmp_path):
    """README forms: YAML-flow mappings and lists, and boolean words."""
    (tmp_path / "t.yaml").write_text("bundle: b\nout: o\ndata: {stores: [s]}\n")
    _, cfg = parse_command(
        ["train", str(tmp_path / "t.yaml"), "--data.mixture", "{asr: 0.5, tts: 0.5}",
         "--data.manifests", "[corpus/train.jsonl, b.jsonl]", "--progress", "false",
         "--optim.betas", "[0.8, 0.9]", "--cpu=yes", "--lora.enabled", "1"]
    )  # fmt: skip
    assert cfg.data.mixture == {"asr": 0.5, "tts": 0.5}
    assert cfg.data.manifests == ["corpus/train.jsonl", "b.jsonl"]
    assert (cfg.progress, cfg.cpu, cfg.lora.enabled) == (False, True, True)
    assert cfg.optim.betas == (0.8, 0.9)
    _, cfg = parse_command(["train", str(tmp_path / "t.yaml"), "--data.stores", "a", "b",
                            "--progress", "--resume", "no"])  # fmt: skip
    assert cfg.data.stores == ["a", "b"] and cfg.progress is True and cfg.resume is False
    _, args = parse_command(["tokenize", "m.jsonl", "--out", "s", "--tokenizer", "[a=x, b=y]",
                             "--progress", "0"])  # fmt: skip
    assert args.tokenizer == ["a=x", "b=y"] and args.progress is False
    with pytest.raises(ConfigError, match=r"--progress: expected true or false .*'maybe'"):
        parse_command(["train", "--progress=maybe"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tokenize", "m.jsonl", "--outt", "x"], "unknown option --outt (did you mean: --out"),
        (["train", "--data.mixtrue", "{asr: 1}"], "unknown option --data.mixtrue (did you mean: --data.mixture"),
        (["train", "--data.mixture", "[1, 2]"], "expected a mapping like '{asr: 0.5}'"),
    ],
)  # fmt: skip
def test_mistyped_options_print_usage_and_the_closest_names(argv, expected, capsys):
    from tokunify.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: tokunify {argv[0]}") and expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["generate", "tokenize", "serve", "chat"])
def test_a_bad_device_is_one_line_naming_the_field(command, tmp_path, capsys):
    """Any command's --device is checked before it runs: one line, exit 1, no torch traceback."""
    argv = {"generate": ["generate", str(tmp_path), "--task", "asr", "--input", "x.wav"],
            "tokenize": ["tokenize", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "s"),
                         "--tokenizer", "units=u.yaml"],
            "serve": ["serve", str(tmp_path)],
            "chat": ["chat", str(tmp_path)]}[command]  # fmt: skip
    assert main([*argv, "--device", "no-such-device"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tokunify {command}: error: device: 'no-such-device' is not a torch device (cpu, cuda, cuda:N, mps, ...)"]  # fmt: skip
