"""The conversation/instruction recipes in configs/train: loaded through `tokunify train`'s own
config loader, and each run for two steps on the tiny fixtures (paths overridden)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokunify.cli import main, parse_command

TRAIN = Path(__file__).parents[2] / "configs" / "train"
RECIPES = {
    "audiochatllama_modal_invariance.yaml": {"chat"},
    "speechgpt_stage2_instruct.yaml": {"chat", "instruct_asr", "instruct_tts", "text"},
    "chat_sft_lora.yaml": {"chat", "instruct_asr", "instruct_tts"},
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_as_train_config(name):
    command, cfg = parse_command(["train", str(TRAIN / name)])
    assert command == "train"
    cfg.validate()
    assert set(cfg.data.mixture) == RECIPES[name] and cfg.data.chat_loss_on == ["assistant"]
    if name.startswith("audiochatllama"):
        assert cfg.freeze == "body+text_rows" and cfg.data.chat_template == ""
    if name.startswith("chat_sft_lora"):
        assert cfg.lora.enabled and cfg.lora.target_modules
    assert not (TRAIN / "speechgpt_stage2.yaml").exists()
    _, mixture = parse_command(["train", str(TRAIN / "speechgpt_stage2_task_mixture.yaml")])
    assert "chat" not in mixture.data.mixture  # the renamed file: a task mixture, as it says


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_runs_on_tiny_data(name, train_bundle, train_store, chat_store, tmp_path):
    if "lora" in name:
        pytest.importorskip("peft")
    args = [
        "train",
        str(TRAIN / name),
        "--bundle",
        str(train_bundle),
        "--out",
        str(tmp_path / "run"),
    ]
    args += [
        "--data.stores",
        str(chat_store),
        str(train_store),
        "--data.seq_len",
        "256",
        "--steps",
        "2",
        "--batch_size",
        "2",
    ]
    args += ["--grad_accum", "1", "--save_every", "0", "--eval_every", "0", "--no-progress"]
    args += ["--optim.warmup_steps", "1"]
    assert main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    seen = {k.removeprefix("loss/") for r in rows for k in r if k.startswith("loss/")}
    assert "chat" in seen and seen <= RECIPES[name]
