"""`tokunify eval`: ASR WER/CER, TTS round-trip WER, unit resynthesis error and S2S, on a held-out store.

Text normaliser (applied to references and hypotheses before WER/CER): lower case, every character
other than a-z, 0-9 and the apostrophe becomes a space, runs of spaces collapse, ends are trimmed.

- ``asr_wer``/``asr_cer``: the bundle's ASR on the store's units against the transcripts.
- ``tts_roundtrip_wer``: TTS of the transcript -> vocoder -> re-tokenize with the bundle's speech
  tokenizer -> the bundle's own ASR, against the transcript.
- ``resynth_unit_error``: the store's units and durations -> vocoder -> re-tokenize; edit distance
  of the deduplicated sequences over the reference length. ``resynth_frame_error``: the share of
  frames whose unit differs (frame-aligned, length difference counted as errors).
- ``s2s_exact_match``/``s2s_wer``: for pairs (``s2s_target`` in the manifest), speech in -> speech out
  -> re-tokenize -> ASR, against the target utterance's transcript (exact match after normalising).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.store import Record, TokenStore


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9']", " ", (text or "").lower())).strip()


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True) if normalize(r)]
    if not pairs:
        return float("nan")
    return float(jiwer.wer([r for r, _ in pairs], [h if h else "<empty>" for _, h in pairs]))


def cer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True) if normalize(r)]
    if not pairs:
        return float("nan")
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def unit_edit_error(refs: list[np.ndarray], hyps: list[np.ndarray]) -> float:
    """Total edit distance of unit sequences over total reference length (jiwer on unit "words")."""
    import jiwer

    r = [" ".join(f"u{int(u)}" for u in x) for x in refs]
    h = [" ".join(f"u{int(u)}" for u in x) or "<empty>" for x in hyps]
    return float(jiwer.wer(r, h))


def frame_error(ref: list[np.ndarray], hyp: list[np.ndarray]) -> float:
    errors = total = 0
    for a, b in zip(ref, hyp, strict=True):
        n = min(len(a), len(b))
        errors += int((a[:n] != b[:n]).sum()) + abs(len(a) - len(b))
        total += len(a)
    return errors / max(total, 1)


@dataclass
class EvalArgs:
    """Evaluate a bundle on held-out token stores; writes eval.json and eval.md."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory (with a speech tokenizer and a vocoder recorded)."""
    store: list[str] = field(default_factory=list)
    """Held-out stores (one result block per store)."""
    out: str = "eval"
    """Output directory."""
    max_utts: int = 100
    """Utterances per store and task."""
    tasks: list[str] = field(default_factory=lambda: ["asr", "tts", "resynth", "s2s"])
    """Which evaluations to run."""
    batch_size: int = 16
    """Generation batch size."""
    device: str = "cpu"
    """Device."""
    seed: int = 0
    """Sampling seed (TTS and S2S sample)."""


def evaluate_store(
    gen: Any, store: TokenStore, max_utts: int, tasks: list[str], batch_size: int = 16
) -> dict[str, Any]:
    import torch

    stream = gen.stream
    recs: list[Record] = []
    by_id: dict[str, Record] = {}
    for i in range(len(store)):
        r = store[i]
        by_id[r.id] = r
        if stream in r.streams and r.text and len(recs) < max_utts:
            recs.append(r)
    texts = [r.text or "" for r in recs]
    units = [r.streams[stream].astype(np.int64) for r in recs]
    out: dict[str, Any] = {"n_utts": len(recs)}
    t0 = time.perf_counter()

    def retokenize(wavs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        tok = gen.speech_tokenizer
        ok = [
            w
            if len(w) >= tok.min_samples * gen.sample_rate / tok.sample_rate + 1
            else np.zeros(int(gen.sample_rate * 0.1), np.float32)
            for w in wavs
        ]
        res = tok.encode(ok, sample_rate=gen.sample_rate)
        dur = res.durations or [torch.ones_like(x) for x in res.ids]
        return [x.numpy() for x in res.ids], [d.numpy() for d in dur]

    def asr(unit_lists: list[np.ndarray]) -> list[str]:
        return [r.text or "" for r in gen.generate("asr", unit_lists, batch_size=batch_size)]

    if "asr" in tasks and recs:
        hyps = asr(units)
        out.update(
            asr_wer=wer(texts, hyps),
            asr_cer=cer(texts, hyps),
            asr_examples=[{"ref": r, "hyp": h} for r, h in zip(texts[:5], hyps[:5], strict=False)],
        )
    if "resynth" in tasks and recs:
        durs = [r.durations.get(stream, np.ones_like(u)) for r, u in zip(recs, units, strict=True)]
        wavs = gen.decode(units, durs)
        re_units, re_durs = retokenize(wavs)
        out["resynth_unit_error"] = unit_edit_error(units, re_units)
        out["resynth_frame_error"] = frame_error(
            [np.repeat(u, d) for u, d in zip(units, durs, strict=True)],
            [np.repeat(u, d) for u, d in zip(re_units, re_durs, strict=True)],
        )
    if "tts" in tasks and recs:
        res = gen.generate("tts", texts, batch_size=batch_size)
        wavs = [r.audio if r.audio is not None else np.zeros(1600, np.float32) for r in res]
        re_units, _ = retokenize(wavs)
        hyps = asr(re_units)
        out.update(tts_roundtrip_wer=wer(texts, hyps), tts_hit_limit=float(np.mean([r.hit_limit for r in res])),
                   tts_seconds_per_utt=float(np.mean([len(w) / gen.sample_rate for w in wavs])))  # fmt: skip
    if "s2s" in tasks:
        pairs = [
            (r, by_id[r.meta["s2s_target"]]) for r in recs if r.meta.get("s2s_target") in by_id
        ]
        if pairs:
            res = gen.generate(
                "s2s", [q.streams[stream].astype(np.int64) for q, _ in pairs], batch_size=batch_size
            )
            wavs = [r.audio if r.audio is not None else np.zeros(1600, np.float32) for r in res]
            re_units, _ = retokenize(wavs)
            hyps = asr(re_units)
            refs = [a.text or "" for _, a in pairs]
            out.update(
                s2s_exact_match=float(
                    np.mean([normalize(h) == normalize(r) for r, h in zip(refs, hyps, strict=True)])
                ),
                s2s_wer=wer(refs, hyps),
                s2s_pairs=len(pairs),
            )
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(results: dict[str, dict[str, Any]]) -> str:
    keys = [
        "n_utts",
        "asr_wer",
        "asr_cer",
        "tts_roundtrip_wer",
        "resynth_unit_error",
        "resynth_frame_error",
        "s2s_exact_match",
        "s2s_wer",
    ]
    cols = [k for k in keys if any(k in r for r in results.values())]
    lines = ["| store | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in results.items():
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_eval(args: EvalArgs) -> dict[str, Any]:
    import torch

    from tokunify.generate.generator import Generator

    if not args.store:
        raise ValueError("eval needs at least one --store")
    torch.manual_seed(args.seed)
    gen = Generator(args.bundle, device=args.device)
    results = {}
    for s in args.store:
        store = TokenStore(s)
        store.check_streams(
            {
                gen.stream: (
                    "units" if gen.vocab.stream(gen.stream).kind == "units" else "codec",
                    gen.vocab.stream(gen.stream).size,
                    gen.vocab.stream(gen.stream).codebooks,
                )
            }
        )
        results[Path(s).name] = evaluate_store(
            gen, store, args.max_utts, list(args.tasks), args.batch_size
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "eval.md").write_text(table)
    print(table)
    return results
