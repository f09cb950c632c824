"""`tokunify demo --units ssl`: the demo's units learned without any alignment (HuBERT iterations).

The default demo's units are MFCC -> LDA trained on espeak's phone alignment (supervised). Here the
units come from `tokunify ssl-units` on the training audio alone: MFCC k-means -> train-ssl
iteration 1 -> k-means on its layer -> units (SSL_SETTINGS: one iteration fits the CPU budget
best). The LM, vocoder and evaluation that follow are the default demo's, unchanged.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

# Per demo mode, chosen with benchmarks/unit_quality.py's phone PNMI (k-means K=128 of each layer
# after 300 steps on this corpus; table in the README's "Training your own units"):
# - `unmasked_weight` 1 (the loss on unmasked frames too): PNMI 0.56 vs 0.34 with HuBERT's
#   masked-only loss, which needs far more than a CPU budget of steps;
# - one iteration: iteration 1 at this budget barely passes its MFCC targets on seen voices and
#   falls below them on the unseen one, so an iteration 2 would learn from no better targets; its
#   steps go to iteration 1 (`steps` has one entry per iteration: `(300, 300)` runs two);
# - `layer` 2 of 4 (layers 1-2 scored highest, 3-4 within 0.03).
SSL_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": dict(
        k0=50,
        steps=(40,),
        batch=8,
        layer=2,
        unmasked_weight=1.0,
        max_utterances=300,
        kmeans_utterances=300,
    ),
    "default": dict(
        k0=100,
        steps=(600,),
        batch=8,
        layer=2,
        unmasked_weight=1.0,
        max_utterances=3000,
        kmeans_utterances=1500,
    ),
}


def ssl_units_config(corpus: Path, out: Path, quick: bool, seed: int, k: int) -> dict[str, Any]:
    """The `ssl-units` recipe the demo runs (written to ``out/ssl_units.yaml``)."""
    s = SSL_SETTINGS["quick" if quick else "default"]
    iteration = {"batch_size": s["batch"], "lr": 2.0e-3, "layer": s["layer"], "k": k,
                 "unmasked_weight": s["unmasked_weight"]}  # fmt: skip
    return {
        "manifest": str(corpus / "train.jsonl"),
        "out": str(out / "ssl"),
        "model": "tiny",
        "mfcc": {"kind": "mfcc", "n_mfcc": 13, "deltas": True, "cmvn": "utterance"},
        "k0": s["k0"],
        "iterations": [dict(iteration, steps=n) for n in s["steps"]],
        "max_utterances": s["max_utterances"],
        "kmeans_utterances": s["kmeans_utterances"],
        "mixed_precision": "auto",
        "seed": seed,
    }


def build_ssl_units(
    step: Callable[[str, list[str]], None], corpus: Path, out: Path, quick: bool, seed: int, k: int
) -> Path:
    """Run `ssl-units` through the demo's ``step`` runner; the units end up in ``out/units``
    (where the default demo's k-means writes them). Returns ``out/units/tokenizer.yaml``."""
    cfg = out / "ssl_units.yaml"
    cfg.write_text(yaml.safe_dump(ssl_units_config(corpus, out, quick, seed, k), sort_keys=False))
    step("ssl units", ["ssl-units", str(cfg)])
    units = out / "units"
    if units.exists():
        shutil.rmtree(units)
    shutil.copytree(out / "ssl" / "units", units)
    return units / "tokenizer.yaml"
