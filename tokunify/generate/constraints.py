"""Modality-constrained decoding: a transformers ``LogitsProcessor`` built from the vocab's masks.

The target segment of a task may only hold its modality: text ids for ASR/text, the target stream
for TTS/S2S/continuation, then its end marker, then ``<|eos|>``. Codec streams also follow their
layout: the stream's :class:`~tokunify.core.layouts.CodebookLayout` says, at each position, which
codebook may appear there and whether a code, the ``<|empty|>`` filler or the end marker may
(flatten: codebook ``t mod n_q``, ending on frame boundaries; delay: the opening and closing fills).
All masks are precomputed ``[V]`` tensors; each step is a few tensor ops for the whole batch.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from tokunify.core.layouts import get_layout
from tokunify.core.vocab import UnifiedVocab


class ModalityConstraint(LogitsProcessor):
    def __init__(
        self,
        vocab: UnifiedVocab,
        modality: str,
        prompt_len: int,
        offsets: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ):
        """``modality``: "text" or a stream name. ``prompt_len``: padded prompt length. ``offsets
        [B]``: tokens of the target segment already in each prompt (continuation), default 0."""
        self.prompt_len = prompt_len
        self.offsets = offsets.to(device) if offsets is not None else None
        self.eos = vocab.ids_mask([vocab.eos], device)
        self.empty_id = vocab.empty
        self.fill = vocab.ids_mask([vocab.empty], device)
        if modality == "text":
            self.end_id = vocab.text_end
            self.books = vocab.mask("text", device=device)[None]  # [1, V]
            self.layout, self.n_q = get_layout("flatten"), 1  # one "codebook": any text id
        else:
            spec = vocab.stream(modality)
            self.end_id = vocab.stream_end(modality)
            self.layout, self.n_q = get_layout(spec.layout), spec.codebooks
            emitted = self.layout.emitted_codebooks(self.n_q)
            self.books = torch.stack(
                [vocab.codebook_mask(modality, q, device) for q in range(emitted)]
            )  # [n_emitted, V]
        self.end = vocab.ids_mask([self.end_id], device)
        self.fixed = self.layout.is_fixed(self.n_q)
        self.blocked = ~(self.books[0] | self.end)  # [V], used when every position is alike

    def allowed(self, gen: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``gen [B, n]`` generated ids, ``t [B]`` position in the segment -> ``[B, V]`` bool."""
        b = gen.shape[0]
        if self.fixed:
            return (self.books[0] | self.end)[None].expand(b, -1)
        off = (t - gen.shape[1]).clamp(min=0)  # tokens of the segment that were in the prompt
        pos = off[:, None] + torch.arange(gen.shape[1], device=gen.device)[None]  # [B, n]
        closing = self.layout.closing_step(gen == self.empty_id, pos, self.n_q)  # [B]
        rule = self.layout.step_rule(t, self.n_q, closing)
        out = (
            (self.books[rule.codebook] & rule.code[:, None])
            | (self.fill[None] & rule.fill[:, None])
            | (self.end[None] & rule.end[:, None])
        )  # [B, V]
        return torch.where(rule.end_only[:, None], self.end[None].expand(b, -1), out)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = input_ids.shape[1] - self.prompt_len
        if self.fixed:  # position-independent: one [V] mask
            scores = scores.masked_fill_(self.blocked, float("-inf"))  # in place: no [B, V] copy
        else:
            gen = input_ids[:, self.prompt_len :]  # [B, n]
            t = torch.full((gen.shape[0],), n, dtype=torch.long, device=gen.device)
            if self.offsets is not None:
                t = t + self.offsets
            scores = scores.masked_fill(~self.allowed(gen, t), float("-inf"))
        if n:  # right after the end marker only <|eos|> may follow (and generation then stops)
            closed = input_ids[:, -1] == self.end_id
            if bool(closed.any()):
                scores = scores.masked_fill(closed[:, None] & ~self.eos[None], float("-inf"))
                scores = scores.masked_fill(closed[:, None] & self.eos[None], 0.0)
        return scores
