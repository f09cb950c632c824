"""Packing documents into fixed-length rows, with per-document positions and a block-causal mask.

A row holds whole documents back to back; only the tail is padding (when no pending document
fits). ``position_ids`` restart at 0 for every document, and the attention mask lets a token
see only earlier tokens *of its own document*. Documents longer than the row follow the
``long_documents`` policy of the :class:`Packer` (see :func:`fit_length`), counted in its state.

A document that hears speech through an encoder (a continuous stream) carries its audio as
:class:`AudioSpan` s, in the order of its placeholders; a packed row carries the spans of its
documents in order (``PackedBatch.audio``), so the step can encode them and fill the row's
placeholders (:func:`tokunify.model.speech_input.embed_inputs`). Splitting a long document slices
its spans with it: each piece keeps the frames of the placeholders it holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

IGNORE = -100
LongDocuments = Literal["split", "truncate", "drop"]


@dataclass(frozen=True)
class AudioSpan:
    """The audio of a run of placeholders: a segment of a file, and which of its encoder + adapter
    output frames the run takes (``[first, first + frames)``)."""

    path: str
    start: float | None
    end: float | None
    first: int
    frames: int

    @property
    def source(self) -> tuple[str, float | None, float | None]:
        """The audio itself (spans of one utterance share it: it is encoded once per batch)."""
        return self.path, self.start, self.end


@dataclass
class Doc:
    ids: np.ndarray  # [n] int64
    mask: np.ndarray  # [n] bool: training targets
    task: int  # index of the task, for per-task losses
    audio: tuple[AudioSpan, ...] = ()  # the audio of its placeholders, in order


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], IGNORE where not a target or padding
    position_ids: torch.Tensor  # [B, L]
    doc_ids: torch.Tensor  # [B, L], -1 on padding
    tasks: torch.Tensor  # [B, L] task index per token, -1 on padding
    audio: list[list[AudioSpan]] = field(default_factory=list)  # per row, its documents' spans

    def attention_mask(self) -> torch.Tensor:
        """``[B, 1, L, L]`` bool: causal within each document, nothing across documents or to padding."""
        d = self.doc_ids
        same = (d[:, :, None] == d[:, None, :]) & (d[:, None, :] >= 0)  # [B, L, L]
        causal = torch.ones(d.shape[1], d.shape[1], dtype=torch.bool, device=d.device).tril()
        # padding rows attend to themselves so softmax never sees an all-masked row
        eye = torch.eye(d.shape[1], dtype=torch.bool, device=d.device)
        return ((same & causal) | eye)[:, None]

    def bounds(self) -> list[list[tuple[int, int]]]:
        """Per row, the ``[start, end)`` of each document."""
        out = []
        for row in self.doc_ids.tolist():
            spans: list[tuple[int, int]] = []
            for i, d in enumerate(row):
                if d < 0:
                    break
                if spans and d == row[i - 1]:
                    spans[-1] = (spans[-1][0], i + 1)
                else:
                    spans.append((i, i + 1))
            out.append(spans)
        return out

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            *(
                t.to(device)
                for t in (self.input_ids, self.labels, self.position_ids, self.doc_ids, self.tasks)
            ),
            audio=self.audio,
        )

    @property
    def has_audio(self) -> bool:
        return any(self.audio)

    @property
    def num_tokens(self) -> int:
        return int((self.doc_ids >= 0).sum())


def pack(rows: list[list[Doc]], seq_len: int, pad_id: int) -> PackedBatch:
    """Lay out already-grouped documents (one list per row) into tensors."""
    b = len(rows)
    ids = np.full((b, seq_len), pad_id, dtype=np.int64)
    labels = np.full((b, seq_len), IGNORE, dtype=np.int64)
    pos = np.zeros((b, seq_len), dtype=np.int64)
    doc = np.full((b, seq_len), -1, dtype=np.int64)
    task = np.full((b, seq_len), -1, dtype=np.int64)
    audio: list[list[AudioSpan]] = [[] for _ in rows]
    for r, docs in enumerate(rows):
        at = 0
        for k, d in enumerate(docs):
            n = min(len(d.ids), seq_len - at)
            if n <= 0:
                break
            sl = slice(at, at + n)
            ids[r, sl] = d.ids[:n]
            labels[r, sl] = np.where(d.mask[:n], d.ids[:n], IGNORE)
            pos[r, sl] = np.arange(n)
            doc[r, sl] = k
            task[r, sl] = d.task
            audio[r] += d.audio
            at += n
    t = torch.from_numpy
    return PackedBatch(t(ids), t(labels), t(pos), t(doc), t(task), audio)


def slice_spans(spans: tuple[AudioSpan, ...], a: int, b: int) -> tuple[AudioSpan, ...]:
    """The frames ``[a, b)`` of a document's placeholder frames (its spans laid end to end)."""
    out, at = [], 0
    for s in spans:
        lo, hi = max(a, at), min(b, at + s.frames)
        if lo < hi:
            out.append(AudioSpan(s.path, s.start, s.end, s.first + lo - at, hi - lo))
        at += s.frames
    return tuple(out)


