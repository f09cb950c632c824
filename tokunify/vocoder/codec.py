"""A codec's own decoder as a bundle's vocoder, and the one place that picks a stream's vocoder.

Codec tokenizers (EnCodec, Mimi, DAC) decode their codes themselves (``self_decoding`` in the
tokenizer registry), so a codec stream needs no trained vocoder: :class:`CodecVocoder` wraps the
bundle's speech tokenizer behind the :class:`~tokunify.vocoder.inference.UnitVocoder` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from tokunify.model.bundle import Bundle, BundleError
from tokunify.tokenizers.base import SpeechTokenizer, tokenizer_class
from tokunify.vocoder.codehifigan import VocoderError
from tokunify.vocoder.inference import UnitVocoder, load_vocoder


class CodecVocoder:
    """``[n, T]`` codes -> ``[T * hop]`` waveforms through the tokenizer's decoder."""

    def __init__(self, tokenizer: SpeechTokenizer):
        if not tokenizer.self_decoding:
            raise VocoderError(f"{tokenizer.kind} tokenizers cannot decode their own ids")
        self.tokenizer = tokenizer

    @property
    def sample_rate(self) -> int:
        return self.tokenizer.sample_rate

    @property
    def hop(self) -> int:
        return round(self.tokenizer.sample_rate / self.tokenizer.frame_rate)

    @property
    def num_units(self) -> int:
        return self.tokenizer.cardinality

    def check_units(self, k: int, source: str = "vocab") -> None:
        if k != self.num_units:
            raise VocoderError(
                f"codec has {self.num_units} codes per codebook, the {source} has {k}"
            )

    def __call__(
        self,
        units: Sequence[torch.Tensor],
        durations: Sequence[torch.Tensor] | None = None,
        speakers: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """Codes at frame rate; ``durations`` are accepted only as all ones (nothing to expand)."""
        if speakers is not None or (
            durations is not None and any(bool((d != 1).any()) for d in durations)
        ):
            raise VocoderError("codec codes are frame-rate: no durations or speakers")
        return self.tokenizer.decode(list(units))


def bundle_vocoder(
    bundle: Bundle,
    stream: str,
    device: str | torch.device = "cpu",
    speech_tokenizer: Callable[[], SpeechTokenizer] | None = None,
) -> UnitVocoder | CodecVocoder:
    """The vocoder of ``stream``: the one recorded in the bundle, else the speech tokenizer's own
    decoder when its kind decodes itself. ``speech_tokenizer`` reuses an already loaded tokenizer."""
    spec = bundle.spec.vocoders.get(stream)
    size = bundle.vocab.stream(stream).size
    where = f"vocab of {bundle.path}"
    if spec is not None:
        base = bundle.path or Path(".")
        model = load_vocoder(base / spec["weights"], config=base / spec["config"])
        unit_vocoder = UnitVocoder(model, device)
        unit_vocoder.check_units(size, where)
        return unit_vocoder
    cfg = bundle.spec.speech_tokenizers.get(stream)
    if cfg is not None and tokenizer_class(cfg.get("kind")).self_decoding:
        tok = speech_tokenizer() if speech_tokenizer else bundle.speech_tokenizer(stream, device)
        codec = CodecVocoder(tok)
        codec.check_units(size, where)
        return codec
    raise BundleError(
        f"{bundle.path}: no vocoder recorded for stream {stream!r} (tokunify attach-vocoder)"
    )
