"""`tokunify synth-interleave`: synthetic interleaved text/speech documents from plain text.

The GLM-4-Voice pre-training recipe: a text corpus is cut into spans at word boundaries; the speech
spans get speech units from a text-to-token model (the bundle's TTS task: constrained decoding,
KV cache, large length-sorted batches); nothing is vocoded. The documents land in a token store
(:mod:`tokunify.store.job`: resumable, sharded, atomic chunks, rejects) whose records hold

- ``text``: the document (words joined by single spaces) and ``text_ids``;
- ``stream.NAME``: the units of every speech span, concatenated in document order;
- ``words``: ``(word, start, end)`` where start/end are *positions in that unit stream divided by
  the stream's frame rate* (no audio exists): a word of a text span has ``start == end``, the words
  of a speech span share its units (one at least each, the rest by character count);
- ``meta``: ``doc_kind: synth_interleave`` and ``spans``: ``[first_word, stop_word, modality,
  first_unit, stop_unit, wer]`` per span, plus ``dropped`` speech spans (turned back into text)
  with the reason.

The task ``synth_interleave`` (:class:`tokunify.formats.SynthInterleaveFormat`) trains on them.

Span policy (:class:`SpanPolicy`): speech span lengths (words) are drawn from a registered
distribution (``poisson``: 1 + Poisson(mean - 1); ``uniform``: integers in ``[min, max]``), text
spans from the same distribution scaled by ``(1 - r) / r`` so that a share ``r``
(``--speech-ratio``) of the words is speech on average; the first span is text, speech, or either.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from tokunify.store import Record, Reject, StoreMeta, StreamInfo, TokenStore
from tokunify.store.job import JobOptions, report_store, run_store_job

DOC_KIND = "synth_interleave"
TEXT_TOKENS_PER_WORD = 4  # verification: ASR output limit per word of the span
SPEECH, TEXT = "speech", "text"


# ---- span policies ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpanPolicy:
    """How a document is cut into alternating text and speech spans at word boundaries."""

    kind: ClassVar[str]
    speech_ratio: float = 0.5
    """Target share of words in speech spans (0: text only, 1: speech only)."""
    start: Literal["text", "speech", "random"] = "random"
    """Modality of the first span."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.speech_ratio <= 1.0:
            raise ValueError(f"--speech-ratio must lie in [0, 1], got {self.speech_ratio}")
        if self.start not in ("text", "speech", "random"):
            raise ValueError(f"--start must be text, speech or random, got {self.start!r}")

    def draw(self, rng: np.random.Generator) -> float:
        """One speech-span length in words (a real number >= 1; text spans scale it)."""
        raise NotImplementedError

    def spans(self, n_words: int, rng: np.random.Generator) -> list[tuple[int, int, str]]:
        """``(start, stop, "text" | "speech")`` spans covering ``range(n_words)``, alternating."""
        r = self.speech_ratio
        if r <= 0.0 or r >= 1.0:
            return [(0, n_words, SPEECH if r >= 1.0 else TEXT)] if n_words else []
        first = self.start if self.start != "random" else (SPEECH if rng.random() < r else TEXT)
        out: list[tuple[int, int, str]] = []
        modality, i = first, 0
        while i < n_words:
            length = self.draw(rng) * (1.0 if modality == SPEECH else (1.0 - r) / r)
            k = max(1, round(length))
            out.append((i, min(i + k, n_words), modality))
            i += k
            modality = TEXT if modality == SPEECH else SPEECH
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


SPAN_POLICIES: dict[str, type[SpanPolicy]] = {}


def register_policy(cls: type[SpanPolicy]) -> type[SpanPolicy]:
    SPAN_POLICIES[cls.kind] = cls
    return cls


@register_policy
@dataclass(frozen=True)
class PoissonSpans(SpanPolicy):
    """Speech spans of ``1 + Poisson(mean - 1)`` words."""

    kind: ClassVar[str] = "poisson"
    mean: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mean < 1.0:
            raise ValueError(f"--span-mean must be >= 1, got {self.mean}")

    def draw(self, rng: np.random.Generator) -> float:
        return 1.0 + float(rng.poisson(self.mean - 1.0))


