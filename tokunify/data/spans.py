"""`tokunify synth-interleave`: synthetic interleaved text/speech documents from plain text.

The GLM-4-Voice pre-training recipe: a text corpus is cut into spans at word boundaries; the speech
spans get speech units from a text-to-token model (the bundle's TTS task: constrained decoding,
KV cache, large length-sorted batches); nothing is vocoded. The documents land in a token store
(:mod:`tokunify.data.store.job`: resumable, sharded, atomic chunks, rejects) whose records hold

- ``text``: the document (words joined by single spaces) and ``text_ids``;
- ``stream.NAME``: the units of every speech span, concatenated in document order;
- ``words``: ``(word, start, end)`` where start/end are *positions in that unit stream divided by
  the stream's frame rate* (no audio exists): a word of a text span has ``start == end``, the words
  of a speech span share its units (one at least each, the rest by character count);
- ``meta``: ``doc_kind: synth_interleave`` and ``spans``: ``[first_word, stop_word, modality,
  first_unit, stop_unit, wer]`` per span, plus ``dropped`` speech spans (turned back into text)
  with the reason.

The task ``synth_interleave`` (:class:`tokunify.tasks.SynthInterleaveFormat`) trains on them.
This module holds the parts that need no model (span policies, input documents, statistics for
``inspect``); the job itself is :mod:`tokunify.synth.interleave`.

Span policy (:class:`SpanPolicy`): speech span lengths (words) are drawn from a registered
distribution (``poisson``: 1 + Poisson(mean - 1); ``uniform``: integers in ``[min, max]``), text
spans from the same distribution scaled by ``(1 - r) / r`` so that a share ``r``
(``--speech-ratio``) of the words is speech on average; the first span is text, speech, or either.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from tokunify.data.store import Reject, TokenStore

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


SPAN_POLICIES: dict[str, type[SpanPolicy]] = {}
"""The span-policy registry: kind -> class, filled from the explicit list below; change it through
:func:`register_policy`."""


def register_policy(cls: type[SpanPolicy]) -> type[SpanPolicy]:
    if cls.kind in SPAN_POLICIES and SPAN_POLICIES[cls.kind] is not cls:
        raise ValueError(f"span policy {cls.kind!r} is already registered")
    SPAN_POLICIES[cls.kind] = cls
    return cls


for _policy in (PoissonSpans, UniformSpans):
    register_policy(_policy)


def make_policy(kind: str, **settings: Any) -> SpanPolicy:
    """The registered policy ``kind`` with the settings it has fields for."""
    if kind not in SPAN_POLICIES:
        raise ValueError(f"unknown span policy {kind!r}; known: {sorted(SPAN_POLICIES)}")
    cls = SPAN_POLICIES[kind]
    return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__})


# ---- input documents ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Doc:
    """One input line: its index in the file, its record id and its words."""

    index: int
    id: str
    words: tuple[str, ...]


Row = Doc | Reject


def read_documents(path: str | Path, text_field: str, max_words: int) -> list[Row]:
    """Every line of ``path`` in order: a :class:`Doc`, or a :class:`Reject` (invalid UTF-8, empty,
    over-long, bad JSON, missing field, duplicate id). JSONL is recognised by the
    ``.jsonl``/``.json`` suffix."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such text corpus")
    jsonl = p.suffix in (".jsonl", ".json")
    rows: list[Row] = []
    seen: set[str] = set()
    with p.open("rb") as f:  # lines decoded one by one: a bad byte rejects its line only
        for i, raw in enumerate(f):
            rid = f"{p.stem}-{i:09d}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                rows.append(Reject(rid, str(p), f"line {i + 1}: not UTF-8 ({e.reason} at byte {e.start} of the line)"))  # fmt: skip
                continue
            text = line
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


def word_bounds(words: tuple[str, ...], n_units: int) -> np.ndarray:
    """``[k + 1]`` unit positions of ``k`` words sharing ``n_units >= k`` units: one each, the
    rest by character count. ``bounds[i]:bounds[i + 1]`` are word ``i``'s units."""
    k = len(words)
    chars = np.cumsum([0] + [len(w) for w in words], dtype=np.float64)
    extra = np.floor(chars / chars[-1] * (n_units - k) + 1e-9).astype(np.int64)
    return np.arange(k + 1) + extra


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
