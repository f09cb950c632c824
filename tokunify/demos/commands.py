"""``tokunify demo``: the default demo, or with ``--instruct`` the instruct demo."""

from __future__ import annotations

from typing import Any

from tokunify.demos.common import DemoArgs
from tokunify.demos.default import run_default_demo
from tokunify.demos.instruct import run_instruct_demo

__all__ = ["DemoArgs", "run_demo"]


def run_demo(args: DemoArgs) -> dict[str, Any]:
    return run_instruct_demo(args) if args.instruct else run_default_demo(args)
