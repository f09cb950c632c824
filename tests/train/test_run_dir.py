"""No dead ends in `train`: unusable stores refused at start-up, the data watchdog, the run
directory's config check, and one process per --out (an exclusive lock)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_config

from tokunify.core.config import from_dict, read_data_file
from tokunify.core.fsio import LockedError, exclusive_lock
from tokunify.data.store import StoreError, StoreMeta, TokenStore, write_chunk
from tokunify.train import data as train_data
from tokunify.train.config import TrainConfig
from tokunify.train.loop import LOCK_FILE, run_train
from tokunify.train.setup import config_changes, field_defaults

TRAIN = [sys.executable, "-m", "tokunify", "train"]


def copy_store(src: Path, dst: Path, records: list) -> Path:
    """A real store with ``src``'s tokenizers holding ``records`` (one chunk)."""
    meta = dataclasses.replace(
        StoreMeta.load(src), manifest_rows=max(len(records), 1), chunk_size=max(len(records), 1)
    )
    dst.mkdir(parents=True)
    meta.save(dst)
    write_chunk(dst, meta, 0, records, [])
    return dst


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd="/")


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one error line (progress bars of weight loading may come before it)."""
    assert "Traceback" not in res.stderr
    err = [x for x in res.stderr.strip().splitlines() if x.startswith("tokunify train: error:")]
    assert len(err) == 1 and res.stderr.strip().endswith(err[0]), res.stderr
    return err[0]


def test_empty_store_exits_non_zero_at_once(train_bundle, train_store, tmp_path):
    empty = copy_store(train_store, tmp_path / "empty", [])
    assert len(TokenStore(empty)) == 0
    cfg = write_config(tmp_path / "c.yaml", train_bundle, empty, tmp_path / "run")
    res = run_cli([*TRAIN, str(cfg)])  # the timeout is the guard against a spinning loop
    assert res.returncode == 1, res.stderr
    err = error_line(res)
    assert str(empty) in err and "no records" in err


def test_store_without_text_is_refused_naming_the_task(train_bundle, train_store, tmp_path):
    recs = [
        dataclasses.replace(r, text=None, text_ids=None, words=None)
        for r in TokenStore(train_store).iterate(shuffle=False)
    ]
    speech_only = copy_store(train_store, tmp_path / "speech_only", recs)
    cfg = write_config(tmp_path / "c.yaml", train_bundle, speech_only, tmp_path / "run")
    res = run_cli([*TRAIN, str(cfg), "--data.mixture", "{continue: 0.5, asr: 0.5}"])
    assert res.returncode == 1, res.stderr
    err = error_line(res)
    assert str(speech_only) in err and "task 'asr'" in err


def test_watchdog_turns_a_draw_without_documents_into_an_error(
    train_bundle, train_store, tmp_path, monkeypatch
):
    """Every document longer than seq_len, and long_documents: drop: nothing is ever trainable."""
    monkeypatch.setattr(train_data, "WATCHDOG_DRAWS", 50)
    cfg = write_config(tmp_path / "c.yaml", train_bundle, train_store, tmp_path / "run",
                       **{"data.seq_len": 8, "data.long_documents": "drop"})  # fmt: skip
    with pytest.raises(StoreError, match=r"no trainable document in 50 draws .*data.seq_len=8"):
        run_train(from_dict(TrainConfig, read_data_file(cfg)))


def test_a_changed_config_is_refused_naming_the_keys(train_bundle, train_store, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", train_bundle, train_store, run, steps=3)
    assert run_cli([*TRAIN, str(cfg)]).returncode == 0
    log_before = (run / "log.jsonl").read_text()
    res = run_cli([*TRAIN, str(cfg), "--optim.lr", "0.01", "--steps", "5"])
    assert res.returncode == 1
    err = error_line(res)
    assert "optim.lr (0.003 -> 0.01)" in err
    assert "steps" not in err.split(" in ", 1)[1].split(";")[0]  # steps may change on resume
    assert "--resume" in err and "--overwrite" in err
    assert (run / "log.jsonl").read_text() == log_before  # nothing touched
    # steps (and the other RESUMABLE_KEYS) may change: the run goes on from its checkpoint.
    out = run_train(from_dict(TrainConfig, {**read_data_file(cfg), "steps": 5}))
    assert out["resumed_from"].endswith("step-000003")
    assert [r["step"] for r in out["history"] if "loss" in r] == [4, 5]
    # --resume accepts the change; --overwrite starts afresh.
    res = run_cli([*TRAIN, str(cfg), "--steps", "6", "--optim.lr", "0.01", "--resume"])
    assert res.returncode == 0, res.stderr
    assert "resumed with changed settings: optim.lr (0.003 -> 0.01)" in res.stdout
    res = run_cli([*TRAIN, str(cfg), "--optim.lr", "0.01", "--overwrite"])
    assert res.returncode == 0, res.stderr
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps[0] == 0 and max(steps) == 3 and "resumed" not in res.stdout
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000003"]
    res = run_cli([*TRAIN, str(cfg), "--no-resume"])
    assert res.returncode == 1 and "holds a run (checkpoint step-000003)" in res.stderr


def test_config_changes_ignore_the_resumable_keys():
    a = {"steps": 3, "max_minutes": 0.0, "optim": {"lr": 0.1}, "data": {"stores": ["a"]}}
    b = {"steps": 9, "max_minutes": 5.0, "optim": {"lr": 0.1}, "data": {"stores": ["a", "b"]}}
    assert config_changes(a, b) == ["data.stores (['a'] -> ['a', 'b'])"]


def test_a_field_newer_than_the_checkpoint_changes_nothing_at_its_default():
    """A run saved before a field existed (e.g. speech_input, llm) resumes under the same config:
    the new field at its default is no change; set to something else, it is."""
    defaults = field_defaults(TrainConfig)
    assert defaults["llm"] == "full" and defaults["speech_input.encoder"] == ""
    saved = {"steps": 3, "optim": {"lr": 0.1}}
    now = {"steps": 3, "optim": {"lr": 0.1}, "llm": "full", "speech_input": {"encoder": ""}}
    assert config_changes(saved, now, defaults) == []
    now["llm"] = "frozen"
    assert config_changes(saved, now, defaults) == ["llm ('full' -> 'frozen')"]


def test_a_second_train_on_one_out_fails_at_once(train_bundle, train_store, tmp_path):
    run = tmp_path / "run"
    fifo = tmp_path / "notify.fifo"  # nobody reads it: the first run blocks after its checkpoint
    os.mkfifo(fifo)
    cfg = write_config(tmp_path / "c.yaml", train_bundle, train_store, run,
                       checkpoint_notify=str(fifo))  # fmt: skip
    first = subprocess.Popen([*TRAIN, str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        marker = run / "checkpoints" / "step-000003" / "trainer.json"
        deadline = time.time() + 300
        while not marker.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists() and first.poll() is None
        second = run_cli([*TRAIN, str(cfg)])
        assert second.returncode == 1
        err = error_line(second)
        assert f"pid {first.pid}" in err and str(run) in err
    finally:
        first.kill()
        first.wait()
    # The kernel dropped the dead holder's lock: the next run takes it.
    with (
        exclusive_lock(run / LOCK_FILE, "train"),
        pytest.raises(LockedError, match=f"pid {os.getpid()}"),
        exclusive_lock(run / LOCK_FILE, "train"),
    ):
        pass


@pytest.mark.parametrize("command", ["train-ssl", "train-vocoder"])
def test_resumable_trainers_refuse_a_foreign_non_empty_out(
    command, speech_manifest, unit_tokenizer, train_store, tmp_path, capsys
):
    from tokunify.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = {
        "train-ssl": ["train-ssl", str(speech_manifest), "--targets", str(unit_tokenizer)],
        "train-vocoder": ["train-vocoder", str(train_store)],
    }[command]
    assert main([*args, "--out", str(out), "--steps", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == f"tokunify {command}: error: {out}: --out is not empty; pass --overwrite to replace it"
    )
    assert (out / "notes.txt").read_text() == "mine"


def test_prepare_out_resumes_a_run_and_overwrite_deletes_only_owned_files(tmp_path):
    from tokunify.train import checkpoints

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "trainer.json").write_text("{}")
    (run / "log.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("mine")
    checkpoints.prepare_out(run, False, ("log.jsonl",))  # a run to resume: accepted as is
    assert (run / "log.jsonl").exists()
    checkpoints.prepare_out(run, True, ("log.jsonl",))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="--out is not empty; pass --overwrite"):
        checkpoints.prepare_out(run, False, ("log.jsonl",))
