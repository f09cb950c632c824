"""Modality adapters: encoder frames ``[B, T, D_in]`` -> LM-embedding frames ``[B, T', D_out]``.

The adapter sits between a speech encoder (:mod:`tokunify.model.encoders`) and the LM: its outputs
overwrite the rows of a continuous stream's placeholders (:mod:`tokunify.model.speech_input`), so a
record of that stream holds ``output_lengths(encoder frames)`` placeholders. Each adapter is one
registered class (:data:`ADAPTERS`, from the explicit list :data:`BUILTIN_ADAPTERS`):

=========  ==============================================  =========================  ============
name       what                                            T' (defaults)              50 Hz in
=========  ==============================================  =========================  ============
conv       strided 1-D convolutions (SpeechVerse)          ceil(T / 2) twice          12.5 Hz
stack      k-frame concatenation + 2-layer MLP             ceil(T / 5)                10 Hz
           (Qwen-Audio / LLaMA-Omni)
qformer    window-level Q-Former (SALMONN): q learned      ceil(T / 17) * 1           2.94 Hz
           queries cross-attend to each window of w frames
=========  ==============================================  =========================  ============

Every adapter masks padding: frames at or past an example's length never reach its valid outputs,
so a batched forward equals one forward per example, and outputs past ``out_lengths`` are zero.

A saved adapter is a directory: ``adapter.json`` (name, dims, config) and ``adapter.safetensors``
(the state dict); :func:`load_adapter` rebuilds it from the registry.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_CONFIG = "adapter.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_FORMAT = "tokunify.adapter"  # a file-format name, not a module path


class AdapterError(ValueError):
    """An adapter name, config or saved directory is invalid."""


def frame_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """``[B, t]`` bool: True at the valid frames of each example."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def _config(cls: type, name: str, cfg: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise AdapterError(f"adapter {name!r}: unknown option(s) {unknown}; known: {sorted(known)}")
    out = cls(**cfg)
    bad = [
        f.name
        for f in fields(cls)
        if not isinstance(v := getattr(out, f.name), int) or isinstance(v, bool) or v < 0
    ]
    if bad:
        raise AdapterError(f"adapter {name!r}: option(s) {bad} must be integers >= 0")
    return out


class Adapter(nn.Module, ABC):
    """Base of the adapters: ``forward(x [B, T, D_in], lengths [B]) -> (y [B, T', D_out], out_lengths)``."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, in_dim: int, out_dim: int, **cfg: Any):
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise AdapterError(f"adapter {self.name!r}: in_dim and out_dim must be >= 1")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.cfg = _config(self.config_class, self.name, cfg)

    @property
    def config(self) -> dict[str, Any]:
        """Everything :func:`build_adapter` needs to rebuild this adapter."""
        return {
            "name": self.name,
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            **asdict(self.cfg),
        }

    @abstractmethod
    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``[B]`` output frames of inputs of ``lengths [B]`` frames (exact)."""

    @abstractmethod
    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def save(self, path: str | Path) -> Path:
        """Write ``path/adapter.json`` and ``path/adapter.safetensors``."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        (p / ADAPTER_CONFIG).write_text(
            json.dumps({"format": ADAPTER_FORMAT, **self.config}, indent=2) + "\n"
        )
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(p / ADAPTER_WEIGHTS))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        return load_adapter(path)


# ---- conv: SpeechVerse's strided-convolution downsampler ------------------------------------------
@dataclass
class ConvConfig:
    layers: int = 2
    """Convolutions, each strided."""
    kernel: int = 3
    stride: int = 2
    hidden: int = 0
    """Channels between the convolutions (0: ``out_dim``)."""


class ConvAdapter(Adapter):
    """Strided 1-D convolutions with GELU between them, then a linear projection (SpeechVerse's
    learnable convolutional downsampler in front of a frozen LLM).

    Each layer pads ``p = (kernel - 1) // 2`` frames on both sides and maps ``L`` frames to
    ``floor((L + 2p - kernel) / stride) + 1`` (``ceil(L / stride)`` for an odd kernel), applied
    ``layers`` times. Defaults (2 layers, kernel 3, stride 2): ``ceil(ceil(T / 2) / 2)``; 50 Hz in,
    12.5 Hz out. Padding frames are zeroed before every convolution, so they read as the zero
    padding of a single example.
    """

    name = "conv"
    config_class = ConvConfig

    def __init__(self, in_dim: int, out_dim: int, **cfg: Any):
        super().__init__(in_dim, out_dim, **cfg)
        c = self.cfg
        if c.layers < 1 or c.kernel < 1 or c.stride < 1:
            raise AdapterError("adapter 'conv': layers, kernel and stride must be >= 1")
        hidden = c.hidden or out_dim
        dims = [in_dim] + [hidden] * c.layers
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, c.kernel, c.stride, padding=(c.kernel - 1) // 2)
            for a, b in pairwise(dims)
        )
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, out_dim)

    def _layer_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        p = (c.kernel - 1) // 2
        return (torch.div(lengths + 2 * p - c.kernel, c.stride, rounding_mode="floor") + 1).clamp(
            min=0
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        n = lengths.long()
        for _ in self.convs:
            n = self._layer_lengths(n)
        return n

    def forward(self, x, lengths):
        n = lengths.long().to(x.device)
        h = x.transpose(1, 2)  # [B, D_in, T]
        for i, conv in enumerate(self.convs):
            h = h * frame_mask(n, h.shape[-1])[:, None, :].to(h.dtype)
            h = conv(h)  # [B, C, T_i]
            n = self._layer_lengths(n)
            if i < len(self.convs) - 1:
                h = self.act(h)
        y = self.proj(h.transpose(1, 2))  # [B, T', D_out]
        return y * frame_mask(n, y.shape[1])[..., None].to(y.dtype), n


# ---- stack: k-frame concatenation + MLP (Qwen-Audio, LLaMA-Omni) -----------------------------------
@dataclass
class StackConfig:
    k: int = 5
    """Frames stacked into one output frame."""
    hidden: int = 0
    """Width of the MLP's hidden layer (0: ``out_dim``)."""


