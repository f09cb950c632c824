"""The encoder-input recipes in configs/train (SpeechVerse, AudioChatLlama, SALMONN, Qwen-Audio,
LLaMA-Omni): loaded through `tokunify train`'s own config loader, and each run for two steps on the
espeak manifest with its encoder overridden by a tiny random one built here (paths overridden)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from encoder_helpers import extend_encoder_bundle, log_rows, save_encoder

import tokunify
from tokunify.cli import main, parse_command
from tokunify.data.manifest import read_manifest
from tokunify.generate.generator import Generator
from tokunify.model.encoders import SpeechEncoder

TRAIN = Path(__file__).parents[2] / "configs" / "train"
RECIPES = {  # recipe -> (encoder family, adapter, llm, tasks)
    "speechverse_multitask.yaml": ("wavlm", "conv", "frozen", {"instruct_asr", "asr"}),
    "audiochatllama_encoder.yaml": ("wavlm", "conv", "frozen", {"instruct_asr"}),
    "salmonn_qformer_lora.yaml": ("whisper", "qformer", "lora", {"instruct_asr", "asr"}),
    "qwen_audio_tags.yaml": ("whisper", "stack", "full", {"asr", "instruct_asr"}),
    "llama_omni_units_out.yaml": ("whisper", "stack", "full", {"s2s", "asr", "tts"}),
}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipe-encoders")
    return {k: save_encoder(k, root / k) for k in ("whisper", "wavlm")}


@pytest.fixture(scope="module")
def bundles(sp_dir, unit_tokenizer, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipe-bundles")
    return {
        "enc": extend_encoder_bundle(sp_dir, root / "enc"),
        "units": extend_encoder_bundle(sp_dir, root / "units", unit_tokenizer),
    }


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_as_train_config(name):
    command, cfg = parse_command(["train", str(TRAIN / name)])
    assert command == "train"
    cfg.validate()
    _, adapter, llm, tasks = RECIPES[name]
    assert cfg.speech_input.encoder and cfg.speech_input.adapter == adapter and cfg.llm == llm
    assert set(cfg.data.mixture) == tasks and cfg.data.manifests


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_runs_two_steps_on_a_tiny_encoder(name, encoders, bundles, speech_manifest,
                                                 tmp_path):  # fmt: skip
    family, adapter, _, tasks = RECIPES[name]
    if name.startswith("salmonn"):
        pytest.importorskip("peft")
    bundle = bundles["units" if "s2s" in tasks else "enc"]
    out = tmp_path / "run"
    args = ["train", str(TRAIN / name), "--bundle", str(bundle), "--out", str(out)]
    args += ["--speech_input.encoder", str(encoders[family])]
    args += ["--data.manifests", str(speech_manifest), "--data.seq_len", "160"]
    args += ["--steps", "2", "--batch_size", "2", "--grad_accum", "1", "--save_every", "0"]
    args += ["--eval_every", "0", "--eval_examples", "2", "--log_every", "1", "--no-progress"]
    args += ["--optim.warmup_steps", "1"]
    if adapter == "qformer":  # a small Q-Former for the tiny LM
        args += ["--speech_input.adapter_args", "{window: 17, queries: 1, layers: 1, hidden: 32}"]
    assert main(args) == 0
    seen = {k.removeprefix("loss/") for r in log_rows(out) for k in r if k.startswith("loss/")}
    assert seen and seen <= tasks
    si = tokunify.load(out / "final").speech_input
    assert si.adapter.name == adapter and si.encoder.family.name == family
    source = SpeechEncoder.from_pretrained(encoders[family]).model.state_dict()
    trained = si.encoder.model.state_dict()
    unchanged = all(torch.equal(source[k], trained[k]) for k in source)
    assert unchanged == parse_command(["train", str(TRAIN / name)])[1].speech_input.freeze
    if "s2s" in tasks:  # speech in through the encoder, units out
        gen = Generator(out / "final")
        wav = str(next(iter(read_manifest(speech_manifest))).audio)
        (r,) = gen.generate("s2s", [wav], max_new_tokens=4, vocode=False)
        assert r.ids and not set(r.ids) & set(gen.vocab.input_only_ids())
        assert gen.task("s2s").input_streams == ("enc",) and gen.task("s2s").stream == "units"
