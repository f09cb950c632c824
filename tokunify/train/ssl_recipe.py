"""`tokunify ssl-units CONFIG`: the HuBERT iteration loop, from audio alone to a units tokenizer.

    MFCC k-means (iteration 0 targets)
      -> train-ssl iteration 1 -> k-means on its layer L
      -> train-ssl iteration 2 (from scratch, on those targets) -> k-means on its layer L -> units

Every stage is the public subcommand (`train-kmeans`, `train-ssl`) a user would run by hand; the
stages' outputs stay in ``out/`` (``iter0/``, ``iter1/``, ``km1/``, ...) and the final tokenizer is
copied to ``out/units/`` (``tokenizer.yaml`` + centroids, ``source`` naming the last encoder).
No labels or alignments are read. ``configs/ssl/hubert_iterations.yaml`` is the shipped recipe.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tokunify.core.commands import main as cli
from tokunify.core.fsio import atomic_write_text


def _mfcc() -> dict[str, Any]:
    return {"kind": "mfcc", "n_mfcc": 13, "deltas": True, "cmvn": "utterance"}


@dataclass
class SSLIteration:
    """One HuBERT iteration: train-ssl settings, then k-means on one layer."""

    steps: int = 300
    """Optimizer steps of train-ssl."""
    batch_size: int = 8
    """Utterances per step."""
    lr: float = 2.0e-3
    """Peak learning rate."""
    layer: int = 3
    """Layer whose features are clustered (hidden_states numbering: 0 = transformer input)."""
    k: int = 128
    """Units of the k-means on that layer."""
    unmasked_weight: float = 0.0
    """train-ssl's loss weight on unmasked frames (HuBERT: 0)."""


@dataclass
class SSLUnitsConfig:
    """HuBERT iterations on a manifest: MFCC k-means -> SSL iteration 1 -> layer k-means -> ... -> units."""

    manifest: str = ""
    """JSONL/TSV manifest of the training audio (no labels needed)."""
    out: str = "ssl_units"
    """Output directory; the final units tokenizer is out/units/tokenizer.yaml."""
    model: str = "tiny"
    """HubertModel preset (tiny, base), config file of HubertConfig fields, or model dir."""
    mfcc: dict[str, Any] = field(default_factory=_mfcc)
    """Iteration-0 features (MelConfig fields)."""
    k0: int = 100
    """Units of the MFCC k-means (HuBERT: 100)."""
    iterations: list[dict[str, Any]] = field(default_factory=lambda: [{}, {}])
    """One mapping of SSLIteration fields per iteration (empty: the defaults)."""
    max_utterances: int = 2000
    """Utterances train-ssl reads (a random subset of the manifest; 0: all)."""
    kmeans_utterances: int = 1000
    """Utterances sampled for each k-means."""
    mixed_precision: str = "no"
    """train-ssl autocast: no, bf16, fp16, auto (bf16 where native)."""
    device: str = "cpu"
    """Device of the k-means feature passes."""
    seed: int = 0
    """Seed."""


def run_ssl_units(cfg: SSLUnitsConfig) -> Path:
    """Run the loop; returns ``out/units/tokenizer.yaml``."""

    if not cfg.manifest:
        raise ValueError("ssl-units: manifest is required")
    if not cfg.iterations:
        raise ValueError("ssl-units: iterations must list at least one iteration")
    try:
        iters = [SSLIteration(**it) for it in cfg.iterations]
    except TypeError as e:
        raise ValueError(f"ssl-units: iterations: {e}") from e
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def run(name: str, argv: list[str]) -> None:
        t = time.perf_counter()
        print(f"\n--- ssl-units {name}: tokunify {' '.join(argv)}", flush=True)
        if cli(argv) != 0:
            raise ValueError(f"ssl-units: stage {name!r} failed")
        times[name] = time.perf_counter() - t

    def kmeans(name: str, tok_cfg: dict[str, Any], k: int) -> Path:
        atomic_write_text(out / f"{name}.yaml", yaml.safe_dump(tok_cfg, sort_keys=False))
        run(name, ["train-kmeans", cfg.manifest, "--tokenizer", str(out / f"{name}.yaml"), "--k", str(k),
                   "--out", str(out / name), "--max-utterances", str(cfg.kmeans_utterances),
                   "--seed", str(cfg.seed), "--device", cfg.device, "--overwrite"])  # fmt: skip
        return out / name / "tokenizer.yaml"

    targets = kmeans("km0", {"kind": "mel_units", "features": cfg.mfcc, "dedup": True}, cfg.k0)
    for i, it in enumerate(iters, start=1):
        run(f"iter{i}", ["train-ssl", cfg.manifest, "--targets", str(targets), "--out", str(out / f"iter{i}"),
                         "--model", cfg.model, "--steps", str(it.steps), "--batch-size", str(it.batch_size),
                         "--lr", str(it.lr), "--max-utterances", str(cfg.max_utterances),
                         "--unmasked-weight", str(it.unmasked_weight),
                         "--mixed-precision", cfg.mixed_precision, "--seed", str(cfg.seed)])  # fmt: skip
        enc = out / f"iter{i}" / "encoder"
        targets = kmeans(
            f"km{i}",
            {"kind": "ssl_units", "source": str(enc), "layer": it.layer, "dedup": True},
            it.k,
        )
    units = out / "units"
    if units.exists():
        shutil.rmtree(units)
    shutil.copytree(targets.parent, units)
    atomic_write_text(out / "stage_seconds.yaml", yaml.safe_dump(times, sort_keys=False))
    print(
        f"ssl-units: wrote {units / 'tokenizer.yaml'} ({', '.join(f'{k} {v:.0f} s' for k, v in times.items())})"
    )
    return units / "tokenizer.yaml"
