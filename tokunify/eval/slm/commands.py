"""`tokunify eval-slm`: a likelihood benchmark (sWUGGY, sBLIMP, s/tStoryCloze, SALMon) on a bundle.

Audio goes through the bundle's own speech tokenizer in length-sorted batches; each item becomes a
:class:`~tokunify.eval.slm.scoring.ScoredSequence`; pairs are scored with the conventions given as flags,
and every convention is written to the result JSON beside the accuracies.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tokunify.core.fsio import atomic_write_text
from tokunify.eval.slm.benchmarks import BenchmarkError, Pair, read_benchmark
from tokunify.eval.slm.scoring import (
    Conventions,
    ScoredSequence,
    cross_modal_sequence,
    pair_scores,
    score_sequences,
    speech_sequence,
    text_sequence,
)
from tokunify.model.bundle import load

# context modality -> ending modality, "speech" standing for the bundle's stream
VARIANTS: dict[str, tuple[str, str]] = {
    "speech": ("speech", "speech"),
    "speech-text": ("speech", "text"),
    "text-speech": ("text", "speech"),
    "text": ("text", "text"),
}


# the task tag of the cross-modal sequences (the speech variant uses --task)
TASK_OF_VARIANT = {"speech-text": "interleave", "text-speech": "interleave", "text": "text"}


@dataclass
class EvalSlmArgs:
    """Score a bundle on a speech-LM likelihood benchmark read from a local directory."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory (with its speech tokenizer recorded)."""
    benchmark: Literal["swuggy", "sblimp", "sstorycloze", "tstorycloze", "salmon"]
    """Benchmark layout of --data."""
    data: str
    """Benchmark directory (the published layout, or one written by synth-minimal-pairs)."""
    split: str = ""
    """ZeroSpeech split (dev/test; default dev) or one SALMon task (default: all)."""
    out: str = ""
    """Result JSON path (default: print only)."""
    normalize: Literal["sum", "mean"] = "mean"
    """Log-likelihood per item: raw sum or mean over scored tokens."""
    softmax: Literal["full", "modality"] = "full"
    """Log-softmax over the whole vocabulary or over the scored modality's ids only."""
    codebooks: Literal["first", "all"] = "all"
    """Codec streams: score codebook 0 only, or every codebook."""
    task: str = "speech"
    """Task tag that prefixes speech sequences (speech: the unconditional speech LM; continue)."""
    variant: Literal["speech", "speech-text", "text-speech", "text"] = "speech"
    """StoryCloze only: modality of context -> ending (S->S, S->T, T->S, T->T)."""
    batch_size: int = 32
    """Sequences per forward pass."""
    max_pairs: int = 0
    """Score only the first N pairs (0: all)."""
    device: str = "cpu"
    """Device."""


def tokenize_audio(tok: Any, paths: Sequence[Path], batch_size: int = 32) -> dict[Path, np.ndarray]:
    """Audio files -> local ids, in batches of similar duration (less padding)."""
    import soundfile as sf

    unique = sorted(set(paths), key=lambda p: sf.info(str(p)).frames)
    out: dict[Path, np.ndarray] = {}
    for i in range(0, len(unique), batch_size):
        chunk = unique[i : i + batch_size]
        res = tok.encode_files(chunk)
        for p, ids in zip(chunk, res.ids, strict=True):
            out[p] = ids.numpy().astype(np.int64)
    return out


def _text_ids(tokenizer: Any, text: str | None, what: str) -> np.ndarray:
    if not text:
        raise BenchmarkError(f"the text variants need texts.jsonl with {what!r} for every story")
    return np.array(tokenizer.encode(" " + text.strip(), add_special_tokens=False), dtype=np.int64)