@register_policy
@dataclass(frozen=True)
class UniformSpans(SpanPolicy):
    """Speech spans of ``min..max`` words, uniformly."""

    kind: ClassVar[str] = "uniform"
    min: int = 1
    max: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.min <= self.max:
            raise ValueError(
                f"--span-min/--span-max need 1 <= min <= max, got {self.min}, {self.max}"
            )

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.integers(self.min, self.max + 1))


def make_policy(kind: str, **settings: Any) -> SpanPolicy:
    """The registered policy ``kind`` with the settings it has fields for."""
    if kind not in SPAN_POLICIES:
        raise ValueError(f"unknown span policy {kind!r}; known: {sorted(SPAN_POLICIES)}")
    cls = SPAN_POLICIES[kind]
    return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__})


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
    """Generation limit per span: this many units per word (a span that reaches it is dropped)."""
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


# ---- input documents ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Doc:
    """One input line: its index in the file, its record id and its words."""

    index: int
    id: str
    words: tuple[str, ...]


Row = Doc | Reject


def read_documents(path: str | Path, text_field: str, max_words: int) -> list[Row]:
    """Every line of ``path`` in order: a :class:`Doc`, or a :class:`Reject` (empty, over-long, bad
    JSON, missing field, duplicate id). JSONL is recognised by the ``.jsonl``/``.json`` suffix."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such text corpus")
    jsonl = p.suffix in (".jsonl", ".json")
    rows: list[Row] = []
    seen: set[str] = set()
    with p.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            rid, text = f"{p.stem}-{i:09d}", line
            if jsonl:
                if not line.strip():
                    rows.append(Reject(rid, str(p), f"line {i + 1}: empty line"))
                    continue
                try:
                    obj = json.loads(line)
                    text = obj[text_field]
                    rid = str(obj.get("id", rid))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                    rows.append(Reject(rid, str(p), f"line {i + 1}: no {text_field!r} text ({type(e).__name__}: {e})"))  # fmt: skip
                    continue
                if not isinstance(text, str):
                    rows.append(
                        Reject(rid, str(p), f"line {i + 1}: {text_field!r} is not a string")
                    )
                    continue
            words = tuple(text.split())
            if rid in seen:
                rows.append(Reject(rid, str(p), f"line {i + 1}: duplicate id"))
            elif not words:
                rows.append(Reject(rid, str(p), f"line {i + 1}: empty document"))
            elif len(words) > max_words:
                rows.append(Reject(rid, str(p), f"line {i + 1}: {len(words)} words > --max-words {max_words}"))  # fmt: skip
            else:
                seen.add(rid)
                rows.append(Doc(i, rid, words))
    return rows


# ---- the store's metadata -----------------------------------------------------------------------
def bundle_hash(path: str | Path) -> str:
    """Content hash of a bundle directory: every file's relative name and bytes."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def build_meta(args: SynthInterleaveArgs, n_rows: int) -> StoreMeta:
    """``store.json``: the bundle's stream (its tokenizer hash, so `train` accepts the store with
    that bundle), its text tokenizer, and ``extra.synth_interleave``: bundle hash and settings."""
    from tokunify.bundle import load as load_bundle
    from tokunify.tokenizers.identity import text_tokenizer_hash, tokenizer_hash

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
    extra = {
        DOC_KIND: {
            "bundle": str(Path(args.bundle).resolve()),
            "bundle_hash": bundle_hash(args.bundle),
            **args.settings(),
        }
    }
    return StoreMeta(streams={stream: info}, text_tokenizer=text, manifest=str(Path(args.text).resolve()),
                     manifest_rows=n_rows, chunk_size=args.chunk_size, extra=extra)  # fmt: skip


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


def word_bounds(words: tuple[str, ...], n_units: int) -> np.ndarray:
    """``[k + 1]`` unit positions of ``k`` words sharing ``n_units >= k`` units: one each, the
    rest by character count. ``bounds[i]:bounds[i + 1]`` are word ``i``'s units."""
    k = len(words)
    chars = np.cumsum([0] + [len(w) for w in words], dtype=np.float64)
    extra = np.floor(chars / chars[-1] * (n_units - k) + 1e-9).astype(np.int64)
    return np.arange(k + 1) + extra


