"""Modality-constrained decoding: a transformers ``LogitsProcessor`` built from the vocab's masks.

The target segment of a task may only hold its modality: text ids for ASR/text, the target stream
for TTS/S2S/continuation, then its end marker, then ``<|eos|>``. Codec streams also follow their
layout: under ``flatten`` position t emits codebook ``t mod n_q`` (and may end only on a frame
boundary); under ``delay`` the opening and closing ``<|empty|>`` fills are enforced. All masks are
precomputed ``[V]`` tensors; each step is a few tensor ops for the whole batch.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from tokunify.vocab import UnifiedVocab


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
        if modality == "text":
            self.end_id = vocab.text_end
            self.body = vocab.mask("text", device=device)
            self.kind, self.layout, self.n_q = "text", "", 1
        else:
            spec = vocab.stream(modality)
            self.end_id = vocab.stream_end(modality)
            self.kind, self.layout = spec.kind, spec.layout
            self.n_q = spec.codebooks if spec.kind == "codec" and spec.layout != "first" else 1
            self.body = vocab.mask(modality, device=device)
            if spec.kind == "codec":
                self.books = torch.stack(
                    [vocab.codebook_mask(modality, q, device) for q in range(spec.codebooks)]
                )  # [n_q, V]
                if spec.layout == "first":
                    self.body = self.books[0]
            self.empty_id = vocab.empty
        self.end = vocab.ids_mask([self.end_id], device)
        self.blocked = ~(self.body | self.end)  # [V]

    def allowed(self, gen: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``gen [B, n]`` generated ids, ``t [B]`` position in the segment -> ``[B, V]`` bool."""
        b = gen.shape[0]
        if self.kind != "codec" or self.layout == "first":
            return (self.body | self.end)[None].expand(b, -1)
        q = t % self.n_q  # [B]
        books = self.books[q]  # [B, V]
        on_frame = (q == 0)[:, None]
        if self.layout == "flatten" or self.n_q == 1:
            return books | (self.end[None] & on_frame)
        # delay: step s, codebook q. Before any end: s < q -> empty; q == 0 may start the closing
        # with empty. After codebook 0 went empty at step s0: code iff 0 <= s - q < s0, else empty;
        # the segment ends after step s0 + n_q - 1.
        s = t // self.n_q
        empty = torch.zeros_like(self.end)
        empty[self.empty_id] = True
        s0 = self._closing_step(gen, t)  # [B], large when not closing
        closing = s0 < (1 << 30)
        frame = s - q
        code_ok = torch.where(closing, (frame >= 0) & (frame < s0), frame >= 0)
        fill_ok = ~code_ok | (~closing & (q == 0) & (s > 0))
        out = (books & code_ok[:, None]) | (empty[None] & fill_ok[:, None])
        finished = closing & (t >= (s0 + self.n_q - 1) * self.n_q)
        return torch.where(finished[:, None], self.end[None].expand(b, -1), out)

    def _closing_step(self, gen: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per row, the step at which codebook 0 first emitted <|empty|> after the opening."""
        big = torch.full((gen.shape[0],), 1 << 30, dtype=torch.long, device=gen.device)
        if gen.shape[1] == 0:
            return big
        off = (t - gen.shape[1]).clamp(min=0)  # tokens of the segment that were in the prompt
        pos = off[:, None] + torch.arange(gen.shape[1], device=gen.device)[None]  # [B, n]
        hit = (gen == self.empty_id) & (pos % self.n_q == 0) & (pos // self.n_q > 0)
        first = torch.where(hit, pos // self.n_q, big[:, None]).min(1).values
        return first

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = input_ids.shape[1] - self.prompt_len
        if self.kind != "codec" or self.layout == "first":  # position-independent: one [V] mask
            scores = scores.masked_fill_(
                self.blocked, float("-inf")
            )  # in place: no new [B, V] tensor
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
