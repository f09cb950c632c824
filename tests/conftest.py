"""Shared fixtures: tiny tokenizers and tiny random HF models, built here and saved to temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from chat_helpers import make_conversations
from helpers import UNITS_K, sentences

from tokunify.cli import main
from tokunify.data.store import TokenStore
from tokunify.tasks.conversation import write_conversation_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text("\n".join(sentences(1500)) + "\n")
    return p


@pytest.fixture(scope="session")
def sp_dir(tmp_path_factory, corpus_file) -> Path:
    """A SentencePiece tokenizer (and its HF conversion) trained on the test corpus."""
    from tokunify.tokenizers.text import train_sentencepiece

    out = tmp_path_factory.mktemp("sp")
    train_sentencepiece(corpus_file, out, vocab_size=320)
    return out


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory, corpus_file) -> Path:
    """A GPT-2-style byte-level BPE tokenizer trained on the test corpus."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(corpus_file)], vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    out = tmp_path_factory.mktemp("bpe")
    tok.save_pretrained(out)
    return out


def _save_model(kind: str, tied: bool, tok_dir: Path, out: Path) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(tok_dir)
    # Embedding rows beyond len(tokenizer), as real checkpoints often have (padded vocabularies).
    n = len(tok) + 5
    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=n,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tied,
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(
            vocab_size=n, n_embd=32, n_layer=2, n_head=4, n_positions=256, tie_word_embeddings=tied
        )
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(
    scope="session",
    params=[("llama", True), ("llama", False), ("gpt2", True), ("gpt2", False)],
    ids=["llama-tied", "llama-untied", "gpt2-tied", "gpt2-untied"],
)
def base_model_dir(request, tmp_path_factory, sp_dir, bpe_tokenizer_dir) -> Path:
    """A tiny random pretrained-style model dir with its tokenizer (Llama: SentencePiece; GPT-2: BPE)."""
    kind, tied = request.param
    tok_dir = sp_dir if kind == "llama" else bpe_tokenizer_dir
    return _save_model(kind, tied, tok_dir, tmp_path_factory.mktemp(f"{kind}-{tied}"))


SPEECH_TEXTS = [
    "the red cat sat on the mat",
    "what is two plus three",
    "a big dog ran to the green house",
    "we saw five small birds",
    "where are you going today",
    "they like blue trees",
]
SPEECH_VOICES = ["en-us", "en-us+m3", "en+f2"]


@pytest.fixture(scope="session")
def speech_manifest(tmp_path_factory) -> Path:
    """A small espeak-ng corpus: wavs at espeak's native 22.05 kHz and a JSONL manifest with words."""
    import soundfile as sf

    from tokunify.data.corpus.espeak import Espeak
    from tokunify.data.manifest import Entry, write_manifest

    root = tmp_path_factory.mktemp("speech")
    engine = Espeak()
    entries = []
    for i, text in enumerate(SPEECH_TEXTS):
        for j, voice in enumerate(SPEECH_VOICES):
            s = engine.synthesize(text, voice)
            path = root / "wavs" / f"u{i}_{j}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, s.audio, s.sample_rate)
            extra: dict = {"s2s_target": f"u{i + 1}_{j}"} if i % 2 == 0 else {}  # s2s pairs
            extra["phones"] = [list(p) for p in s.phones]
            entries.append(
                Entry(
                    id=f"u{i}_{j}", audio=path, text=text, speaker=voice, words=s.words, extra=extra
                )
            )
    return write_manifest(entries, root / "manifest.jsonl")


# ---- a tiny espeak store and a matching from-scratch bundle (train/ and generate/ tests) ----


@pytest.fixture(scope="session")
def unit_tokenizer(speech_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-km")
    cfg = out / "mel.yaml"
    cfg.write_text(
        yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc", "n_mfcc": 13}})
    )
    assert (
        main(
            [
                "train-kmeans",
                str(speech_manifest),
                "--tokenizer",
                str(cfg),
                "--k",
                str(UNITS_K),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "tokenizer.yaml"


@pytest.fixture(scope="session")
def train_store(speech_manifest, unit_tokenizer, sp_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-store") / "store"
    args = [
        "tokenize",
        str(speech_manifest),
        "--out",
        str(out),
        "--tokenizer",
        f"units={unit_tokenizer}",
    ]
    assert main([*args, "--text-tokenizer", str(sp_dir), "--chunk-size", "6", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def train_bundle(unit_tokenizer, sp_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-bundle") / "bundle"
    args = [
        "extend",
        "scratch:llama-tiny",
        "--text-tokenizer",
        str(sp_dir),
        "--units",
        str(UNITS_K),
    ]
    assert main([*args, "--speech-tokenizer", f"units={unit_tokenizer}", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def voc_bundle(train_bundle, tmp_path_factory) -> Path:
    """The session's tiny random bundle (UNITS_K units) plus a tiny random CodeHiFiGAN vocoder.
    Shared read-only: a test that changes it works on a copy."""
    import shutil

    import torch

    from tokunify.model.bundle import attach_vocoder
    from tokunify.vocoder import CodeHiFiGAN, CodeHiFiGANConfig, save_codehifigan

    out = tmp_path_factory.mktemp("voc-bundle") / "bundle"
    shutil.copytree(train_bundle, out)
    torch.manual_seed(0)
    cfg = CodeHiFiGANConfig(num_embeddings=UNITS_K, embedding_dim=16, upsample_initial_channel=32, upsample_rates=[5, 4, 4, 4], upsample_kernel_sizes=[11, 8, 8, 8],
                            resblock="2", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                            dur_predictor_params={"encoder_embed_dim": 16, "var_pred_hidden_dim": 16, "var_pred_kernel_size": 3, "var_pred_dropout": 0.0})  # fmt: skip
    attach_vocoder(out, save_codehifigan(CodeHiFiGAN(cfg), out.parent / "voc"))
    return out


@pytest.fixture(scope="module")
def chat_store(train_store, tmp_path_factory):
    store = TokenStore(train_store)
    root = tmp_path_factory.mktemp("chat-store") / "store"
    return write_conversation_store(root, make_conversations(store), store.meta, chunk_size=4)
