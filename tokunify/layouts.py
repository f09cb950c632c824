"""Codebook layouts: how ``[n_q, T]`` codec ids become one token sequence, and back.

A decoder-only LM emits one token per position, so several codebooks per frame must be laid out
in time. Each layout is one object that builds *and* reverts; ids are global (each codebook has its
own id range in :class:`~tokunify.vocab.UnifiedVocab`) and ``empty`` is the vocab's filler id.

Worked example, n_q = 2, T = 3, codebook 0 ids ``a0 a1 a2``, codebook 1 ids ``b0 b1 b2``, ``_`` = empty::

    flatten  a0 b0 a1 b1 a2 b2                    (frame-major; position p emits codebook p % n_q)
    delay    a0 _  a1 b0 a2 b1 _  b2              (codebook q shifted right by q frames, MusicGen style;
                                                   T + n_q - 1 steps of n_q tokens)
    first    a0 a1 a2                             (codebook 0 only; revert gives [1, T])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch


class LayoutError(ValueError):
    """A sequence cannot be reverted to codebooks under a layout."""


def _arange(x: Any, n: int) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.arange(n, device=x.device)
    return np.arange(n)


def _full(x: Any, shape: tuple[int, ...], value: int) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.full(shape, value, dtype=x.dtype, device=x.device)
    return np.full(shape, value, dtype=np.asarray(x).dtype)


def _check_2d(codes: Any) -> None:
    if codes.ndim != 2:
        raise LayoutError(f"codes must be [n_q, T], got shape {tuple(codes.shape)}")


class CodebookLayout(ABC):
    """Builds ``[L]`` from ``[n_q, T]`` and reverts it. Subclasses are stateless."""

    name: str

    @abstractmethod
    def build(self, codes: Any, empty: int) -> Any:
        """``[n_q, T]`` global ids -> ``[L]`` sequence."""

    @abstractmethod
    def revert(self, seq: Any, n_q: int, empty: int) -> Any:
        """``[L]`` sequence -> ``[n_q', T]`` global ids (``n_q' = 1`` for ``first``)."""

    @abstractmethod
    def length(self, frames: int, n_q: int) -> int:
        """Sequence length for ``frames`` frames."""

    def codebook_at(self, positions: Any, n_q: int) -> Any:
        """Codebook each position (0-based, within the stream segment) must come from."""
        return positions % n_q

    def emitted_codebooks(self, n_q: int) -> int:
        return n_q

    def frame_boundary(self, frames: int, n_q: int) -> int:
        """Sequence index where frame ``frames`` starts; used to split a stream for continuation."""
        return frames * self.emitted_codebooks(n_q)


class FlattenLayout(CodebookLayout):
    name = "flatten"

    def build(self, codes: Any, empty: int) -> Any:
        _check_2d(codes)
        return codes.T.reshape(-1)  # [T, n_q] -> [T * n_q]

    def revert(self, seq: Any, n_q: int, empty: int) -> Any:
        if seq.shape[0] % n_q:
            raise LayoutError(
                f"flatten layout: sequence length {seq.shape[0]} is not a multiple of n_q={n_q}"
            )
        return seq.reshape(-1, n_q).T  # [n_q, T]

    def length(self, frames: int, n_q: int) -> int:
        return frames * n_q


class DelayLayout(CodebookLayout):
    name = "delay"

    def build(self, codes: Any, empty: int) -> Any:
        _check_2d(codes)
        n_q, t = codes.shape
        steps = t + n_q - 1 if t else 0
        out = _full(codes, (steps, n_q), empty)  # [S, n_q]
        q = _arange(codes, n_q)
        rows = _arange(codes, t)[None, :] + q[:, None]  # [n_q, T]: step of code (q, t) is t + q
        out[rows, q[:, None]] = codes
        return out.reshape(-1)

    def revert(self, seq: Any, n_q: int, empty: int) -> Any:
        if seq.shape[0] % n_q:
            raise LayoutError(
                f"delay layout: sequence length {seq.shape[0]} is not a multiple of n_q={n_q}"
            )
        steps = seq.shape[0] // n_q
        if steps == 0:
            return seq.reshape(n_q, 0)
        t = steps - n_q + 1
        if t < 1:
            raise LayoutError(f"delay layout: {steps} steps are too few for n_q={n_q}")
        grid = seq.reshape(steps, n_q)  # [S, n_q]
        q = _arange(seq, n_q)
        rows = _arange(seq, t)[None, :] + q[:, None]  # [n_q, T]
        codes = grid[rows, q[:, None]]
        filled = _full(seq, (steps, n_q), 0) != 0  # all False
        filled[rows, q[:, None]] = True
        if bool((codes == empty).any()) or bool((grid[~filled] != empty).any()):
            raise LayoutError(
                "delay layout: empty tokens are not where the delay pattern puts them"
            )
        return codes

    def length(self, frames: int, n_q: int) -> int:
        return (frames + n_q - 1) * n_q if frames else 0


class FirstLayout(CodebookLayout):
    name = "first"

    def build(self, codes: Any, empty: int) -> Any:
        _check_2d(codes)
        return codes[0]

    def revert(self, seq: Any, n_q: int, empty: int) -> Any:
        return seq[None, :]

    def length(self, frames: int, n_q: int) -> int:
        return frames

    def codebook_at(self, positions: Any, n_q: int) -> Any:
        return positions * 0

    def emitted_codebooks(self, n_q: int) -> int:
        return 1


LAYOUTS: dict[str, CodebookLayout] = {
    layout.name: layout for layout in (FlattenLayout(), DelayLayout(), FirstLayout())
}


def get_layout(name: str) -> CodebookLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown codebook layout {name!r}; known: {sorted(LAYOUTS)}") from None