def build_sequences(
    pairs: Sequence[Pair], bundle: Any, stream: str, variant: str, task: str, batch_size: int = 32
) -> tuple[list[ScoredSequence], list[ScoredSequence]]:
    """Positive and negative sequences of every pair, for one variant."""
    vocab, tok = bundle.vocab, bundle.tokenizer
    ctx_mod, end_mod = VARIANTS[variant]
    if variant == "speech":
        units = tokenize_audio(
            bundle.speech_tokenizer(stream), [x for p in pairs for x in (p.pos, p.neg)], batch_size
        )
        return (
            [speech_sequence(vocab, stream, units[p.pos], task) for p in pairs],
            [speech_sequence(vocab, stream, units[p.neg], task) for p in pairs],
        )
    audio = [
        a
        for p in pairs
        for a, m in (
            (p.context_audio, ctx_mod),
            (p.pos_ending_audio, end_mod),
            (p.neg_ending_audio, end_mod),
        )
        if m == "speech"
    ]
    if any(a is None for a in audio):
        raise BenchmarkError(
            f"variant {variant!r} needs crossmodal/<n>_{{context,correct,incorrect}}.wav"
        )
    units = tokenize_audio(bundle.speech_tokenizer(stream), audio, batch_size) if audio else {}

    def side(mod: str, text: str | None, wav: Path | None, what: str) -> tuple[str, np.ndarray]:
        if mod == "speech":
            return stream, units[wav]  # type: ignore[index]
        return "text", _text_ids(tok, text, what)

    pos, neg = [], []
    for p in pairs:
        ctx = side(ctx_mod, p.context_text, p.context_audio, "context")
        ends = (
            side(end_mod, p.pos_text, p.pos_ending_audio, "correct"),
            side(end_mod, p.neg_text, p.neg_ending_audio, "incorrect"),
        )
        for store, end in zip((pos, neg), ends, strict=True):
            if variant == "text":
                store.append(text_sequence(vocab, ctx[1], end[1]))
            else:
                store.append(cross_modal_sequence(vocab, ctx, end))
    return pos, neg


def aggregate(pairs: Sequence[Pair], scores: np.ndarray) -> dict[str, Any]:
    """Accuracy (each key's score averaged over its voices first), overall and per group label."""

    def acc(idx: list[int]) -> float:
        by_key: dict[str, list[float]] = defaultdict(list)
        for i in idx:
            by_key[pairs[i].key].append(float(scores[i]))
        return float(np.mean([np.mean(v) for v in by_key.values()])) if by_key else float("nan")

    out: dict[str, Any] = {"accuracy": acc(list(range(len(pairs)))), "n_pairs": len(pairs)}
    labels: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, p in enumerate(pairs):
        for k, v in p.groups.items():
            labels[k][v].append(i)
    for k, groups in labels.items():
        out[f"by_{k}"] = {
            g: {"accuracy": acc(ix), "n_pairs": len(ix)} for g, ix in sorted(groups.items())
        }
    return out


def evaluate_pairs(
    bundle: Any,
    pairs: Sequence[Pair],
    conv: Conventions,
    task: str = "speech",
    variant: str = "speech",
    batch_size: int = 32,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score ``pairs`` with a loaded bundle: the function ``eval-slm`` and the demo call."""
    stream = bundle.vocab.default_stream
    t0 = time.perf_counter()
    pos, neg = build_sequences(pairs, bundle, stream, variant, task, batch_size)
    t1 = time.perf_counter()
    ll = score_sequences(bundle.model, bundle.vocab, pos + neg, conv, batch_size, device)
    t2 = time.perf_counter()
    scores = pair_scores(ll[: len(pos)], ll[len(pos) :])
    res = aggregate(pairs, scores)
    res.update(
        conventions={
            **conv.to_dict(),
            "task": TASK_OF_VARIANT.get(variant, task),
            "variant": variant,
            "stream": stream,
        },
        tokenize_seconds=t1 - t0,
        score_seconds=t2 - t1,
    )
    return res


def run_eval_slm(args: EvalSlmArgs) -> dict[str, Any]:

    conv = Conventions(args.normalize, args.softmax, args.codebooks)
    if args.variant != "speech" and args.benchmark not in ("sstorycloze", "tstorycloze"):
        raise BenchmarkError(f"--variant {args.variant} exists for story cloze only")
    pairs = read_benchmark(args.benchmark, args.data, args.split)
    if args.max_pairs:
        pairs = pairs[: args.max_pairs]
    bundle = load(args.bundle, device=args.device)
    if args.task not in bundle.vocab.tasks:
        raise BenchmarkError(f"--task {args.task!r}: the bundle knows {list(bundle.vocab.tasks)}")
    res = evaluate_pairs(bundle, pairs, conv, args.task, args.variant, args.batch_size, args.device)
    res = {"benchmark": args.benchmark, "data": str(args.data), "split": args.split, **res}
    print(f"{args.benchmark}: accuracy {res['accuracy']:.4f} on {res['n_pairs']} pairs "
          f"({', '.join(f'{k}={v}' for k, v in res['conventions'].items())})")  # fmt: skip
    for k, v in res.items():
        if k.startswith("by_"):
            for g, r in v.items():
                print(f"  {k[3:]}={g}: {r['accuracy']:.4f} ({r['n_pairs']} pairs)")
    if args.out:
        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    return res
