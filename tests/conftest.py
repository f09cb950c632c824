"""Shared fixtures: tiny tokenizers and tiny random HF models, built here and saved to temp dirs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "red",
    "blue",
    "house",
    "tree",
    "one",
    "two",
    "three",
    "four",
    "five",
    "what",
    "is",
    "where",
    "are",
    "you",
    "i",
    "we",
    "they",
    "see",
    "saw",
    "big",
    "small",
    "green",
    "happy",
    "quickly",
    "slowly",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


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
