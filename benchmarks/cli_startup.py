"""Start-up time of the CLI: ``tokunify --help`` (the console entry point, :func:`tokunify.cli.main`)
and ``tokunify SUBCOMMAND --help`` for a few subcommands, beside the interpreter alone and
``import torch`` (the floor of any command that touches a model). Goal: ``tokunify --help`` < 3 s.

    python benchmarks/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "import torch (baseline)": [sys.executable, "-c", "import torch"],
    "tokunify --help": [sys.executable, "-m", "tokunify", "--help"],
    "tokunify train --help": [sys.executable, "-m", "tokunify", "train", "--help"],
    "tokunify serve --help": [sys.executable, "-m", "tokunify", "serve", "--help"],
    "tokunify demo --help": [sys.executable, "-m", "tokunify", "demo", "--help"],
}


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"| command | median s ({args.runs} runs) | min s |\n|---|---:|---:|")
    for name, cmd in CASES.items():
        wall(cmd)  # warm the page cache
        ts = [wall(cmd) for _ in range(args.runs)]
        print(f"| `{name}` | {statistics.median(ts):.2f} | {min(ts):.2f} |")


if __name__ == "__main__":
    main()
