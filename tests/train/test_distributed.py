"""Two CPU processes (gloo): the schedule and DDP replicas match one process; an FSDP config is refused on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_config
from safetensors.torch import load_file

from tokunify.core.config import from_dict, read_data_file
from tokunify.train.config import TrainConfig
from tokunify.train.loop import run_train
from tokunify.train.setup import check_sharding, reset_single_process_accelerator

ACCELERATE = Path(sys.executable).with_name("accelerate")
ACCEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
STEPS, WARMUP = 8, 4

pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI missing")


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def lrs(run: Path) -> list[float]:
    return [r["lr"] for r in rows(run) if "lr" in r]


def launch(cfg: Path, *accelerate_args: str) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", *accelerate_args, "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tokunify", "train", str(cfg)]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


def config(tmp_path: Path, name: str, bundle: Path, store: Path, **over) -> Path:
    settings = {"steps": STEPS, "save_every": 4, "eval_every": 0, "optim.warmup_steps": WARMUP}
    return write_config(
        tmp_path / f"{name}.yaml", bundle, store, tmp_path / name, **{**settings, **over}
    )


def test_two_process_run_keeps_the_schedule_and_identical_replicas(
    train_bundle, train_store, tmp_path
):
    cfg = config(tmp_path, "ddp", train_bundle, train_store, weight_digests=True)
    res = launch(cfg, "--multi_gpu")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "ddp"
    start = rows(run)[0]
    assert start["world_size"] == 2 and start["attention"] == "per_document"
    # The LR at every optimizer step equals the one-process run's (accelerate's scheduler wrapper
    # used to step it twice per step here: warmup over at step 2, the cosine floor from step 4).
    one = run_train(
        from_dict(TrainConfig, read_data_file(config(tmp_path, "one", train_bundle, train_store)))
    )
    assert one["world_size"] == 1
    assert len(lrs(run)) == STEPS and lrs(run) == pytest.approx(lrs(tmp_path / "one"), rel=1e-12)
    assert max(lrs(run)) == pytest.approx(0.003) and lrs(run).index(max(lrs(run))) == WARMUP - 1
    for step in (4, 8):
        meta = json.loads((run / "checkpoints" / f"step-{step:06d}" / "trainer.json").read_text())
        assert meta["world_size"] == 2 and len(meta["data"]) == 2
        # DDP's all-reduce keeps both replicas bit-identical although they saw different data
        a, b = meta["weight_digests"]
        assert a == b
        pools = [[d["ids"] for d in s["pending"]["pool"]] for s in meta["data"]]
        assert pools[0] != pools[1]
    final = load_file(str(run / "final" / "model.safetensors"))
    init = load_file(str(train_bundle / "model.safetensors"))
    assert any(not torch.equal(final[k], init[k]) for k in init)


def test_two_processes_stop_together_on_the_time_budget(train_bundle, train_store, tmp_path):
    """budget_minutes on 2 processes: the LR follows the slowest process's clock, so both stop at
    the same step with identical replicas (different LRs would give different weights)."""
    cfg = config(tmp_path, "budget", train_bundle, train_store, steps=100_000, save_every=0,
                 budget_minutes=0.05, weight_digests=True)  # fmt: skip
    res = launch(cfg, "--multi_gpu")
    assert res.returncode == 0, res.stderr[-3000:]
    (stop,) = [r for r in rows(tmp_path / "budget") if "stopped" in r]
    assert stop["stopped"] == "budget_minutes"
    assert stop["train_seconds"] + stop["step_seconds"] > 3.0
    ckpt = tmp_path / "budget" / "checkpoints" / f"step-{stop['step']:06d}"
    a, b = json.loads((ckpt / "trainer.json").read_text())["weight_digests"]
    assert a == b
    assert lrs(tmp_path / "budget")[-1] < 0.003  # decayed from the peak by the clock


def test_gradient_accumulation_keeps_the_schedule(train_bundle, train_store, tmp_path):
    ref = run_train(
        from_dict(TrainConfig, read_data_file(config(tmp_path, "a", train_bundle, train_store)))
    )
    acc = run_train(
        from_dict(
            TrainConfig,
            read_data_file(config(tmp_path, "b", train_bundle, train_store, grad_accum=3)),
        )
    )
    assert ref["last_step"] == acc["last_step"] == STEPS
    assert lrs(tmp_path / "b") == pytest.approx(lrs(tmp_path / "a"), rel=1e-12)


def test_fsdp_config_on_cpu_is_refused_not_silently_unsharded(train_bundle, train_store, tmp_path):
    # accelerate engages FSDP only on GPU-family devices; on CPU it would run plain data parallelism
    # with the whole model on every process. `train` stops with one line instead of training that.
    cfg = config(tmp_path, "fsdp", train_bundle, train_store, steps=4, save_every=2)
    res = launch(cfg, "--config_file", str(ACCEL_CONFIGS / "fsdp.yaml"))
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("tokunify train: error:")]
    # One line per process that got that far: the launcher stops the other rank as soon as the
    # first one exits, so a slow rank may be stopped before it prints. What follows is the
    # launcher's own report.
    assert 1 <= len(errors) <= 2
    assert all("asks for FSDP (ACCELERATE_USE_FSDP=true)" in e for e in errors)
    assert all("set up MULTI_CPU on cpu" in e for e in errors)
    assert "tokunify/train/" not in res.stderr  # no traceback through our code
    assert not (tmp_path / "fsdp" / "checkpoints").exists()


@pytest.mark.parametrize("var", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_check_sharding_names_what_was_asked_and_what_runs(var):
    from accelerate import Accelerator

    reset_single_process_accelerator()
    acc = Accelerator(cpu=True)
    check_sharding(acc, {})  # nothing asked: fine
    check_sharding(acc, {var: "false"})
    with pytest.raises(ValueError, match=rf"asks for \w+ \({var}=true\).*set up NO on cpu"):
        check_sharding(acc, {var: "true"})
