"""The speech tokenizer interface (after audiocraft's ``CompressionModel``) and its registry.

A tokenizer turns waveforms into *local* ids: units ``0..K-1`` (``[T]`` per utterance) or codec
codes ``[n_q, T]``. It knows nothing of the LLM vocabulary. Configs are plain dicts with a ``kind``
key, so a bundle can name a tokenizer and rebuild it with :func:`tokenizer_from_config`.

A tokenizer kind is one :class:`SpeechTokenizer` subclass, registered once in :data:`TOKENIZERS`
(or at run time with :func:`register_tokenizer`). Everything else asks the class, never the kind's
name: :attr:`~SpeechTokenizer.stream_kind` (``units`` or ``codec``), the rates, and whether
:meth:`~SpeechTokenizer.decode` gives audio (:attr:`~SpeechTokenizer.self_decoding`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from tokunify.data import audio as audio_io


@dataclass
class TokenizerOutput:
    """Per-utterance ids (``[T_i]`` units or ``[n_q, T_i]`` codes) and, with dedup, run lengths."""

    ids: list[torch.Tensor]
    durations: list[torch.Tensor] | None = None  # [T_i] frames per unit, when deduplicated


StreamKind = Literal["units", "codec"]
STREAM_KINDS: tuple[str, ...] = ("units", "codec")


class SpeechTokenizer(ABC):
    """Waveforms in, local ids out."""

    kind: str  # registry key, written into configs
    stream_kind: ClassVar[StreamKind]
    """``units``: ``[T]`` ids in ``0..K-1``; ``codec``: ``[n_q, T]`` codes, codebook q in ``0..C-1``."""
    self_decoding: ClassVar[bool] = False
    """True when :meth:`decode` turns ids back into audio: the tokenizer is its own vocoder."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate the tokenizer works at; inputs at other rates are resampled with soxr."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Frames (before dedup) per second of audio."""

    @property
    @abstractmethod
    def cardinality(self) -> int:
        """Units K, or the codebook size C."""

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        """Shortest input (at :attr:`sample_rate`) that yields one frame."""
        return 1

    @abstractmethod
    def encode_batch(self, wavs: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        """``wavs [B, N]`` mono at :attr:`sample_rate`, zero-padded; ``lengths [B]`` in samples."""

    def decode(self, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Ids back to ``[N]`` waveforms at :attr:`sample_rate`, for tokenizers that can."""
        raise NotImplementedError(
            f"{self.kind} ids cannot be decoded by the tokenizer itself; use a unit vocoder"
        )

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A dict with ``kind`` that :func:`tokenizer_from_config` turns back into this tokenizer.

        It records ``sample_rate``, ``frame_rate``, ``cardinality`` and ``num_codebooks`` too: the
        store and the bundle keep it as the stream's description.
        """

    @classmethod
    @abstractmethod
    def from_config(
        cls,
        config: dict[str, Any],
        base_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> SpeechTokenizer:
        """Build from a config dict (paths relative to ``base_dir``); bad fields raise
        :class:`TokenizerConfigError` naming the field."""

    # ---- conveniences shared by every tokenizer --------------------------------------------
    def encode(
        self,
        wavs: torch.Tensor | np.ndarray | Sequence[np.ndarray | torch.Tensor],
        lengths: torch.Tensor | Sequence[int] | None = None,
        sample_rate: int | None = None,
        names: Sequence[str] | None = None,
    ) -> TokenizerOutput:
        """Encode a batch: ``[B, N]``/``[B, C, N]`` padded with ``lengths``, or a list of ``[N]``/``[C, N]``.

        Channels are mixed to mono and audio is resampled from ``sample_rate`` (default: the
        tokenizer's). Empty, too short or non-finite inputs raise :class:`~tokunify.data.audio.AudioError`
        naming the input (``names[i]`` or ``input i``).
        """
        items = _split_batch(wavs, lengths)
        sr = sample_rate or self.sample_rate
        prepared = [
            audio_io.prepare(
                w, sr, self.sample_rate, names[i] if names else f"input {i}", self.min_samples
            )
            for i, w in enumerate(items)
        ]
        batch, lens = pad_batch(prepared)
        return self.encode_batch(batch, lens)

    def encode_files(self, paths: Sequence[str | Path]) -> TokenizerOutput:
        wavs = [audio_io.load(p, self.sample_rate, min_samples=self.min_samples) for p in paths]
        batch, lens = pad_batch(wavs)
        return self.encode_batch(batch, lens)


def _split_batch(wavs: Any, lengths: Any) -> list[np.ndarray]:
    if isinstance(wavs, (torch.Tensor, np.ndarray)):
        arr = (
            wavs.detach().cpu().float().numpy()
            if isinstance(wavs, torch.Tensor)
            else np.asarray(wavs, np.float32)
        )
        if arr.ndim == 1:
            arr = arr[None]
        n = arr.shape[-1]
        lens = [n] * arr.shape[0] if lengths is None else [int(x) for x in lengths]
        return [arr[i, ..., : lens[i]] for i in range(arr.shape[0])]
    out = []
    for w in wavs:
        out.append(
            w.detach().cpu().float().numpy()
            if isinstance(w, torch.Tensor)
            else np.asarray(w, np.float32)
        )
    return out


def pad_batch(wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[N_i]`` -> ``[B, max N]`` zero-padded float32 and ``[B]`` lengths."""
    lens = torch.tensor([len(w) for w in wavs], dtype=torch.long)
    batch = torch.zeros(len(wavs), int(lens.max()) if len(wavs) else 0)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return batch, lens


def dedup(units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapse runs: ``[T]`` -> (``[T']`` units, ``[T']`` run lengths). ``[5,5,2,5]`` -> ``[5,2,5]``, ``[2,1,1]``."""
    return torch.unique_consecutive(units, return_counts=True)


# The one registry of tokenizer kinds: kind -> "module:Class" (or the class itself). Modules load
# lazily, so optional backends cost nothing until used.
TOKENIZERS: dict[str, str | type[SpeechTokenizer]] = {
    "ssl_units": "tokunify.tokenizers.units:SSLUnitTokenizer",
    "mel_units": "tokunify.tokenizers.units:MelUnitTokenizer",
    "encodec": "tokunify.tokenizers.codec:EncodecTokenizer",
    "mimi": "tokunify.tokenizers.hf_codecs:MimiTokenizer",
    "dac": "tokunify.tokenizers.hf_codecs:DacTokenizer",
}


class TokenizerConfigError(ValueError):
    pass


def check_codes(
    ids: Sequence[torch.Tensor], num_codebooks: int, cardinality: int, kind: str
) -> int:
    """Check codec codes before decoding: each ``[n, T]`` with one ``1 <= n <= num_codebooks`` for
    all, codes in ``[0, cardinality)``. Returns ``n`` (0 for an empty list)."""
    n = ids[0].shape[0] if ids and ids[0].ndim == 2 else 0
    for c in ids:
        if c.ndim != 2 or not 1 <= c.shape[0] <= num_codebooks or c.shape[0] != n:
            raise TokenizerConfigError(
                f"{kind} codes must be [n, T] with the same 1 <= n <= {num_codebooks}, got {tuple(c.shape)}"
            )
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= cardinality):
            raise TokenizerConfigError(f"{kind} codes must lie in [0, {cardinality})")
    return n


def register_tokenizer(kind: str, target: str | type[SpeechTokenizer]) -> None:
    """Add a kind (a class, or ``"module:Class"`` loaded on first use). Refuses to replace one."""
    if kind in TOKENIZERS and TOKENIZERS[kind] != target:
        raise TokenizerConfigError(f"speech tokenizer kind {kind!r} is already registered")
    TOKENIZERS[kind] = target


def tokenizer_class(kind: Any) -> type[SpeechTokenizer]:
    """The class registered for ``kind``; asks nothing of the weights."""
    if not isinstance(kind, str) or kind not in TOKENIZERS:
        raise TokenizerConfigError(
            f"unknown speech tokenizer kind {kind!r}; known: {sorted(TOKENIZERS)}"
        )
    target = TOKENIZERS[kind]
    if isinstance(target, str):
        mod, _, name = target.partition(":")
        target = getattr(importlib.import_module(mod), name)
    if getattr(target, "stream_kind", None) not in STREAM_KINDS:
        raise TokenizerConfigError(
            f"speech tokenizer kind {kind!r}: {target.__name__}.stream_kind must be one of {STREAM_KINDS}"
        )
    return target


def stream_kind_of(config: dict[str, Any]) -> StreamKind:
    """``units`` or ``codec`` for a tokenizer config, from its registered class."""
    return tokenizer_class(config.get("kind")).stream_kind


def tokenizer_from_config(
    config: dict[str, Any], base_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> SpeechTokenizer:
    """Rebuild a tokenizer from :meth:`SpeechTokenizer.to_config` output (paths relative to ``base_dir``)."""
    cls = tokenizer_class(config.get("kind"))
    src = config.get("source")
    relative = isinstance(src, str) and src and not Path(src).is_absolute()
    if relative and base_dir is not None and (Path(base_dir) / src).is_dir():
        config = {**config, "source": str(Path(base_dir) / src)}  # an encoder a bundle carries
    return cls.from_config(config, base_dir=base_dir, device=device)


def resolve_path(path: str | Path, base_dir: str | Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p
