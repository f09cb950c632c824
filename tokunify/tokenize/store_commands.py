"""`tokunify merge-stores` and `inspect`: store-level commands that need no tokenizer run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.core.fsio import atomic_write
from tokunify.data.spans import format_span_stats, span_stats
from tokunify.data.store.layout import META_FILE, StoreError, StoreMeta, chunk_files, done_chunks
from tokunify.data.store.reader import TokenStore
from tokunify.tokenizers.text import load_text_tokenizer


@dataclass
class MergeArgs:
    """Join the slices of a sharded tokenize job (same tokenizers and manifest) into one store."""

    out: str = field(metadata={"positional": True})
    """Merged store directory."""
    stores: list[str] = field(default_factory=list, metadata={"positional": True})
    """Slice stores to join."""


def run_merge(args: MergeArgs) -> Path:
    if not args.stores:
        raise ValueError("merge-stores needs at least one input store")
    metas = [StoreMeta.load(s) for s in args.stores]
    fp = metas[0].fingerprint()
    for s, m in zip(args.stores, metas, strict=True):
        diff = metas[0].differences(m)
        if diff:
            raise StoreError(
                f"{s}: made from other inputs or settings than {args.stores[0]}: {'; '.join(diff)}; cannot merge"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / META_FILE).exists() and StoreMeta.load(out).fingerprint() != fp:
        diff = "; ".join(StoreMeta.load(out).differences(metas[0]))
        raise StoreError(f"{out}: exists, made from other inputs or settings: {diff}")
    metas[0].save(out)
    seen: dict[int, str] = {}
    for s in args.stores:
        for chunk in done_chunks(s):
            if chunk in seen:
                raise StoreError(f"chunk {chunk} is in both {seen[chunk]} and {s}")
            seen[chunk] = s
            for src, dst in zip(chunk_files(s, chunk), chunk_files(out, chunk), strict=True):
                atomic_write(dst, lambda p, src=src: shutil.copy2(src, p))  # stats last
    missing = sorted(set(range(metas[0].num_chunks)) - set(seen))
    print(
        f"merged {len(seen)} chunks from {len(args.stores)} stores into {out}"
        + (f"; {len(missing)} chunks still missing" if missing else "")
    )
    return out


@dataclass
class InspectArgs:
    """Print counts, hours, per-stream token statistics and a few decoded examples of a store."""

    store: str = field(metadata={"positional": True})
    """Store directory."""
    examples: int = 3
    """Examples to print."""


def stream_stats(store: TokenStore) -> dict[str, dict[str, float]]:
    stats: dict[str, dict[str, float]] = {}
    for name, info in store.meta.streams.items():
        counts = np.zeros(info.cardinality, dtype=np.int64)
        lengths = []
        for i in range(len(store)):
            ids = store[i].streams[name]
            lengths.append(ids.shape[-1])
            counts += np.bincount(ids.reshape(-1), minlength=info.cardinality)[: info.cardinality]
        p = counts[counts > 0] / max(counts.sum(), 1)
        lengths_a = np.asarray(lengths, dtype=np.float64)
        stats[name] = {
            "tokens": float(counts.sum()),
            "mean_len": float(lengths_a.mean()) if len(lengths_a) else 0.0,
            "max_len": float(lengths_a.max()) if len(lengths_a) else 0.0,
            "tokens_per_s": float(counts.sum() / store.seconds) if store.seconds > 0 else np.nan,
            "used": float((counts > 0).sum()) / info.cardinality,
            "entropy_bits": float(-(p * np.log2(p)).sum()) if len(p) else 0.0,
        }
    return stats


def run_inspect(args: InspectArgs) -> dict[str, Any]:
    store = TokenStore(args.store, require_complete=False)
    m = store.meta
    print(
        f"store {store.root}: {len(store)} utterances, {store.seconds / 3600:.3f} h, {store.rejects} rejected"
    )
    print(
        f"  chunks {len(store.chunks)}/{m.num_chunks}"
        + (f" (missing {store.missing_chunks[:5]}...)" if store.missing_chunks else "")
    )
    stats = stream_stats(store)
    for name, info in m.streams.items():
        s = stats[name]
        shape = (
            f"{info.num_codebooks} x {info.cardinality}"
            if info.kind == "codec"
            else f"K={info.cardinality}"
        )
        print(
            f"  stream {name}: {info.tokenizer.get('kind')} {shape}, {info.frame_rate:g} frames/s, dedup={info.dedup}: "
            f"{s['tokens']:.0f} tokens, {s['mean_len']:.1f} per utt (max {s['max_len']:.0f}), "
            f"{s['tokens_per_s']:.1f} per audio s, {100 * s['used']:.0f}% of ids used, entropy {s['entropy_bits']:.2f} bits"
        )
    spans = None
    if "synth_interleave" in m.extra:  # documents of `tokunify synth-interleave`
        spans = span_stats(store)
        print(format_span_stats(spans))
    text_tok = None
    if m.text_tokenizer:
        try:
            text_tok = load_text_tokenizer(m.text_tokenizer["source"])
        except ValueError:
            text_tok = None
    for i in range(min(args.examples, len(store))):
        r = store[i]
        print(f"  [{r.id}] speaker={r.speaker} {r.seconds:.2f} s text={r.text!r}")
        if r.text_ids is not None:
            decoded = (
                text_tok.decode(r.text_ids.tolist())
                if text_tok is not None
                else "(text tokenizer not found)"
            )
            print(f"      text_ids {r.text_ids[:12].tolist()}... -> {decoded!r}")
        for name, ids in r.streams.items():
            d = r.durations.get(name)
            dur = f" durations {d[:12].tolist()}" if d is not None else ""
            print(f"      {name} {list(ids.shape)}: {ids.reshape(-1)[:16].tolist()}...{dur}")
    out = {"utterances": len(store), "hours": store.seconds / 3600, "streams": stats}
    return out if spans is None else {**out, "spans": spans}
