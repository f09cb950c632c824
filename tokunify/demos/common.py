"""What the demos share: their arguments, the step runner that drives `tokunify` subcommands the way a
user types them, and the front end (corpus -> tokenizers -> stores -> the untrained bundle)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tokunify.core.commands import main as cli
from tokunify.data.corpus.synth import TRAIN_VOICES
from tokunify.demos.ssl import build_ssl_units


@dataclass
class DemoArgs:
    """The offline end-to-end demo: builds a corpus, trains everything, evaluates, writes a report."""

    out: str = "demo_out"
    """Output directory (metrics.json, report.html, samples/, bundle/)."""
    quick: bool = False
    """The ~3-minute version (smaller corpus, model and budgets)."""
    seed: int = 0
    """Seed."""
    units: Literal["lda", "ssl"] = "lda"
    """Unit front end: lda (MFCC + LDA on espeak's phone alignment, supervised) or ssl (HuBERT
    iterations on the audio alone, no alignment: tokunify/demos/ssl.py)."""
    instruct: bool = False
    """Run the instruct demo instead (chat, instructions, modal invariance, few-shot ASR; its own
    budget: tokunify/demos/instruct.py)."""


def corpus_workers(quick: bool) -> int:
    """Processes for synth-corpus: up to 4 on the default corpus (63 s -> 37 s measured on 2
    cores), 1 on --quick's small one (spawning would cost more than it saves)."""
    return 1 if quick else min(4, os.cpu_count() or 1)


Step = Callable[[str, list[str]], None]


def make_step(times: dict[str, float]) -> Step:
    """``step(name, argv)``: run one `tokunify` subcommand, fail loudly, record its seconds."""

    def step(name: str, argv: list[str]) -> None:
        t = time.perf_counter()
        print(f"\n=== {name}: tokunify {' '.join(argv)}")
        if cli(argv) != 0:
            raise RuntimeError(f"demo step {name!r} failed")
        times[name] = time.perf_counter() - t

    return step


def front_end(step: Step, out: Path, s: dict[str, Any], args: DemoArgs) -> None:
    """corpus -> text tokenizer -> units -> stores (train, test_seen, test_unseen, test_s2s) ->
    the untrained bundle ``out/bundle_init`` (also the front end of ``demo --instruct``)."""
    corpus = out / "corpus"
    workers = corpus_workers(args.quick)
    step("corpus", ["synth-corpus", "--out", str(corpus), "--utterances", str(s["utts"]), "--test-utterances", str(s["test"]),
                    "--voices", *TRAIN_VOICES[: s["voices"]], "--s2s-pairs", str(s["s2s_pairs"]), "--seed", str(args.seed),
                    "--workers", str(workers)])  # fmt: skip
    step(
        "text tokenizer",
        [
            "train-text-tokenizer",
            str(corpus / "train_texts.txt"),
            "--out",
            str(out / "text_tokenizer"),
            "--vocab-size",
            "512",
        ],
    )
    if args.units == "ssl":
        build_ssl_units(step, corpus, out, args.quick, args.seed, s["k"])
    else:
        feats = out / "mel_units.yaml"
        feats.write_text(
            yaml.safe_dump(
                {
                    "kind": "mel_units",
                    "features": {
                        "kind": "mfcc",
                        "n_mfcc": 20,
                        "deltas": False,
                        "cmvn": "utterance",
                        "splice": 4,
                    },
                    "dedup": True,
                }
            )
        )
        step(
            "unit k-means",
            [
                "train-kmeans",
                str(corpus / "train.jsonl"),
                "--tokenizer",
                str(feats),
                "--k",
                str(s["k"]),
                "--out",
                str(out / "units"),
                "--max-utterances",
                "1500",
                "--lda-dim",
                str(s["lda_dim"]),
            ],
        )
    units_cfg = out / "units" / "tokenizer.yaml"
    for split in ("train", "test_seen", "test_unseen", "test_s2s"):
        step(f"tokenize {split}", ["tokenize", str(corpus / f"{split}.jsonl"), "--out", str(out / "stores" / split), "--tokenizer", f"units={units_cfg}",
                                   "--text-tokenizer", str(out / "text_tokenizer"), "--chunk-size", "500", "--no-progress"])  # fmt: skip
    step("extend", ["extend", f"scratch:{s['preset']}", "--text-tokenizer", str(out / "text_tokenizer"), "--units", str(s["k"]),
                    "--speech-tokenizer", f"units={units_cfg}", "--out", str(out / "bundle_init")])  # fmt: skip