class StackAdapter(Adapter):
    """Concatenate every ``k`` consecutive frames, then a 2-layer MLP (Linear, GELU, Linear):
    LLaMA-Omni's speech adaptor (k = 5), the frame stacking of Qwen-Audio-style projectors.

    ``T' = ceil(T / k)``: the last group is completed with zeros (padding, not speech). Default
    k = 5: 50 Hz in, 10 Hz out.
    """

    name = "stack"
    config_class = StackConfig

    def __init__(self, in_dim: int, out_dim: int, **cfg: Any):
        super().__init__(in_dim, out_dim, **cfg)
        if self.cfg.k < 1:
            raise AdapterError("adapter 'stack': k must be >= 1")
        hidden = self.cfg.hidden or out_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim * self.cfg.k, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        k = self.cfg.k
        return torch.div(lengths.long() + k - 1, k, rounding_mode="floor")

    def forward(self, x, lengths):
        b, t, d = x.shape
        k = self.cfg.k
        n = lengths.long().to(x.device)
        t_out = math.ceil(t / k)
        x = x * frame_mask(n, t)[..., None].to(x.dtype)
        x = nn.functional.pad(x, (0, 0, 0, t_out * k - t))  # [B, T'k, D_in]
        y = self.mlp(x.reshape(b, t_out, k * d))  # [B, T', D_out]
        out = self.output_lengths(n)
        return y * frame_mask(out, t_out)[..., None].to(y.dtype), out


# ---- qformer: SALMONN's window-level Q-Former ----------------------------------------------------
@dataclass
class QFormerConfig:
    window: int = 17
    """Frames per window (SALMONN: 17, about 0.33 s at 50 Hz)."""
    queries: int = 1
    """Learned queries per window (output frames per window)."""
    layers: int = 2
    """Q-Former layers (self-attention over the queries, cross-attention to the window, FFN)."""
    hidden: int = 256
    heads: int = 4
    ffn: int = 0
    """FFN width (0: 4 x hidden)."""


