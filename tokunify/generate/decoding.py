"""Sampling settings and the greedy rule, in one place: :class:`Decoding`.

``temperature <= 0`` means greedy decoding. Sampled decoding has two forms:

- :meth:`Decoding.generate_kwargs`: Hugging Face's own sampling (``do_sample=True``), which draws
  from torch's global generator, so a row's sample depends on the other rows of its batch;
- :meth:`Decoding.sampler`: a :class:`SeededSampler` logits processor that samples each row with its
  own ``torch.Generator`` (seeded per row) and hands ``model.generate`` a one-hot score row, which
  its greedy step then picks. A row's tokens then depend only on its prompt, the settings and its
  seed: the same reply alone or in any batch (up to float noise in the logits of padded rows).

>>> Decoding(temperature=0).greedy
True
>>> Decoding(temperature=0.7).generate_kwargs()["do_sample"]
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class Decoding:
    """How replies are decoded. ``temperature <= 0``: greedy (``top_p``/``top_k`` unused)."""

    temperature: float = 0.7
    """Sampling temperature; 0 (or less) means greedy decoding."""
    top_p: float = 0.95
    """Nucleus sampling mass (1: off)."""
    top_k: int = 0
    """Keep the k most likely ids (0: off)."""
    max_new_tokens: int = 200
    """Length limit of one reply, in tokens."""
    repetition_penalty: float = 1.0
    """CTRL's repetition penalty (1: off); applied greedy or sampled."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError("top_k must be >= 0 and repetition_penalty > 0")

    @property
    def greedy(self) -> bool:
        """The greedy rule: temperature 0 (or less) means greedy."""
        return self.temperature <= 0

    @classmethod
    def greedy_with(cls, max_new_tokens: int = 200, **kw: Any) -> Decoding:
        """Greedy decoding with a length limit."""
        return cls(temperature=0.0, max_new_tokens=max_new_tokens, **kw)

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any] | None, **overrides: Any) -> Decoding:
        """From a task preset in ``model.generate`` keywords (``do_sample``, ``temperature``,
        ``top_p``, ``top_k``, ``repetition_penalty``, ``max_new_tokens``), then ``overrides``
        (fields of this class). ``do_sample=False`` becomes temperature 0."""
        p = dict(preset or {})
        d = cls(
            temperature=float(p.get("temperature") or 1.0) if p.get("do_sample") else 0.0,
            top_p=float(p.get("top_p") or 1.0),
            top_k=int(p.get("top_k") or 0),
            max_new_tokens=int(p.get("max_new_tokens") or cls.max_new_tokens),
            repetition_penalty=float(p.get("repetition_penalty") or 1.0),
        )
        return replace(d, **overrides)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keywords for ``model.generate`` with Hugging Face's own sampling (global torch RNG)."""
        common = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.greedy:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, **common}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or None,
            **common,
        }

    def seeded_kwargs(self) -> dict[str, Any]:
        """Keywords for ``model.generate`` beside :meth:`sampler`: its greedy step picks what the
        sampler drew (so the library's own sampling is off)."""
        return {
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }

    def sampler(
        self, seeds: Sequence[int], device: torch.device | str = "cpu"
    ) -> SeededSampler | None:
        """The per-row sampler (None when greedy: argmax needs no draws)."""
        return None if self.greedy else SeededSampler(self, seeds, device)


class SeededSampler(LogitsProcessor):
    """Samples every row with its own generator; returns scores that are 0 at the drawn id and
    ``-inf`` elsewhere, so the greedy step of ``model.generate`` takes the draw.

    Temperature, top-k and top-p are Hugging Face's warpers; the draw is inverse-CDF on one uniform
    number from the row's generator per step, so a row consumes its generator the same way alone
    and in a batch. Put it last among the logits processors (after any constraint mask)."""

    def __init__(self, decoding: Decoding, seeds: Sequence[int], device: torch.device | str):
        self.warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(decoding.temperature)]
        if decoding.top_k:
            self.warpers.append(TopKLogitsWarper(decoding.top_k))
        if decoding.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(decoding.top_p))
        self.generators = [
            torch.Generator(device=torch.device(device)).manual_seed(int(s)) for s in seeds
        ]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids [B, L], scores [B, V]
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows but {len(self.generators)} seeds")
        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)  # [B, V]
        cdf = probs.cumsum(-1)  # [B, V]
        u = torch.cat([torch.rand((1,), generator=g, device=g.device) for g in self.generators])
        u = u.to(cdf.device)[:, None] * cdf[:, -1:]  # [B, 1]: one draw per row, its own generator
        k = torch.searchsorted(cdf, u).clamp(max=cdf.shape[1] - 1)  # [B, 1]
        # a float edge onto a masked id, or a row with nothing left: its best id
        bad = ~(probs.gather(1, k) > 0)
        k = torch.where(bad, scores.argmax(-1, keepdim=True), k)
        out = torch.full_like(scores, float("-inf")).scatter_(1, k, 0.0)
        return out


__all__ = ["Decoding", "SeededSampler"]
