"""`tokunify synth-interleave`: the job (see :mod:`tokunify.data.spans` for the recipe,
the span policies, the record layout and the statistics).

documents -> chunks (:mod:`tokunify.data.store.job`) -> per chunk: span plans -> every speech span of
the chunk through the bundle's text -> speech task in length-sorted batches (:class:`Generator`:
ModalityConstraint, KV cache; nothing vocoded) -> optional ASR re-reading of a sample (WER, drops)
-> one record per document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tokunify.core.fsio import content_hash
from tokunify.data.spans import (
    DOC_KIND,
    SPEECH,
    TEXT,
    TEXT_TOKENS_PER_WORD,
    Doc,
    Row,
    SpanPolicy,
    format_span_stats,
    make_policy,
    read_documents,
    span_stats,
    word_bounds,
)
from tokunify.data.store import Record, Reject, StoreMeta, StreamInfo, TokenStore, rows_digest
from tokunify.data.store.job import JobOptions, report_store, run_store_job
from tokunify.eval.generative import wer
from tokunify.generate.generator import Generator
from tokunify.model.bundle import load as load_bundle
from tokunify.tasks import find_task
from tokunify.tokenizers.identity import text_tokenizer_hash, tokenizer_hash


# ---- arguments ----------------------------------------------------------------------------------
@dataclass
class SynthInterleaveArgs:
    """Turn a text corpus into synthetic interleaved text/speech documents (GLM-4-Voice recipe):
    speech spans get units from the bundle's TTS task; nothing is vocoded. Resumable and sharded."""

    text: str = field(metadata={"positional": True})
    """Plain text (one document per line) or JSONL (one object per line, text in --text-field)."""
    bundle: str
    """TTS bundle (its text -> speech task generates the units; its ASR task verifies them)."""
    out: str
    """Store directory (created; an existing one with the same settings is resumed)."""
    stream: str | None = None
    """Speech stream (default: the bundle's first)."""
    spans: Literal["poisson", "uniform"] = "poisson"
    """Span-length distribution of speech spans (in words)."""
    span_mean: float = 3.0
    """poisson: mean words per speech span."""
    span_min: int = 1
    """uniform: fewest words per speech span."""
    span_max: int = 5
    """uniform: most words per speech span."""
    speech_ratio: float = 0.5
    """Target share of the words spoken."""
    start: Literal["text", "speech", "random"] = "random"
    """Modality of each document's first span."""
    text_field: str = "text"
    """JSONL: the field holding the document (an `id` field, if any, names the record)."""
    max_words: int = 512
    """Longer documents are rejected."""
    chunk_size: int = 1000
    """Documents per shard."""
    batch_size: int = 64
    """Speech spans per TTS batch (spans are sorted by length first)."""
    max_units_per_word: int = 40
    """Generation limit per span: this many frames per word (a span that reaches it is dropped)."""
    temperature: float | None = None
    """TTS sampling temperature (default: the task's preset)."""
    greedy: bool = False
    """Greedy TTS decoding instead of the preset's sampling."""
    verify_fraction: float = 0.0
    """Share of speech spans the bundle's ASR re-reads (WER reported and stored per span)."""
    max_wer: float | None = None
    """Verified spans above this WER are dropped (turned back into text)."""
    seed: int = 0
    """Seed of the spans, the sampling and the verified sample."""
    workers: int = 1
    """Local worker processes."""
    shard: str | None = None
    """This job's slice i/N of the chunks (default: from torchrun/SLURM, else 0/1)."""
    device: str = "cpu"
    """Generation device; `cuda` means cuda:LOCAL_RANK under a launcher."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Model dtype for generation."""
    progress: bool = True
    """Show a progress bar."""

    def policy(self) -> SpanPolicy:
        return make_policy(self.spans, speech_ratio=self.speech_ratio, start=self.start,
                           mean=self.span_mean, min=self.span_min, max=self.span_max)  # fmt: skip

    def check(self) -> None:
        self.policy()
        if not 0.0 <= self.verify_fraction <= 1.0:
            raise ValueError(f"--verify-fraction must lie in [0, 1], got {self.verify_fraction}")
        if self.max_wer is not None and self.verify_fraction <= 0:
            raise ValueError(
                "--max-wer needs --verify-fraction > 0 (only verified spans have a WER)"
            )
        for name in ("max_words", "chunk_size", "batch_size", "max_units_per_word", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")

    def settings(self) -> dict[str, Any]:
        """What the store records and a resumed job must match."""
        return {
            "policy": self.policy().to_dict(),
            "max_words": self.max_words,
            "max_units_per_word": self.max_units_per_word,
            "batch_size": self.batch_size,
            "decoding": self.decoding(),
            "verify_fraction": self.verify_fraction,
            "max_wer": self.max_wer,
            "seed": self.seed,
            "text_field": self.text_field,
        }

    def decoding(self) -> dict[str, Any]:
        """Overrides of the TTS task's decoding preset."""
        if self.greedy:
            return {"do_sample": False}
        return {} if self.temperature is None else {"temperature": self.temperature}


# ---- the store's metadata ----------------------------------------------------------------------
def build_meta(args: SynthInterleaveArgs, rows: list[Row]) -> StoreMeta:
    """``store.json``: the bundle's stream (its tokenizer hash, so `train` accepts the store with
    that bundle), its text tokenizer, ``extra.synth_interleave``: the bundle's path (and the
    statistics once complete), and the provenance a resumed job must match: the documents'
    content (``manifest``), ``synth_interleave``: the bundle's content hash and the settings."""

    b = load_bundle(args.bundle, with_model=False)
    stream = args.stream or b.vocab.default_stream
    spec = b.vocab.stream(stream)
    cfg = b.spec.speech_tokenizers.get(stream)
    if cfg is None:
        raise ValueError(f"{args.bundle}: no speech tokenizer recorded for stream {stream!r}")
    info = StreamInfo(
        name=stream,
        kind=spec.kind,
        cardinality=spec.size,
        num_codebooks=spec.codebooks,
        frame_rate=float(cfg.get("frame_rate") or b.speech_tokenizer(stream).frame_rate),
        dedup=False,  # generated units have no durations: each counts as one position
        tokenizer=dict(cfg),
        hash=cfg.get("hash") or tokenizer_hash(cfg, base_dir=args.bundle),
    )
    text = {"source": str(Path(args.bundle).resolve()),
            "hash": text_tokenizer_hash(b.tokenizer, b.vocab.text_size), "size": len(b.tokenizer)}  # fmt: skip
    provenance = {
        "manifest": rows_digest(rows),
        DOC_KIND: {"bundle_hash": content_hash(args.bundle), **args.settings()},
    }
    return StoreMeta(streams={stream: info}, text_tokenizer=text, manifest=str(Path(args.text).resolve()),
                     manifest_rows=len(rows), chunk_size=args.chunk_size,
                     extra={DOC_KIND: {"bundle": str(Path(args.bundle).resolve())}},
                     provenance=provenance)  # fmt: skip


# ---- one chunk ----------------------------------------------------------------------------------
@dataclass
class SpeechSpan:
    """A speech span waiting for (then holding) its units."""

    doc: int  # position of the document in the chunk
    span: int  # position of the span in the document
    words: tuple[str, ...]
    units: np.ndarray | None = None  # [T] or [n_q, T] local ids
    wer: float | None = None
    dropped: str | None = None  # why it went back to text

    @property
    def text(self) -> str:
        return " ".join(self.words)


class SynthWorker:
    """Loads the TTS bundle once; turns chunks of documents into records (``process``)."""

    def __init__(self, args: SynthInterleaveArgs, meta: StoreMeta, device: str = "cpu"):
        import torch

        self.args, self.meta = args, meta
        self.policy = args.policy()
        self.stream = next(iter(meta.streams))
        self.frame_rate = meta.streams[self.stream].frame_rate
        dtype = getattr(torch, args.dtype)
        self.gen = Generator(args.bundle, device=device, dtype=dtype, stream=self.stream)
        self.books = self.gen.vocab.stream(self.stream).codebooks  # codec: tokens per frame
        self.tts = find_task("text", "speech", self.gen.vocab)
        self.asr = find_task("speech", "text", self.gen.vocab) if args.verify_fraction > 0 else None

    def process(self, chunk: int, rows: list[Row]) -> tuple[list[Record], list[Reject]]:
        import torch

        torch.manual_seed(int(np.random.default_rng([self.args.seed, chunk]).integers(2**31)))
        docs = [r for r in rows if isinstance(r, Doc)]
        rejects = [r for r in rows if isinstance(r, Reject)]
        plans = [self.policy.spans(len(d.words), np.random.default_rng([self.args.seed, d.index])) for d in docs]  # fmt: skip
        speech = [
            SpeechSpan(i, j, d.words[a:b])
            for i, (d, plan) in enumerate(zip(docs, plans, strict=True))
            for j, (a, b, m) in enumerate(plan)
            if m == SPEECH
        ]
        self.synthesize(speech)
        if self.asr is not None:
            pick = np.random.default_rng([self.args.seed, chunk, 1]).random(len(speech))
            self.verify([s for s, u in zip(speech, pick, strict=True) if u < self.args.verify_fraction and s.dropped is None])  # fmt: skip
        by_doc: dict[int, dict[int, SpeechSpan]] = {}
        for s in speech:
            by_doc.setdefault(s.doc, {})[s.span] = s
        records = [self.record(d, plan, by_doc.get(i, {})) for i, (d, plan) in enumerate(zip(docs, plans, strict=True))]  # fmt: skip
        return records, rejects

    def synthesize(self, spans: list[SpeechSpan]) -> None:
        """Units for every span: longest first, ``batch_size`` spans per ``generate`` call, each
        batch limited to ``max_units_per_word`` units per word of its longest span."""
        order = sorted(spans, key=lambda s: (len(s.text), len(s.words)), reverse=True)
        bs = self.args.batch_size
        for a in range(0, len(order), bs):
            batch = order[a : a + bs]
            limit = self.args.max_units_per_word * max(len(s.words) for s in batch) * self.books + 1
            res = self.gen.generate(self.tts, [s.text for s in batch], batch_size=len(batch),
                                    vocode=False, max_new_tokens=limit, **self.args.decoding())  # fmt: skip
            for s, r in zip(batch, res, strict=True):
                n = 0 if r.units is None else int(r.units.shape[-1])
                if r.hit_limit:
                    s.dropped = f"no end of speech within {limit} tokens"
                elif n < len(s.words):
                    s.dropped = f"{n} units for {len(s.words)} words"
                else:
                    s.units = np.asarray(r.units, dtype=np.int64)

    def verify(self, spans: list[SpeechSpan]) -> None:
        """The bundle's ASR re-reads the spans' units; WER per span; ``max_wer`` drops."""

        bs = self.args.batch_size
        order = sorted(spans, key=lambda s: len(s.words), reverse=True)
        heard = []
        for a in range(0, len(order), bs):
            batch = order[a : a + bs]
            limit = TEXT_TOKENS_PER_WORD * max(len(s.words) for s in batch) + 2
            heard += self.gen.generate(self.asr, [s.units for s in batch], batch_size=len(batch),
                                       vocode=False, max_new_tokens=limit)  # fmt: skip
        spans = order
        for s, r in zip(spans, heard, strict=True):
            s.wer = wer([s.text], [r.text or ""])
            if self.args.max_wer is not None and s.wer > self.args.max_wer:
                s.dropped = f"wer {s.wer:.3f} > --max-wer {self.args.max_wer}"

    def record(
        self, d: Doc, plan: list[tuple[int, int, str]], speech: dict[int, SpeechSpan]
    ) -> Record:
        """The store record of one document (dropped speech spans become text)."""
        tok = self.gen.bundle.tokenizer
        units: list[np.ndarray] = []
        words: list[tuple[str, float, float]] = []
        spans: list[list[Any]] = []
        dropped: list[list[Any]] = []
        pos = 0
        for j, (a, b, m) in enumerate(plan):
            s = speech.get(j)
            if m == SPEECH and s is not None and s.dropped is None and s.units is not None:
                n = int(s.units.shape[-1])
                bounds = pos + word_bounds(s.words, n)
                words += [(w, bounds[i] / self.frame_rate, bounds[i + 1] / self.frame_rate) for i, w in enumerate(s.words)]  # fmt: skip
                spans.append([a, b, SPEECH, pos, pos + n, s.wer])
                units.append(s.units)
                pos += n
                continue
            if s is not None:
                dropped.append([a, b, s.dropped, s.wer])
            t = pos / self.frame_rate
            words += [(w, t, t) for w in d.words[a:b]]
            if spans and spans[-1][2] == TEXT:  # a dropped span joins the text around it
                spans[-1][1] = b
            else:
                spans.append([a, b, TEXT, pos, pos, None])
        spec = self.gen.vocab.stream(self.stream)
        empty = np.zeros((spec.codebooks, 0) if spec.kind == "codec" else 0, np.int64)
        stream = np.concatenate(units, axis=-1) if units else empty
        text = " ".join(d.words)
        ids = np.asarray(tok.encode(text, add_special_tokens=False), dtype=np.uint32)
        return Record(id=d.id, speaker=None, text=text, seconds=0.0, text_ids=ids,
                      streams={self.stream: stream.astype(np.uint32)}, durations={}, words=words,
                      meta={"doc_kind": DOC_KIND, "spans": spans, "dropped": dropped})  # fmt: skip


# ---- the job ------------------------------------------------------------------------------------
def run_synth_interleave(args: SynthInterleaveArgs) -> dict[str, Any]:
    from functools import partial

    args.check()
    root = Path(args.out)
    rows = read_documents(args.text, args.text_field, args.max_words)
    meta = build_meta(args, rows)
    opts = JobOptions(shard=args.shard, workers=args.workers, device=args.device,
                      progress=args.progress, name="synth-interleave", unit="doc")  # fmt: skip
    res = run_store_job(root, meta, rows, partial(SynthWorker, args, meta), opts)
    summary: dict[str, Any] = res.summary()
    launch = res.launch
    who = f"slice {launch.index}/{launch.count} ({launch.launcher}): " if launch.distributed else ""
    print(f"{who}wrote {summary['rows']} synthetic interleaved documents into {summary['chunks']} shards, "
          f"{summary['rejects']} rejected (rejects-*.jsonl), in {res.elapsed_s:.1f} s; store {root}")  # fmt: skip
    if res.complete:
        stats = span_stats(TokenStore(root))
        full = StoreMeta.load(root)
        full.extra[DOC_KIND]["stats"] = stats  # the kept share and WER, for whoever reads the store
        full.save(root)
        summary["stats"] = stats
        print(format_span_stats(stats))
    if launch.distributed:
        report_store(root, meta, res.complete)
    return summary