class QFormerAdapter(Adapter):
    """Window-level Q-Former (SALMONN): the frames are cut into windows of ``window`` frames; in
    each, ``queries`` learned queries attend to the window's frames (plus a learned position
    embedding within the window) through ``layers`` Transformer-decoder layers, and a linear layer
    maps them to ``out_dim``.

    ``T' = ceil(T / window) * queries``. Defaults (window 17, 1 query): 50 Hz in, 50 / 17 = 2.94 Hz
    out. Padding frames are masked out of the cross-attention; a window holding none of an
    example's frames gives zero outputs (past ``out_lengths``).
    """

    name = "qformer"
    config_class = QFormerConfig

    def __init__(self, in_dim: int, out_dim: int, **cfg: Any):
        super().__init__(in_dim, out_dim, **cfg)
        c = self.cfg
        if min(c.window, c.queries, c.layers, c.hidden, c.heads) < 1 or c.hidden % c.heads:
            raise AdapterError(
                "adapter 'qformer': window, queries, layers, heads >= 1 and hidden divisible by heads"
            )
        self.inp = nn.Linear(in_dim, c.hidden)
        self.pos = nn.Parameter(torch.randn(c.window, c.hidden) * 0.02)  # [w, H]
        self.query = nn.Parameter(torch.randn(c.queries, c.hidden) * 0.02)  # [q, H]
        layer = nn.TransformerDecoderLayer(
            c.hidden, c.heads, c.ffn or 4 * c.hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerDecoder(layer, c.layers, norm=nn.LayerNorm(c.hidden))
        self.proj = nn.Linear(c.hidden, out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        w = self.cfg.window
        return torch.div(lengths.long() + w - 1, w, rounding_mode="floor") * self.cfg.queries

    def forward(self, x, lengths):
        b, t, _ = x.shape
        w, q = self.cfg.window, self.cfg.queries
        n = lengths.long().to(x.device)
        n_win = math.ceil(t / w)
        h = nn.functional.pad(self.inp(x), (0, 0, 0, n_win * w - t))  # [B, nW*w, H]
        h = h.reshape(b * n_win, w, -1) + self.pos  # [B*nW, w, H]
        valid = frame_mask(n, n_win * w).reshape(b * n_win, w)  # [B*nW, w]
        empty = ~valid.any(dim=1)  # windows past an example's end: attend to their first frame
        valid = valid | (empty[:, None] & (torch.arange(w, device=x.device) == 0)[None])
        queries = self.query[None].expand(b * n_win, q, -1)  # [B*nW, q, H]
        y = self.blocks(queries, h, memory_key_padding_mask=~valid)  # [B*nW, q, H]
        y = self.proj(y.reshape(b, n_win * q, -1))  # [B, T', D_out]
        out = self.output_lengths(n)
        return y * frame_mask(out, n_win * q)[..., None].to(y.dtype), out


# ---- registry ----------------------------------------------------------------------------------
BUILTIN_ADAPTERS: tuple[type[Adapter], ...] = (ConvAdapter, StackAdapter, QFormerAdapter)
"""Every adapter tokunify ships."""

ADAPTERS: dict[str, type[Adapter]] = {cls.name: cls for cls in BUILTIN_ADAPTERS}
"""Adapter name -> class (from :data:`BUILTIN_ADAPTERS`)."""


def adapter_class(name: str) -> type[Adapter]:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise AdapterError(f"unknown adapter {name!r}; registered: {sorted(ADAPTERS)}") from None


def build_adapter(name: str, in_dim: int, out_dim: int, **cfg: Any) -> Adapter:
    """The adapter registered as ``name``, e.g. ``build_adapter("conv", 768, 2048, stride=2)``."""
    return adapter_class(name)(in_dim, out_dim, **cfg)


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    """``adapter.json`` of a saved adapter directory, checked."""
    p = Path(path) / ADAPTER_CONFIG
    if not p.is_file():
        raise AdapterError(f"{p}: missing; not a saved adapter directory")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.pop("format", None) != ADAPTER_FORMAT:
        raise AdapterError(f"{p}: not a tokunify adapter config (format {ADAPTER_FORMAT!r})")
    for key in ("name", "in_dim", "out_dim"):
        if key not in d:
            raise AdapterError(f"{p}: no {key!r}")
    return d


def load_adapter(path: str | Path, device: torch.device | str = "cpu") -> Adapter:
    """An adapter saved by :meth:`Adapter.save`."""
    d = read_adapter_config(path)
    weights = Path(path) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise AdapterError(f"{weights}: missing; the adapter's weights are not saved")
    name, in_dim, out_dim = d.pop("name"), d.pop("in_dim"), d.pop("out_dim")
    adapter = build_adapter(name, in_dim, out_dim, **d)
    try:
        adapter.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise AdapterError(
            f"{weights}: weights do not fit the config in {ADAPTER_CONFIG}: {e}"
        ) from None
    return adapter.to(device)


__all__ = [
    "ADAPTERS",
    "BUILTIN_ADAPTERS",
    "Adapter",
    "AdapterError",
    "ConvAdapter",
    "QFormerAdapter",
    "StackAdapter",
    "adapter_class",
    "build_adapter",
    "frame_mask",
    "load_adapter",
    "read_adapter_config",
]
