"""One likelihood scorer for every speech-LM benchmark, its conventions explicit.

A benchmark item is a sequence of global ids with a *scored span*: the ids whose log-likelihood is
summed (the speech of a sWUGGY word, the ending of a story). Papers differ in three conventions,
and each is a field of :class:`Conventions` (and a flag of ``tokunify eval-slm``):

- ``normalize``: ``sum`` (the raw log-likelihood) or ``mean`` (divided by the number of scored ids:
  slamkit's default ``mean_nll``, which removes the bias against longer items);
- ``softmax``: ``full`` (log-softmax over the whole vocabulary) or ``modality`` (renormalised over
  the ids of the scored modality only: a unit LM inside a text LM is then scored as a unit LM);
- ``codebooks``: for codec streams, ``first`` (codebook 0 ids only) or ``all``.

A pair scores ``1`` when ``LL(positive) > LL(negative)``, ``0.5`` on a tie, else ``0``.

:func:`score_sequences` runs length-sorted, right-padded batches; :func:`reference_scores` is the
slow reference (one sequence, one position at a time, float64 sums) that tests compare it to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks import encode_segment


@dataclass(frozen=True)
class Conventions:
    """How a sequence's log-likelihood is computed (recorded in every result file)."""

    normalize: Literal["sum", "mean"] = "mean"
    softmax: Literal["full", "modality"] = "full"
    codebooks: Literal["first", "all"] = "all"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("normalize", ("sum", "mean")),
            ("softmax", ("full", "modality")),
            ("codebooks", ("first", "all")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class ScoredSequence:
    """Global ids and the span ``[start, end)`` whose ids are scored, all of one ``modality``."""

    ids: np.ndarray  # [T] int64
    start: int
    end: int
    modality: str  # "text" or a stream name


def speech_sequence(
    vocab: UnifiedVocab, stream: str, local: np.ndarray, task: str = "speech"
) -> ScoredSequence:
    """``[bos, task:T, <stream>_start, body..., <stream>_end]``; the body is scored."""
    head = np.array([vocab.bos, vocab.task(task)], dtype=np.int64)
    ids = np.concatenate([head, encode_segment(vocab, stream, local)]).astype(np.int64)
    return ScoredSequence(ids, len(head) + 1, len(ids) - 1, stream)  # markers are not scored


def text_sequence(vocab: UnifiedVocab, context: np.ndarray, ending: np.ndarray) -> ScoredSequence:
    """Text LM (T->T): ``[bos, task:text, text_start, context, ending, text_end]``; the ending is scored."""
    head = np.array([vocab.bos, vocab.task("text")], dtype=np.int64)
    seg = encode_segment(vocab, "text", np.concatenate([context, ending]))
    ids = np.concatenate([head, seg]).astype(np.int64)
    start = len(head) + 1 + len(context)
    return ScoredSequence(ids, start, start + len(ending), "text")


def cross_modal_sequence(
    vocab: UnifiedVocab,
    context: tuple[str, np.ndarray],
    ending: tuple[str, np.ndarray],
) -> ScoredSequence:
    """Interleaved (S->T or T->S): ``[bos, task:interleave, SEG(context), SEG(ending)]``; the
    ending's body is scored. Modalities are ``"text"`` or a stream name."""
    head = np.array([vocab.bos, vocab.task("interleave")], dtype=np.int64)
    a = encode_segment(vocab, context[0], context[1])
    b = encode_segment(vocab, ending[0], ending[1])
    ids = np.concatenate([head, a, b]).astype(np.int64)
    start = len(head) + len(a) + 1
    return ScoredSequence(ids, start, len(ids) - 1, ending[0])


def _scored_mask(vocab: UnifiedVocab, seq: ScoredSequence, conv: Conventions) -> np.ndarray:
    """``[T]`` bool: positions of ``seq.ids`` that count. Codec layout fill (``<|empty|>``) never
    counts; ``codebooks=first`` keeps codebook 0 only."""
    m = np.zeros(len(seq.ids), dtype=bool)
    m[seq.start : seq.end] = True
    if seq.modality == "text":
        return m
    span = seq.ids
    a, b = vocab.stream_range(seq.modality)
    m &= (span >= a) & (span < b)
    if conv.codebooks == "first" and vocab.stream(seq.modality).kind == "codec":
        m &= vocab.codebook_table[np.clip(span, 0, vocab.size - 1)] == 0
    return m


def _allowed(vocab: UnifiedVocab, modality: str, device: torch.device) -> torch.Tensor:
    return vocab.mask(modality, device=device)  # [V]


def _log_probs(
    logits: torch.Tensor, allowed: torch.Tensor | None
) -> torch.Tensor:  # [..., V] -> [..., V]
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def _finish(total: np.ndarray, count: np.ndarray, conv: Conventions) -> np.ndarray:
    if conv.normalize == "mean":
        return total / np.maximum(count, 1)
    return total


@torch.no_grad()
def score_sequences(
    model: Any,
    vocab: UnifiedVocab,
    seqs: Sequence[ScoredSequence],
    conv: Conventions,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``[N]`` log-likelihood of each sequence's scored span, under ``conv``.

    Sequences are sorted by length and run in right-padded batches (padding never precedes a real
    token, so positions and causal attention are those of the unpadded sequence).
    """
    device = torch.device(device)
    n = len(seqs)
    total, count = np.zeros(n), np.zeros(n)
    order = sorted(range(n), key=lambda i: len(seqs[i].ids), reverse=True)
    allowed_cache: dict[str, torch.Tensor] = {}
    for b0 in range(0, n, batch_size):
        idx = order[b0 : b0 + batch_size]
        t_max = max(len(seqs[i].ids) for i in idx)
        ids = torch.full((len(idx), t_max), vocab.pad, dtype=torch.long)  # [B, T]
        attn = torch.zeros((len(idx), t_max), dtype=torch.long)  # [B, T]
        weight = torch.zeros((len(idx), t_max), dtype=torch.bool)  # [B, T] scored targets
        for r, i in enumerate(idx):
            s = seqs[i]
            ids[r, : len(s.ids)] = torch.from_numpy(s.ids)
            attn[r, : len(s.ids)] = 1
            weight[r, : len(s.ids)] = torch.from_numpy(_scored_mask(vocab, s, conv))
        ids, attn, weight = ids.to(device), attn.to(device), weight.to(device)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]  # [B, T-1, V]
        modalities = {seqs[i].modality for i in idx}
        if conv.softmax == "modality":
            lp = torch.empty(logits.shape[:2], device=device)  # [B, T-1]
            for mod in modalities:
                if mod not in allowed_cache:
                    allowed_cache[mod] = _allowed(vocab, mod, device)
                rows = torch.tensor(
                    [r for r, i in enumerate(idx) if seqs[i].modality == mod], device=device
                )
                sub = _log_probs(logits[rows], allowed_cache[mod])  # [b, T-1, V]
                lp[rows] = sub.gather(-1, ids[rows, 1:, None]).squeeze(-1)
        else:
            lp = _log_probs(logits, None).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
        w = weight[:, 1:]
        lp = torch.where(w, lp, torch.zeros_like(lp))
        sums = lp.double().sum(-1).cpu().numpy()
        cnts = w.sum(-1).cpu().numpy()
        for r, i in enumerate(idx):
            total[i], count[i] = sums[r], cnts[r]
    return _finish(total, count, conv)


@torch.no_grad()
def reference_scores(
    model: Any,
    vocab: UnifiedVocab,
    seqs: Sequence[ScoredSequence],
    conv: Conventions,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The slow reference: each sequence alone, each scored position's log-softmax computed on
    its own and summed in float64. Same result as :func:`score_sequences` up to float noise."""
    out = []
    for s in seqs:
        ids = torch.from_numpy(s.ids)[None].to(device)  # [1, T]
        logits = model(input_ids=ids).logits[0].double()  # [T, V]
        mask = _scored_mask(vocab, s, conv)
        allowed = vocab.mask(s.modality).numpy() if conv.softmax == "modality" else None
        total, n = 0.0, 0
        for p in range(1, len(s.ids)):
            if not mask[p]:
                continue
            row = logits[p - 1].cpu().numpy()
            if allowed is not None:
                row = row[allowed]
                target = int(np.flatnonzero(allowed).tolist().index(int(s.ids[p])))
            else:
                target = int(s.ids[p])
            m = row.max()
            total += float(row[target] - m - np.log(np.exp(row - m).sum()))
            n += 1
        out.append(total / max(n, 1) if conv.normalize == "mean" else total)
    return np.array(out)


def pair_scores(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """``[N]``: 1 where ``pos > neg``, 0.5 on a tie, 0 otherwise."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    return (pos > neg).astype(float) + 0.5 * (pos == neg)
