"""Generation from a bundle with a speech input (encoder + adapter): audio goes through the encoder,
the prompt holds one placeholder per adapter frame, and decoding starts from inputs_embeds; through
Generator and the `tokunify generate` CLI, on a tiny random WavLM bundle trained two steps, also
after the bundle is moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from encoder_helpers import extend_encoder_bundle, save_encoder, train_args

import tokunify
from tokunify.cli import main
from tokunify.data.manifest import read_manifest
from tokunify.generate.generator import Generator

MAX_NEW = "6"


@pytest.fixture(scope="module")
def enc_final(sp_dir, speech_manifest, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("enc-gen")
    bundle = extend_encoder_bundle(sp_dir, root / "bundle")
    encoder = save_encoder("wavlm", root / "wavlm")
    assert main(train_args(bundle, speech_manifest, root / "run", encoder)) == 0
    return root / "run" / "final"


@pytest.fixture(scope="module")
def wav_files(speech_manifest) -> list[str]:
    return [str(e.audio) for e in list(read_manifest(speech_manifest))[:2]]


def test_asr_hears_audio_through_the_encoder(enc_final, wav_files):
    gen = Generator(enc_final)
    fmt = gen.task("asr")
    assert gen.hears_encoder(fmt) and fmt.input_streams == ("enc",)
    prompts, wavs = gen.speech_prompts("asr", wav_files)
    ph = gen.vocab.placeholder("enc")
    counts = gen.speech_input.output_lengths([len(w) for w in wavs]).tolist()
    assert [int((p == ph).sum()) for p in prompts] == counts and min(counts) > 0
    out = gen.generate("asr", wav_files, max_new_tokens=int(MAX_NEW))
    assert len(out) == 2 and all(isinstance(r.text, str) for r in out)
    assert all(ph not in r.ids for r in out)  # input-only ids are never generated


def test_the_audio_decides_the_output(enc_final, wav_files):
    """The placeholders' rows are the adapter's frames: the same prompt ids with other audio give
    other logits (a run that ignored the audio would not)."""
    gen = Generator(enc_final)
    prompts, wavs = gen.speech_prompts("asr", wav_files[:1])
    ids = torch.as_tensor(prompts[0])[None]
    quiet = [np.zeros_like(wavs[0])]
    with torch.no_grad():
        a = gen.model(inputs_embeds=gen.speech_embeds(ids, wavs)).logits
        b = gen.model(inputs_embeds=gen.speech_embeds(ids, quiet)).logits
    assert not torch.allclose(a, b)


def test_arrays_at_another_rate_equal_files(enc_final, wav_files):
    gen = Generator(enc_final)
    wav, sr = sf.read(wav_files[0], dtype="float32")
    a = gen.generate("asr", [wav], sample_rate=sr, max_new_tokens=4)[0]
    b = gen.generate("asr", wav_files[:1], max_new_tokens=4)[0]
    assert a.ids == b.ids


def test_prompts_without_their_audio_are_refused(enc_final, wav_files):
    gen = Generator(enc_final)
    prompts, _ = gen.speech_prompts("asr", wav_files[:1])
    with pytest.raises(ValueError, match="no audio was given"):
        gen.generate_ids("asr", prompts)


def test_generate_cli_and_a_moved_bundle(enc_final, wav_files, tmp_path, capsys):
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "bundle"
    shutil.copytree(enc_final, first)
    moved.parent.mkdir()
    shutil.move(first, moved)  # nothing is left where it was written
    b = tokunify.load(moved)
    assert b.speech_input is not None and b.speech_input.stream == "enc"
    out = tmp_path / "gen"
    args = ["generate", str(moved), "--task", "asr", "--input", *wav_files, "--out", str(out)]
    assert main([*args, "--max-new-tokens", MAX_NEW, "--greedy"]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == wav_files and all(isinstance(r["text"], str) for r in rows)
    direct = Generator(moved).generate("asr", wav_files, max_new_tokens=int(MAX_NEW))
    assert [r["text"] for r in rows] == [r.text for r in direct]
