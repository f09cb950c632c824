"""Tiny random speech encoders and encoder-input bundles for the train/generate/model tests.

Plain builders (each test module's fixtures call them): a tiny Whisper encoder (10 s window) and a
tiny WavLM (50 Hz, as the released models), saved with ``save_pretrained``, and bundles extended
from ``scratch:llama-tiny`` with a continuous stream ``enc`` (and units, for units-out tasks).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import UNITS_K
from transformers import WavLMConfig, WavLMModel, WhisperConfig, WhisperForConditionalGeneration

from tokunify.cli import main

D = 24  # encoder width
WHISPER = dict(
    d_model=D, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
    decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=80,
    max_source_positions=300, max_target_positions=16, vocab_size=64, pad_token_id=0,
    bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
)  # fmt: skip  # window: 600 mel frames = 6 s; 50 Hz
WAVLM = dict(
    hidden_size=D, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
    conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
    num_buckets=16,
)  # fmt: skip  # 16000 / 320 = 50 Hz


def save_encoder(kind: str, out: Path) -> Path:
    """A tiny random ``whisper`` or ``wavlm`` checkpoint in ``out``."""
    torch.manual_seed(0)
    if kind == "whisper":
        WhisperForConditionalGeneration(WhisperConfig(**WHISPER)).save_pretrained(out)
    else:
        WavLMModel(WavLMConfig(**WAVLM)).save_pretrained(out)
    return out


def extend_encoder_bundle(sp_dir: Path, out: Path, unit_tokenizer: Path | None = None) -> Path:
    """``scratch:llama-tiny`` with a continuous stream ``enc`` (and UNITS_K units with their
    tokenizer recorded, when given: units out)."""
    args = ["extend", "scratch:llama-tiny", "--text-tokenizer", str(sp_dir), "--continuous", "enc"]
    if unit_tokenizer is not None:
        args += ["--units", str(UNITS_K), "--speech-tokenizer", f"units={unit_tokenizer}"]
    assert main([*args, "--out", str(out)]) == 0
    return out


def train_args(bundle: Path, manifest: Path, out: Path, encoder: Path, **over: str) -> list[str]:
    """`tokunify train` arguments: 2 steps of asr on the manifest, encoder input (conv adapter)."""
    opts = {
        "--bundle": str(bundle), "--out": str(out), "--data.manifests": str(manifest),
        "--data.mixture": "{asr: 1.0}", "--data.seq_len": "96", "--data.eval_fraction": "0.2",
        "--speech_input.encoder": str(encoder), "--speech_input.adapter": "conv",
        "--steps": "2", "--batch_size": "2", "--save_every": "0", "--eval_every": "0",
        "--log_every": "1", "--optim.warmup_steps": "1", "--optim.lr": "0.01",
        "--eval_examples": "2", **over,
    }  # fmt: skip
    args = ["train"]
    for k, v in opts.items():
        args += [k, v]
    return [*args, "--no-progress"]


def log_rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
