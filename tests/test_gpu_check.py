"""scripts/gpu_check.sh: the CUDA check as a user runs it, here on the CPU (its hidden --device cpu)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
CUDA_ONLY = {"train-bf16-flash-varlen", "train-fsdp-1proc"}  # skipped on the CPU, with a reason
LINE = re.compile(r"^(?:ok  (?P<ok>\S+) +\S.*|skip  (?P<skip>\S+) +\(.+\))$")
SUMMARY = re.compile(r"^gpu_check: (\d+) ok, (\d+) skipped, 0 failed in \d+ s on cpu")


def load_script():  # type: ignore[no-untyped-def]
    """scripts/gpu_check.py as a module (scripts/ is no package), imported once."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "gpu_check", ROOT / "scripts" / "gpu_check.py"
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = mod  # before exec: its dataclasses look their module up
        spec.loader.exec_module(mod)
    return sys.modules["gpu_check"]


def run_script(
    *args: str, hide_cuda: bool = False, timeout: int = 120
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    if hide_cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_without_cuda_it_says_so_and_runs_nothing():
    res = run_script(hide_cuda=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines() == [load_script().NEEDS_CUDA]


def test_a_failing_path_prints_one_failed_line_and_exits_1(capsys):
    gpu_check = load_script()
    assert gpu_check.main(["--device", "no-such-device", "--only", "tokenize-mimi"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("FAILED tokenize-mimi: ")
    assert "no-such-device" in out[0] and "\n" not in out[0]
    assert out[1].startswith("gpu_check: 0 ok, 0 skipped, 1 failed")


def test_a_failed_shared_input_fails_its_dependents_with_its_message(tmp_path):
    gpu_check = load_script()
    with open(tmp_path / "log", "w") as log:
        c = gpu_check.Check(tmp_path, "cpu", log)
        # the corpus's directory is a file: synth-corpus fails, once, for both paths that need it
        (tmp_path / "corpus").write_text("")
        a = gpu_check.run_path(c, "tokenize-mimi", gpu_check.PATHS["tokenize-mimi"])
        b = gpu_check.run_path(c, "tokenize-dac", gpu_check.PATHS["tokenize-dac"])
    assert a.status == b.status == "FAILED" and a.detail == b.detail
    assert list(c.failed) == ["corpus"] and not c.built
    assert a.line() == f"FAILED tokenize-mimi: {a.detail}"


@pytest.mark.slow  # every path on the CPU: ~4 minutes on a loaded 2-core VM
def test_every_path_runs_on_the_cpu(tmp_path):
    res = run_script("--device", "cpu", "--keep", str(tmp_path / "run"), timeout=1200)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    *paths, summary = lines
    names = []
    for line in paths:
        m = LINE.match(line)
        assert m, line
        names.append(m["ok"] or m["skip"])
        assert (m["skip"] is not None) == (names[-1] in CUDA_ONLY), line
    assert names == list(load_script().PATHS)
    m = SUMMARY.match(summary)
    assert m and (int(m[1]), int(m[2])) == (len(names) - len(CUDA_ONLY), len(CUDA_ONLY)), summary
    assert (tmp_path / "run" / "train_sdpa" / "final" / "model.safetensors").is_file()
