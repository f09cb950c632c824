from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from tokunify.core.config import (
    ConfigError,
    add_arguments,
    attribute_docs,
    from_dict,
    from_flat,
    read_data_file,
)


@dataclass
class Optim:
    lr: float = 3e-4
    """Peak learning rate."""
    betas: tuple[float, ...] = (0.9, 0.95)


@dataclass
class Cfg:
    data: str = field(metadata={"positional": True})
    """Where the data is."""
    steps: int = 10
    """Optimizer steps."""
    tasks: list[str] = field(default_factory=list)
    compile: bool = False
    optim: Optim = field(default_factory=Optim)


def test_attribute_docs():
    assert attribute_docs(Cfg)["steps"] == "Optimizer steps."
    assert attribute_docs(Optim)["lr"] == "Peak learning rate."


def test_cli_round_trip_with_dotted_overrides():
    p = argparse.ArgumentParser()
    add_arguments(p, Cfg)
    assert "Optimizer steps." in p.format_help()
    ns = p.parse_args(
        ["d", "--steps", "5", "--optim.lr", "0.1", "--tasks", "asr", "tts", "--compile"]
    )
    cfg = from_flat(Cfg, vars(ns))
    assert cfg == Cfg(data="d", steps=5, tasks=["asr", "tts"], compile=True, optim=Optim(lr=0.1))
    assert from_flat(Cfg, vars(p.parse_args(["d"]))) == Cfg(data="d")


def test_from_dict_and_files(tmp_path):
    (tmp_path / "c.yaml").write_text("data: x\noptim:\n  lr: 0.5\n  betas: [0.8, 0.9]\n")
    cfg = from_dict(Cfg, read_data_file(tmp_path / "c.yaml"))
    assert cfg.optim == Optim(lr=0.5, betas=(0.8, 0.9))
    (tmp_path / "c.toml").write_text('data = "y"\nsteps = 3\n')
    assert from_dict(Cfg, read_data_file(tmp_path / "c.toml")).steps == 3
    with pytest.raises(ConfigError, match="unknown key stpes"):
        from_dict(Cfg, {"data": "x", "stpes": 3})
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        read_data_file(tmp_path / "bad.yaml")


TRAIN_YAML = """bundle: b
out: o
data: {stores: [s]}
optim: {lr: 1e-3, betas: [0.9, 0.99]}
"""


def test_yaml_exponent_is_a_float_and_types_are_checked(tmp_path):
    from tokunify.train.config import TrainConfig

    (tmp_path / "t.yaml").write_text(TRAIN_YAML)
    cfg = from_dict(TrainConfig, read_data_file(tmp_path / "t.yaml"))
    assert cfg.optim.lr == 1e-3 and type(cfg.optim.lr) is float  # PyYAML alone gives "1e-3"
    assert cfg.optim.betas == (0.9, 0.99)
    bad = {"bundle": "b", "out": "o", "steps": "many"}
    with pytest.raises(ConfigError, match=r"^run.yaml: steps: expected int, got 'many'$"):
        from_dict(TrainConfig, bad, source="run.yaml")
    with pytest.raises(ConfigError, match=r"^run.yaml: data.seq_len: expected int, got True$"):
        from_dict(TrainConfig, {"data": {"seq_len": True}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"unknown key optim.lrr \(allowed: lr, weight_decay"):
        from_dict(TrainConfig, {"optim": {"lrr": 1}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"data.stores\[1\]: expected a string"):
        from_dict(TrainConfig, {"data": {"stores": ["a", None]}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"data.mixture.asr: expected float"):
        from_dict(TrainConfig, {"data": {"mixture": {"asr": "lots"}}}, source="run.yaml")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("freeze: text-rows", "freeze: 'text-rows' is not allowed (allowed: none, text_rows, body, body+text_rows)"),
        ("optim: {lr: fast}", "optim.lr: expected float, got 'fast'"),
        ("stepz: 3", "unknown key stepz (allowed: bundle, out, data, optim"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, capsys, line, expected):
    from tokunify.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(TRAIN_YAML.replace("optim: {lr: 1e-3, betas: [0.9, 0.99]}\n", "") + line + "\n")
    for argv in (["train", str(path)], ["train", "--config", str(path)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"tokunify train: error: {path}: ") and expected in err


def test_overrides_are_typed_and_defaults_shown(tmp_path):
    from tokunify.cli import build_parser, parse_command

    (tmp_path / "t.yaml").write_text(TRAIN_YAML)
    _, cfg = parse_command(
        ["train", "--config", str(tmp_path / "t.yaml"), "--optim.lr", "2e-4", "--no-progress",
         "--data.long_documents", "drop", "--steps", "9"]
    )  # fmt: skip
    assert (cfg.optim.lr, cfg.progress, cfg.data.long_documents, cfg.steps) == (
        2e-4,
        False,
        "drop",
        9,
    )
    assert cfg.bundle == "b" and cfg.data.stores == ["s"]  # the file's values stay
    help_text = " ".join(
        build_parser("train")._subparsers._group_actions[0].choices["train"].format_help().split()
    )
    assert "(default: 0.0003)" in help_text and "(default: True)" in help_text
    assert "(default: split)" in help_text
