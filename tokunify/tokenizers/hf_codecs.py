"""Mimi and DAC codec tokens through transformers' ``MimiModel`` and ``DacModel``.

Output per utterance is ``[n_q, T]`` local codes (codebook q, code c); ``num_codebooks`` picks n_q
(the first n_q residual codebooks). The codec's own decoder turns codes back into audio, so a bundle
needs no separate vocoder for these streams.

Config::

    kind: mimi                   # Moshi's codec: 24 kHz, 12.5 frames/s, codebook 0 distilled from WavLM
    source: kyutai/mimi          # hub id or a local save_pretrained dir
    num_codebooks: 8             # 1..32; codebook 0 is the semantic one (the `first` layout keeps it alone)

    kind: dac
    source: descript/dac_16khz   # 16 kHz, 50 frames/s, 12 codebooks of 1024
    num_codebooks: 12

Batching: Mimi is causal (causal convolutions, causal sliding-window transformer), so a right-padded
batch gives each utterance the codes it gets alone. DAC's convolutions look ahead, so padding would
change the last frames of the shorter utterances: DAC batches only utterances of the same padded
length, unless ``batch_padded: true`` trades that exactness for fuller batches (which made no
CPU run faster: ``benchmarks/codec_throughput.py``; a GPU may differ, unmeasured).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tokunify.tokenizers.base import (
    SpeechTokenizer,
    TokenizerConfigError,
    TokenizerOutput,
    check_codes,
    resolve_path,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TransformersCodecTokenizer(SpeechTokenizer):
    """A transformers neural codec: ``[B, N]`` audio -> ``[n_q, T]`` codes -> audio."""

    stream_kind = "codec"
    self_decoding = True
    model_class: ClassVar[str]  # transformers class name, loaded with from_pretrained
    causal: ClassVar[bool]  # True: right padding leaves the codes of the real frames unchanged

    def __init__(
        self,
        model: nn.Module,
        num_codebooks: int | None = None,
        source: str = "",
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        batch_padded: bool = False,
    ):
        if dtype not in DTYPES:
            raise TokenizerConfigError(f"{source}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        self.device, self.dtype, self.source = torch.device(device), dtype, source
        self.model = model.eval().to(self.device, DTYPES[dtype])
        n_q = self.max_codebooks if num_codebooks is None else int(num_codebooks)
        if not self.min_codebooks <= n_q <= self.max_codebooks:
            raise TokenizerConfigError(
                f"{source}: num_codebooks {n_q} must lie in [{self.min_codebooks}, {self.max_codebooks}]"
            )
        self._num_codebooks = n_q
        self.batch_padded = bool(batch_padded)
        # Padded samples per forward; None = the whole batch (on a GPU).
        self.micro_batch_samples: int | None = (
            None if self.device.type == "cuda" else 8 * self.sample_rate
        )

    # ---- what each codec answers ----------------------------------------------------------------
    @property
    @abstractmethod
    def hop(self) -> int:
        """Samples per frame."""

    @property
    @abstractmethod
    def max_codebooks(self) -> int: ...

    @property
    def min_codebooks(self) -> int:
        return 1

    @abstractmethod
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, N]`` (N a multiple of :attr:`hop`) -> ``[B, n_q, N / hop]`` codes."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, n, T]`` codes -> ``[B, N]`` audio."""

    # ---- the SpeechTokenizer interface ------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def cardinality(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    def _groups(self, lens: Sequence[int]) -> list[list[int]]:
        """Indices in forward passes: length-sorted, under :attr:`micro_batch_samples` padded samples;
        for a non-causal codec (without ``batch_padded``), only utterances of one padded length."""
        may_pad = self.causal or self.batch_padded
        budget = self.micro_batch_samples or (1 << 62)
        groups: list[list[int]] = []
        for i in sorted(range(len(lens)), key=lens.__getitem__):
            g = groups[-1] if groups else None
            if (
                g is not None
                and (may_pad or lens[g[0]] == lens[i])
                and lens[i] * (len(g) + 1) <= budget
            ):
                g.append(i)
            else:
                groups.append([i])
        return groups

    @torch.inference_mode()
    def encode_batch(self, wavs: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        """``wavs [B, N]`` -> ``[n_q, ceil(N_i / hop)]`` codes per utterance (inputs zero-padded to
        whole frames)."""
        frames = [math.ceil(int(n) / self.hop) for n in lengths]
        padded = [t * self.hop for t in frames]
        x = wavs.to(self.device, torch.float32)
        out: dict[int, torch.Tensor] = {}
        for group in self._groups(padded):
            n_max = padded[group[-1]]
            xb = torch.zeros(len(group), 1, n_max, device=self.device)  # [b, 1, N]
            for j, g in enumerate(group):
                n = min(int(lengths[g]), x.shape[1])
                xb[j, 0, :n] = x[g, :n]
            codes = self._encode(xb.to(DTYPES[self.dtype]))  # [b, n_q, T]
            if codes.shape[-1] < frames[group[-1]]:
                raise TokenizerConfigError(
                    f"{self.source}: {n_max} samples gave {codes.shape[-1]} frames, not "
                    f"{frames[group[-1]]}: the config's frame rate disagrees with the model"
                )
            for j, g in enumerate(group):
                out[g] = codes[j, :, : frames[g]].long().cpu()
        return TokenizerOutput(ids=[out[i] for i in range(len(frames))])

    @torch.inference_mode()
    def decode(self, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[n, T]`` codes per utterance -> mono ``[T * hop]`` waveforms at :attr:`sample_rate`.

        ``n`` may be fewer than :attr:`num_codebooks`: the first ``n`` residual codebooks decode
        on their own (the ``first`` layout gives codebook 0 only).
        """
        if not ids:
            return []
        n = check_codes(ids, self.num_codebooks, self.cardinality, self.kind)
        lens = [int(c.shape[1]) for c in ids]
        out: dict[int, torch.Tensor] = {}
        for group in self._groups(lens):
            t_max = lens[group[-1]]
            batch = torch.zeros(len(group), n, t_max, dtype=torch.long, device=self.device)
            for j, g in enumerate(group):
                batch[j, :, : lens[g]] = ids[g].to(self.device)
            wav = self._decode(batch).float()  # [b, N]
            for j, g in enumerate(group):
                out[g] = wav[j, : lens[g] * self.hop].cpu()
        return [out[i] for i in range(len(ids))]

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "kind": self.kind,
            "source": self.source,
            "num_codebooks": self.num_codebooks,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "cardinality": self.cardinality,
        }
        if self.dtype != "float32":
            cfg["dtype"] = self.dtype
        if self.batch_padded:
            cfg["batch_padded"] = True
        return cfg

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        base_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> TransformersCodecTokenizer:
        known = {"kind", "source", "num_codebooks", "sample_rate", "frame_rate", "cardinality"}
        known |= {"dtype", "batch_padded", "hash"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise TokenizerConfigError(
                f"{cls.kind} config: unknown field(s) {unknown}; known: {sorted(known)}"
            )
        source = config.get("source")
        if not source or not isinstance(source, str):
            raise TokenizerConfigError(f"{cls.kind} config needs 'source' (hub id or local dir)")
        path = resolve_path(source, base_dir)
        if path.exists():  # a local dir: recorded absolute, so stores and bundles load it anywhere
            source = str(path.resolve())
        model = load_pretrained(cls.model_class, source)
        n_q = config.get("num_codebooks")
        if n_q is not None and (not isinstance(n_q, int) or isinstance(n_q, bool)):
            raise TokenizerConfigError(f"{source}: num_codebooks must be an integer, got {n_q!r}")
        tok = cls(
            model,
            num_codebooks=n_q,
            source=source,
            device=device,
            dtype=str(config.get("dtype", "float32")),
            batch_padded=bool(config.get("batch_padded", False)),
        )
        for key in ("sample_rate", "frame_rate", "cardinality"):  # recorded: must still hold
            want = config.get(key)
            if want is not None and not math.isclose(float(want), float(getattr(tok, key))):
                raise TokenizerConfigError(
                    f"{source}: the model has {key} {getattr(tok, key)}, the config says {want}"
                )
        return tok


def load_pretrained(class_name: str, source: str) -> nn.Module:
    """``transformers.<class_name>.from_pretrained(source)``, with a one-line error."""
    import transformers

    try:
        return getattr(transformers, class_name).from_pretrained(source).eval()
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerConfigError(f"{source}: cannot load a {class_name}: {msg}") from e


class MimiTokenizer(TransformersCodecTokenizer):
    """Kyutai's Mimi (Moshi, Llama-Mimi): codebook 0 is distilled from WavLM (semantic), the rest
    are acoustic residuals. ``num_codebooks`` defaults to 8, as Moshi uses (or all, if fewer)."""

    kind = "mimi"
    model_class = "MimiModel"
    causal = True

    def __init__(self, model: nn.Module, num_codebooks: int | None = None, **kwargs: Any):
        default = min(8, int(model.config.num_quantizers))
        super().__init__(model, default if num_codebooks is None else num_codebooks, **kwargs)

    @property
    def hop(self) -> int:
        # transformers 4.57 and 5.x both expose config.frame_rate (12.5 for kyutai/mimi)
        c = self.model.config
        return round(c.sampling_rate / c.frame_rate)

    @property
    def max_codebooks(self) -> int:
        return int(self.model.config.num_quantizers)

    @property
    def min_codebooks(self) -> int:
        return int(self.model.config.num_semantic_quantizers)

    @property
    def semantic_codebooks(self) -> int:
        """Leading codebooks distilled from WavLM (1 for kyutai/mimi)."""
        return self.min_codebooks

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x, num_quantizers=self.num_codebooks).audio_codes

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes).audio_values[:, 0]


class DacTokenizer(TransformersCodecTokenizer):
    """Descript Audio Codec: residual codebooks at 16/24/44 kHz. Non-causal (see the module doc)."""

    kind = "dac"
    model_class = "DacModel"
    causal = False

    @property
    def hop(self) -> int:
        return int(self.model.config.hop_length)

    @property
    def max_codebooks(self) -> int:
        return int(self.model.config.n_codebooks)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x, n_quantizers=self.num_codebooks).audio_codes

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        # DAC's decoder returns a few samples under T * hop: pad back to whole frames
        wav = self.model.decode(audio_codes=codes).audio_values  # [b, N'] or [b, 1, N']
        wav = wav.reshape(wav.shape[0], -1)
        return nn.functional.pad(wav, (0, max(0, codes.shape[-1] * self.hop - wav.shape[-1])))