class SynthWorker:
    """Loads the TTS bundle once; turns chunks of documents into records (``process``)."""

    def __init__(self, args: SynthInterleaveArgs, meta: StoreMeta, device: str = "cpu"):
        import torch

        from tokunify.formats import find_task
        from tokunify.generate.generator import Generator

        self.args, self.meta = args, meta
        self.policy = args.policy()
        self.stream = next(iter(meta.streams))
        self.frame_rate = meta.streams[self.stream].frame_rate
        dtype = getattr(torch, args.dtype)
        self.gen = Generator(args.bundle, device=device, dtype=dtype, stream=self.stream)
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
            limit = self.args.max_units_per_word * max(len(s.words) for s in batch) + 1
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
        from tokunify.generate.evaluate import wer

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
def check_resume(root: Path, meta: StoreMeta) -> None:
    """An existing store must come from the same bundle and settings (the fingerprint alone does
    not cover them)."""
    from tokunify.store.layout import META_FILE

    if not (root / META_FILE).exists():
        return
    old = StoreMeta.load(root).extra.get(DOC_KIND)
    new = json.loads(json.dumps(meta.extra[DOC_KIND]))
    if old != new:
        diff = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
        raise ValueError(f"{root}: exists with other synth-interleave settings ({', '.join(diff)}); use a new --out")  # fmt: skip


def run_synth_interleave(args: SynthInterleaveArgs) -> dict[str, Any]:
    from functools import partial

    args.check()
    root = Path(args.out)
    rows = read_documents(args.text, args.text_field, args.max_words)
    meta = build_meta(args, len(rows))
    check_resume(root, meta)
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


# ---- statistics (also `tokunify inspect`) -------------------------------------------------------
def span_stats(store: TokenStore) -> dict[str, Any]:
    """Speech ratio, span lengths, units per word and QC of the synthetic documents of a store."""
    words = speech_words = 0
    speech_len: list[int] = []
    text_len: list[int] = []
    units = 0
    wers: list[float] = []
    dropped: dict[str, int] = {}
    docs = 0
    for r in store:
        if (r.meta or {}).get("doc_kind") != DOC_KIND:
            continue
        docs += 1
        for a, b, m, u0, u1, w in r.meta.get("spans", []):
            words += b - a
            if m == SPEECH:
                speech_words += b - a
                speech_len.append(b - a)
                units += u1 - u0
                if w is not None:
                    wers.append(w)
            else:
                text_len.append(b - a)
        for _, _, why, w in r.meta.get("dropped", []):
            reason = re.sub(r"[\d.]+", "N", why or "")
            dropped[reason] = dropped.get(reason, 0) + 1
            if w is not None:
                wers.append(w)
    n_dropped = sum(dropped.values())
    generated = len(speech_len) + n_dropped

    def mean(xs: list[int] | list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {
        "documents": docs,
        "words": words,
        "speech_ratio": speech_words / words if words else 0.0,
        "speech_spans": len(speech_len),
        "text_spans": len(text_len),
        "speech_span_words_mean": mean(speech_len),
        "text_span_words_mean": mean(text_len),
        "speech_units": units,
        "units_per_word": units / speech_words if speech_words else None,
        "verified_spans": len(wers),
        "verified_wer_mean": mean(wers),
        "dropped_spans": n_dropped,
        "dropped_by_reason": dropped,
        "kept_share": len(speech_len) / generated if generated else None,
    }


def format_span_stats(s: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        f"synthetic interleaved documents: {s['documents']}, {s['words']} words",
        f"  speech ratio {f(s['speech_ratio'])} (of words); spans: {s['speech_spans']} speech "
        f"(mean {f(s['speech_span_words_mean'])} words), {s['text_spans']} text (mean {f(s['text_span_words_mean'])} words)",
        f"  units: {s['speech_units']}, {f(s['units_per_word'])} per spoken word",
        f"  QC: {s['verified_spans']} spans verified by ASR, mean WER {f(s['verified_wer_mean'])}; "
        f"{s['dropped_spans']} dropped {s['dropped_by_reason'] or ''}; kept share {f(s['kept_share'])}",
    ]  # fmt: skip
    return "\n".join(lines)
