"""Training: loss falls, resume == uninterrupted, atomic checkpoints, mismatch refusal, 2 processes."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import write_config
from safetensors.torch import load_file

import tokunify
from tokunify.cli import main
from tokunify.core.config import from_dict, read_data_file
from tokunify.data.store import StoreError
from tokunify.tokenizers.base import TOKENIZERS
from tokunify.train.config import TrainConfig
from tokunify.train.loop import run_train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def losses(run: Path) -> list[float]:
    return [
        r["loss"]
        for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
        if "loss" in r
    ]


def weights(bundle: Path) -> dict[str, torch.Tensor]:
    return load_file(str(bundle / "model.safetensors"))


def test_loss_falls_and_final_bundle_loads(train_bundle, train_store, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        train_bundle,
        train_store,
        tmp_path / "run",
        steps=40,
        save_every=0,
        eval_every=20,
        log_every=5,
    )
    assert main(["train", str(cfg), "--optim.lr", "0.005"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval/asr" in r]
    assert train[-1]["loss"] < 0.75 * train[0]["loss"]
    assert {"loss/asr", "loss/tts", "loss/s2s", "loss/interleave"} <= set(train[-1])
    assert len(evals) == 2 and evals[-1]["eval/tts"] < evals[0]["eval/tts"]
    b = tokunify.load(tmp_path / "run" / "final")
    assert b.spec.speech_tokenizers["units"]["hash"]
    assert (
        b.speech_tokenizer().cardinality == b.vocab.stream("units").size
    )  # centroids travelled along
    assert (
        tmp_path / "run" / "checkpoints" / "step-000040" / "bundle" / "model.safetensors"
    ).is_file()


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_equals_uninterrupted(train_bundle, train_store, tmp_path, grad_accum):
    ref = tmp_path / "ref"
    a = write_config(tmp_path / "a.yaml", train_bundle, train_store, ref, grad_accum=grad_accum)
    run_train(from_dict(TrainConfig, read_data_file(a)))
    run = tmp_path / "run"
    # Nobody ever reads this FIFO: the trainer writes checkpoint step-3 completely, then blocks
    # opening it, so it is killed right after that checkpoint and before anything later.
    fifo = tmp_path / "checkpoints.fifo"
    os.mkfifo(fifo)
    cfg = write_config(tmp_path / "b.yaml", train_bundle, train_store, run, grad_accum=grad_accum,
                       checkpoint_notify=str(fifo))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokunify", "train", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = run / "checkpoints" / "step-000003" / "trainer.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists() and proc.poll() is None  # blocked on the FIFO, not finished
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == ["step-000003"]
    assert not (run / "final").exists()
    assert (
        max(r["step"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())) == 3
    )
    out = run_train(from_dict(TrainConfig, {**read_data_file(cfg), "checkpoint_notify": ""}))
    assert out["resumed_from"] == str(run / "checkpoints" / "step-000003")
    assert [r["step"] for r in out["history"] if "loss" in r] == [4, 5, 6]  # not from step 0
    assert losses(run) == losses(ref)
    a, b = weights(ref / "final"), weights(run / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_is_atomic_under_failure(train_bundle, train_store, tmp_path, monkeypatch):
    import tokunify.train.checkpointing as checkpointing

    cfg = from_dict(
        TrainConfig,
        read_data_file(
            write_config(tmp_path / "c.yaml", train_bundle, train_store, tmp_path / "run")
        ),
    )
    real = checkpointing.write_bundle
    calls = {"n": 0}

    def failing(acc, model, bundle, path):  # the second checkpoint dies half-way through
        calls["n"] += 1
        if calls["n"] == 2:
            (path).mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{half")
            raise OSError("disk full")
        return real(acc, model, bundle, path)

    monkeypatch.setattr(checkpointing, "write_bundle", failing)
    with pytest.raises(OSError, match="disk full"):
        run_train(cfg)
    ckpts = sorted(
        p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if not p.name.startswith(".")
    )
    assert ckpts == ["step-000003"]
    assert (
        tokunify.load(tmp_path / "run" / "checkpoints" / "step-000003" / "bundle").model is not None
    )
    monkeypatch.setattr(checkpointing, "write_bundle", real)
    out = run_train(cfg)  # resumes from step 3, finishes
    assert out["steps"] == 6 and (tmp_path / "run" / "final" / "vocab.json").is_file()


def test_store_bundle_mismatch_is_refused(train_bundle, train_store, sp_dir, tmp_path):
    other = tmp_path / "other"
    assert (
        main(
            [
                "extend",
                "scratch:llama-tiny",
                "--text-tokenizer",
                str(sp_dir),
                "--units",
                "30",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    cfg = from_dict(
        TrainConfig,
        read_data_file(write_config(tmp_path / "c.yaml", other, train_store, tmp_path / "run")),
    )
    with pytest.raises(StoreError, match="tokenizers do not match"):
        run_train(cfg)
    # same sizes, different speech tokenizer: the recorded hashes differ
    spec = json.loads((train_bundle / "tokunify.json").read_text())
    forged = tmp_path / "forged"
    shutil.copytree(train_bundle, forged)
    spec["speech_tokenizers"]["units"]["hash"] = "0" * 16
    (forged / "tokunify.json").write_text(json.dumps(spec))
    cfg = from_dict(
        TrainConfig,
        read_data_file(write_config(tmp_path / "d.yaml", forged, train_store, tmp_path / "run2")),
    )
    with pytest.raises(StoreError, match="re-tokenize"):
        run_train(cfg)


def test_gradient_checkpointing_gives_the_same_losses(train_bundle, train_store, tmp_path):
    runs = []
    for gc in (False, True):
        cfg = write_config(
            tmp_path / f"c{gc}.yaml",
            train_bundle,
            train_store,
            tmp_path / f"run{gc}",
            steps=2,
            save_every=0,
            eval_every=0,
            gradient_checkpointing=gc,
        )
        run_train(from_dict(TrainConfig, read_data_file(cfg)))
        runs.append(losses(tmp_path / f"run{gc}"))
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def test_freezing_text_rows_and_body(train_bundle, train_store, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        train_bundle,
        train_store,
        tmp_path / "run",
        steps=3,
        save_every=0,
        eval_every=0,
        freeze="body+text_rows",
    )
    run_train(from_dict(TrainConfig, read_data_file(cfg)))
    before, after = weights(train_bundle), weights(tmp_path / "run" / "final")
    n = tokunify.UnifiedVocab.load(train_bundle).text_size
    emb = "model.embed_tokens.weight"
    assert torch.equal(before[emb][:n], after[emb][:n]) and not torch.equal(
        before[emb][n:], after[emb][n:]
    )
    body = [k for k in before if k != emb]
    assert body and all(torch.equal(before[k], after[k]) for k in body)


def test_every_shipped_config_validates():
    from accelerate.commands.config.config_args import ClusterConfig

    train = sorted((CONFIGS / "train").rglob("*.yaml"))
    tokenizers = sorted((CONFIGS / "tokenizers").rglob("*.yaml"))
    accel = sorted((CONFIGS / "accelerate").rglob("*.yaml"))
    ssl = list((CONFIGS / "ssl").rglob("*.yaml"))  # walked by tests/train/test_ssl.py
    ctc = list((CONFIGS / "ctc").rglob("*.yaml"))  # run by tests/train/test_ctc_encoder.py
    every = len(list(CONFIGS.rglob("*.yaml")))
    assert (
        train
        and tokenizers
        and accel
        and len(train) + len(tokenizers) + len(accel) + len(ssl) + len(ctc) == every
    )
    for f in accel:  # accelerate's own reader: unknown keys or a wrong type raise
        c = ClusterConfig.from_yaml_file(str(f))
        assert str(c.distributed_type).split(".")[-1] in ("FSDP", "DEEPSPEED"), f
    for f in train:
        from_dict(TrainConfig, read_data_file(f), source=str(f)).validate()
    for f in tokenizers:
        assert read_data_file(f)["kind"] in TOKENIZERS, f  # built: tests/tokenizers/test_configs.py
    with pytest.raises(ValueError, match="unknown tasks"):
        from_dict(
            TrainConfig,
            {"bundle": "b", "out": "o", "data": {"stores": ["s"], "mixture": {"sing": 1.0}}},
        ).validate()
    with pytest.raises(
        ValueError, match=r"data.instruction_word_dropout must be in \[0, 1\), got 1.0"
    ):
        from_dict(
            TrainConfig,
            {"bundle": "b", "out": "o", "data": {"stores": ["s"], "instruction_word_dropout": 1.0}},
        ).validate()


def test_lora_run_writes_merged_plain_bundle(train_bundle, train_store, tmp_path):
    pytest.importorskip("peft")
    cfg = write_config(
        tmp_path / "c.yaml",
        train_bundle,
        train_store,
        tmp_path / "run",
        steps=3,
        save_every=0,
        eval_every=0,
    )
    data = read_data_file(cfg)
    data["lora"] = {"enabled": True, "r": 4}
    run_train(from_dict(TrainConfig, data))
    after = weights(tmp_path / "run" / "final")
    assert not any("lora" in k for k in after)  # merged: plain transformers weights
    before = weights(train_bundle)
    assert any(not torch.equal(before[k], after[k]) for k in before if "q_proj" in k)


def test_lora_keeps_frozen_text_rows(train_bundle, train_store, tmp_path):
    """peft trains a copy of the embeddings (modules_to_save): the text-row hook must be on it."""
    pytest.importorskip("peft")
    cfg = write_config(
        tmp_path / "c.yaml", train_bundle, train_store, tmp_path / "run",
        steps=3, save_every=0, eval_every=0, freeze="text_rows",
        **{"optim.lr": 0.05},
    )  # fmt: skip
    data = read_data_file(cfg)
    data["lora"] = {"enabled": True, "r": 4}
    run_train(from_dict(TrainConfig, data))
    before, after = weights(train_bundle), weights(tmp_path / "run" / "final")
    n = tokunify.UnifiedVocab.load(train_bundle).text_size
    emb = "model.embed_tokens.weight"
    assert torch.equal(before[emb][:n], after[emb][:n])  # text rows fixed
    assert not torch.equal(before[emb][n:], after[emb][n:])  # new rows trained
    assert any(not torch.equal(before[k], after[k]) for k in before if "q_proj" in k)


def test_long_documents_policy_is_counted_and_progress_is_printed(
    train_bundle, train_store, tmp_path, capsys
):
    policy = "split"  # the default; every policy is checked on the packer in test_packing.py
    cfg = write_config(
        tmp_path / "c.yaml", train_bundle, train_store, tmp_path / "run",
        steps=3, save_every=0, eval_every=0, log_every=1,
        **{"data.seq_len": 24, "data.long_documents": policy},
    )  # fmt: skip
    out = run_train(from_dict(TrainConfig, read_data_file(cfg)))
    rows = [r for r in out["history"] if "loss" in r]
    key = f"long_documents_{policy}"
    assert len(rows) == 3 and all(r[key] > 0 for r in rows)  # the store's docs exceed 24 tokens
    assert rows[-1][key] >= rows[0][key]
    printed = [line for line in capsys.readouterr().out.splitlines() if "step " in line]
    assert len(printed) == 3
    assert all(
        re.search(r"step \d/3 loss [\d.]+ lr \S+ tokens/s \d+ eta \d+m\d\ds", x) for x in printed
    )


def test_schedule_decays_over_whichever_runs_out_first():
    """Schedule: warmup by steps; then the cosine follows the larger of step progress and the time
    the next step is expected to end at; its training time is part of LambdaLR's state_dict (what
    checkpoints save) and survives a resume that re-reads the config."""
    from tokunify.train.setup import Schedule

    base = {"bundle": "b", "out": "o", "data": {"stores": ["s"]}, "steps": 100, "budget_minutes": 1.0,
            "optim": {"warmup_steps": 10, "min_lr_ratio": 0.1}}  # fmt: skip
    cfg = from_dict(TrainConfig, base)
    s = Schedule(cfg)
    assert s(4) == pytest.approx(0.5) and s.warmup_end_s is None
    s.tick(6.0, 10, 0.6)  # warmup over after 6 s: 54 s left for 90 steps
    s.tick(32.0, 20, 1.0)  # the next step ends at 33 s: half the time left, a ninth of the steps
    assert s.progress(20) == pytest.approx(0.5) and s(20) == pytest.approx(0.1 + 0.9 * 0.5)
    assert not s.out_of_time
    s.tick(20.0, 60, 0.3)  # a fast run: the steps lead
    assert s.progress(60) == pytest.approx(50 / 90)
    s.tick(59.5, 61, 1.0)  # the next step would end at 60.5 s, past the budget
    assert s.out_of_time and s(61) == pytest.approx(0.1)
    steps_only = Schedule(from_dict(TrainConfig, {**base, "budget_minutes": 0.0}))
    steps_only.tick(1e9, 20, 1.0)
    assert steps_only.progress(20) == pytest.approx(10 / 90) and not steps_only.out_of_time

    p = torch.nn.Parameter(torch.zeros(1))
    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([p], lr=1.0), s)
    state = sched.state_dict()
    longer = from_dict(TrainConfig, {**base, "budget_minutes": 2.0})
    fresh = Schedule(longer)
    torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([p], lr=1.0), fresh).load_state_dict(state)
    assert (fresh.elapsed_s, fresh.warmup_end_s, fresh.budget_s) == (59.5, 6.0, 60.0)
    fresh.configure(longer)
    assert (fresh.elapsed_s, fresh.budget_s) == (59.5, 120.0) and not fresh.out_of_time


@pytest.mark.parametrize("limit", ["budget_minutes", "max_minutes"])
def test_time_limits_stop_the_run_and_only_the_budget_decays_the_lr(
    limit, train_bundle, train_store, tmp_path
):
    """budget_minutes ends a run with far too many steps inside the budget, each step's LR the
    cosine at the time it was expected to end (so the last one is near the floor); max_minutes
    stops after its time with the LR the step schedule had reached (the peak)."""
    peak, floor, budget, warmup = 0.004, 0.1, 3.0, 2
    cfg = write_config(
        tmp_path / "c.yaml", train_bundle, train_store, tmp_path / "run",
        steps=100_000, save_every=0, eval_every=0, log_every=1,
        **{limit: budget / 60, "optim.warmup_steps": warmup, "optim.min_lr_ratio": floor},
    )  # fmt: skip
    assert main(["train", str(cfg), "--optim.lr", str(peak)]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    (stop,) = [r for r in log if "stopped" in r]
    rows = [r for r in log if "lr" in r]
    assert stop["stopped"] == limit and 2 < stop["step"] == len(rows) < 100_000
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    if limit == "max_minutes":
        assert stop["train_seconds"] > budget and rows[-1]["lr"] == pytest.approx(peak, rel=1e-3)
        return
    # the last step was started because its expected end was within the budget; the next one's
    # would have crossed it (the clock, not a step count, ended the run)
    n = len(rows)
    assert rows[n - 2]["train_seconds"] * (1 + 1 / (n - 1)) <= budget
    assert stop["train_seconds"] + stop["step_seconds"] > budget
    t0 = rows[warmup - 1]["train_seconds"]  # the end of warmup
    for k in range(warmup, len(rows)):  # rows[k] is step k + 1; rows[k - 1] was logged before it
        t = rows[k - 1]["train_seconds"] * (1 + 1 / k)  # + the mean step after k steps
        want = floor + (1 - floor) * 0.5 * (
            1 + math.cos(math.pi * min(1, (t - t0) / (budget - t0)))
        )
        assert rows[k]["lr"] == pytest.approx(peak * want, rel=1e-6), k
    ckpt = next((tmp_path / "run" / "checkpoints").glob("step-*"))
    state = torch.load(ckpt / "state" / "custom_checkpoint_0.pkl", weights_only=False)
    assert state["lr_lambdas"][0]["elapsed_s"] == pytest.approx(stop["train_seconds"])
