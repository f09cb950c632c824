"""Codebook layouts: how ``[n_q, T]`` codec ids become one token sequence, and back.

A decoder-only LM emits one token per position, so several codebooks per frame must be laid out
in time. Each layout is one object that builds *and* reverts; ids are global (each codebook has its
own id range in :class:`~tokunify.core.vocab.UnifiedVocab`) and ``empty`` is the vocab's filler id.

Worked example, n_q = 2, T = 3, codebook 0 ids ``a0 a1 a2``, codebook 1 ids ``b0 b1 b2``, ``_`` = empty::

    flatten  a0 b0 a1 b1 a2 b2                    (frame-major; position p emits codebook p % n_q)
    delay    a0 _  a1 b0 a2 b1 _  b2              (codebook q shifted right by q frames, MusicGen style;
                                                   T + n_q - 1 steps of n_q tokens)
    first    a0 a1 a2                             (codebook 0 only; revert gives [1, T])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

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


NOT_CLOSING = 1 << 30
"""Closing step of a segment that has not started to close (larger than any real step)."""


class StepRule(NamedTuple):
    """What a segment position may hold, per row ``[B]``: the codebook whose ids are allowed, and
    whether a code, the ``<|empty|>`` filler or the end marker may come there (``end_only``: nothing
    but the end marker)."""

    codebook: Any  # [B] int
    code: Any  # [B] bool
    fill: Any  # [B] bool
    end: Any  # [B] bool
    end_only: Any  # [B] bool


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

    def continuation_length(self, frames: int, n_q: int) -> int:
        """Tokens of a built ``frames``-frame sequence that a continuation prompt keeps (all of them,
        unless the layout closes a sequence with fill the continuation must not see)."""
        return self.length(frames, n_q)

    def close(self, seq: Any, n_q: int, empty: int) -> Any:
        """The longest prefix of a segment body cut short (by a length limit) that reverts: by
        default, whole steps of :meth:`emitted_codebooks` tokens."""
        step = self.emitted_codebooks(n_q)
        return seq[: seq.shape[0] // step * step]

    def is_fixed(self, n_q: int) -> bool:
        """True when every position of a segment allows the same ids (one codebook emitted)."""
        return self.emitted_codebooks(n_q) == 1

    def closing_step(self, is_fill: Any, positions: Any, n_q: int) -> Any:
        """``[B]`` step at which each row started to close its segment, from ``is_fill [B, n]`` (the
        generated token is ``<|empty|>``) at segment ``positions [B, n]``; ``NOT_CLOSING`` if not."""
        return _full(positions, (positions.shape[0],), NOT_CLOSING)

    def step_rule(self, t: Any, n_q: int, closing: Any) -> StepRule:
        """What position ``t [B]`` of a segment may hold; ``closing [B]`` from :meth:`closing_step`.

        By default a position holds a code of :meth:`codebook_at`, and the segment may end on a
        frame boundary.
        """
        q = self.codebook_at(t, n_q)
        yes = q >= 0
        on_frame = t % self.emitted_codebooks(n_q) == 0
        return StepRule(codebook=q, code=yes, fill=~yes, end=on_frame, end_only=~yes)


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

    def length(self, frames: Any, n_q: int) -> Any:
        return (frames + n_q - 1) * n_q * (frames > 0)  # int or [B] tensor of frame counts

    def close(self, seq: Any, n_q: int, empty: int) -> Any:
        """A cut delay body keeps the frames whose every codebook was emitted (frame ``t`` needs
        steps up to ``t + n_q - 1``) and before any filler, re-closed with the delay fill."""
        steps = seq.shape[0] // n_q
        t = steps - n_q + 1
        if t < 1:
            return seq[:0]
        grid = seq[: steps * n_q].reshape(steps, n_q)  # [S, n_q]
        q = _arange(seq, n_q)
        codes = grid[_arange(seq, t)[None, :] + q[:, None], q[:, None]]  # [n_q, T]
        holes = (codes == empty).any(0)  # [T]: a frame the model had started closing
        if bool(holes.any()):
            t = (
                int(holes.nonzero()[0][0])
                if isinstance(holes, np.ndarray)
                else int(holes.nonzero()[0, 0])
            )
            codes = codes[:, :t]
        return self.build(codes, empty) if codes.shape[1] else seq[:0]

    def continuation_length(self, frames: int, n_q: int) -> int:
        # The last n_q - 1 steps are the closing fill: continue from the last full step.
        return max(self.length(frames, n_q) - (n_q - 1) * n_q, 0)

    def closing_step(self, is_fill: Any, positions: Any, n_q: int) -> Any:
        if positions.shape[1] == 0:
            return super().closing_step(is_fill, positions, n_q)
        # Codebook 0 emitting <|empty|> after the opening step starts the closing.
        hit = is_fill & (positions % n_q == 0) & (positions // n_q > 0)
        big = _full(positions, tuple(positions.shape), NOT_CLOSING)
        first = positions // n_q
        if isinstance(first, torch.Tensor):
            return torch.where(hit, first, big).min(1).values
        return np.where(hit, first, big).min(1)

    def step_rule(self, t: Any, n_q: int, closing: Any) -> StepRule:
        """Step ``s = t // n_q``, codebook ``q = t % n_q``. Before the closing: ``s < q`` is fill (the
        opening), codebook 0 may start the closing with fill. After codebook 0 went empty at step
        ``s0``: a code iff ``0 <= s - q < s0``, else fill; then only the end marker, once the
        sequence has :meth:`length` of ``s0`` frames."""
        q = self.codebook_at(t, n_q)
        s = t // n_q
        is_closing = closing < NOT_CLOSING
        frame = s - q
        code = (frame >= 0) & (frame < closing)  # closing is NOT_CLOSING until it starts
        fill = ~code | (~is_closing & (q == 0) & (s > 0))
        finished = is_closing & (t >= self.length(closing, n_q))
        return StepRule(codebook=q, code=code, fill=fill, end=finished, end_only=finished)


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


LAYOUTS: dict[str, CodebookLayout] = {}
"""The layout registry: name -> layout object. Change it through :func:`register_layout`."""


def register_layout(layout: CodebookLayout) -> CodebookLayout:
    """Register a layout object under its ``name``."""
    if layout.name in LAYOUTS and type(LAYOUTS[layout.name]) is not type(layout):
        raise LayoutError(f"codebook layout {layout.name!r} is already registered")
    LAYOUTS[layout.name] = layout
    return layout


for _layout in (FlattenLayout(), DelayLayout(), FirstLayout()):
    register_layout(_layout)


def get_layout(name: str) -> CodebookLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown codebook layout {name!r}; known: {sorted(LAYOUTS)}") from None