def _piece(doc: Doc, i: int, j: int, placeholders: np.ndarray | None) -> Doc:
    """``doc.ids[i:j]`` as a document, with the audio of the placeholders it holds."""
    audio: tuple[AudioSpan, ...] = ()
    if doc.audio and placeholders is not None:
        before = np.cumsum(np.isin(doc.ids, placeholders))  # [n] placeholders up to each id
        a = int(before[i - 1]) if i else 0
        audio = slice_spans(doc.audio, a, int(before[j - 1]))
    return Doc(doc.ids[i:j], doc.mask[i:j], doc.task, audio)


def fit_length(
    doc: Doc, seq_len: int, policy: LongDocuments, placeholders: np.ndarray | None = None
) -> list[Doc]:
    """A document as the rows-sized pieces the packer takes, under the long-document ``policy``.

    ``split`` (the default, as in pretraining recipes: every token is trained on once, none are
    lost) cuts a long document into consecutive ``seq_len`` pieces, each with its own positions
    from 0; pieces without a target token are left out. ``truncate`` keeps the first ``seq_len``
    tokens. ``drop`` leaves the document out. Short documents pass through unchanged.
    Example: 10 tokens, ``seq_len`` 4, split -> pieces of 4, 4 and 2 tokens. A document with audio
    needs the ``placeholders`` ids: each piece keeps the audio frames of its placeholders.
    """
    n = len(doc.ids)
    if n <= seq_len:
        return [doc]
    if policy == "drop":
        return []
    if policy == "truncate":
        return [_piece(doc, 0, seq_len, placeholders)]
    pieces = [_piece(doc, i, min(i + seq_len, n), placeholders) for i in range(0, n, seq_len)]
    return [p for p in pieces if p.mask[1:].any()]


class Packer:
    """Best-fit packing of ``rows`` rows of ``seq_len`` tokens from a pool of pending documents.

    The pool keeps ``pool`` documents drawn from the source; each row repeatedly takes the longest
    pooled document that still fits, and the pool refills as documents leave. Rows come out ~97%
    full where greedy in-order packing leaves ~20% padding. The pool is part of the resumable state.
    Documents longer than ``seq_len`` enter the pool as :func:`fit_length` makes them; ``counts``
    (part of the state) says how many were split, truncated or dropped.
    """

    def __init__(
        self,
        seq_len: int,
        pad_id: int,
        pool: int = 64,
        long_documents: LongDocuments = "split",
        placeholders: list[int] | None = None,
    ):
        self.seq_len, self.pad_id, self.pool_size = seq_len, pad_id, pool
        self.long_documents = long_documents
        self.placeholders = np.asarray(placeholders or [], dtype=np.int64)
        self.pool: list[Doc] = []
        self.counts = {"split": 0, "truncate": 0, "drop": 0}

    def _refill(self, source) -> None:  # type: ignore[no-untyped-def]
        while len(self.pool) < self.pool_size:
            d = source()
            pieces = fit_length(d, self.seq_len, self.long_documents, self.placeholders)
            if len(d.ids) > self.seq_len:
                self.counts[self.long_documents] += 1
            self.pool += pieces

    def next_batch(self, rows: int, source) -> tuple[PackedBatch, list[Doc]]:  # type: ignore[no-untyped-def]
        out: list[list[Doc]] = []
        used: list[Doc] = []
        for _ in range(rows):
            row: list[Doc] = []
            room = self.seq_len
            while True:
                self._refill(source)
                fits = [i for i, d in enumerate(self.pool) if min(len(d.ids), self.seq_len) <= room]
                if not fits:
                    break
                best = max(fits, key=lambda i: len(self.pool[i].ids))  # ties: the oldest
                d = self.pool.pop(best)
                row.append(d)
                room -= min(len(d.ids), self.seq_len)
            out.append(row)
            used += row
        return pack(out, self.seq_len, self.pad_id), used

    @property
    def pending(self) -> list[Doc]:
        return self.pool

    def state(self) -> dict:
        pool = [_doc_state(d) for d in self.pool]
        return {"pool": pool, "long_documents": dict(self.counts)}

    def load_state(self, state: dict | list[dict] | None) -> None:
        if isinstance(state, list):  # checkpoints written before long-document counting
            state = {"pool": state}
        state = state or {}
        self.pool = [
            Doc(np.asarray(s["ids"], np.int64), np.asarray(s["mask"], bool), int(s["task"]),
                tuple(AudioSpan(**a) for a in s.get("audio", [])))
            for s in state.get("pool", [])
        ]  # fmt: skip
        self.counts = {"split": 0, "truncate": 0, "drop": 0, **state.get("long_documents", {})}


def _doc_state(d: Doc) -> dict[str, Any]:
    out: dict[str, Any] = {"ids": d.ids.tolist(), "mask": d.mask.tolist(), "task": d.task}
    if d.audio:
        out["audio"] = [asdict(a) for a in d.audio]
    return out


def pack_docs(docs: list[Doc], seq_len: int, pad_id: int, rows: int) -> list[PackedBatch]:
    """All ``docs`` packed in order (first fit), as batches of ``rows`` rows: for evaluation."""
    grouped: list[list[Doc]] = [[]]
    fill = 0
    for d in docs:
        n = min(len(d.ids), seq_len)
        if grouped[-1] and fill + n > seq_len:
            grouped.append([])
            fill = 0
        grouped[-1].append(d)
        fill += n
    if not grouped[-1]:
        return []
    return [pack(grouped[i : i + rows], seq_len, pad_id) for i in range(0, len(grouped), rows)]
