from __future__ import annotations

import subprocess
import sys

from tokunify.cli import COMMANDS, build_parser


def test_every_command_builds_its_parser():
    for name, cmd in COMMANDS.items():
        cls, run = cmd.load()
        assert callable(run) and cls.__doc__
        help_text = build_parser(name)._subparsers._group_actions[0].choices[name].format_help()
        assert cls.__doc__.split()[0] in help_text


def test_console_help_runs():
    res = subprocess.run(
        [sys.executable, "-m", "tokunify", "extend", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "scratch:llama-tiny" in res.stdout and "--codebook-size" in res.stdout
