"""Vocoder inference: batched, device/dtype-agnostic, weight norm folded, streaming in chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from tokunify.vocoder.codehifigan import CodeHiFiGAN, VocoderError, load_codehifigan
from tokunify.vocoder.unitmel import UnitMel, is_unitmel_config, load_unitmel


def load_vocoder(path: str | Path, config: str | Path | None = None) -> CodeHiFiGAN | UnitMel:
    """A unit vocoder from a directory (``config.json`` + weights) or a weights file with
    ``config``: CodeHiFiGAN (published or trained here), or the CPU unit->mel+Griffin-Lim model
    (``"model": "unit2mel"`` in its config)."""
    p = Path(path)
    cfg = (
        Path(config) if config else (p / "config.json" if p.is_dir() else p.parent / "config.json")
    )
    if is_unitmel_config(cfg):
        return load_unitmel(p / "generator.safetensors" if p.is_dir() else p, cfg)
    return load_codehifigan(p, config)


class UnitVocoder:
    """Units (frame-rate, or deduplicated with durations / predicted durations) -> waveforms.

    ``dtype`` may be ``torch.float16``/``bfloat16`` on a GPU; ``compile=True`` wraps the generator in
    ``torch.compile`` (same weights, output within float tolerance).
    """

    def __init__(
        self,
        model: CodeHiFiGAN | UnitMel,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ):
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.model = model.fold_weight_norm().eval().to(self.device, self.dtype)
        self._generate = (
            torch.compile(self.model.generate, dynamic=True) if compile else self.model.generate
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> UnitVocoder:
        return cls(load_vocoder(path), device, dtype, compile)

    @property
    def sample_rate(self) -> int:
        return int(self.model.cfg.sampling_rate)

    @property
    def hop(self) -> int:
        return int(self.model.cfg.hop)

    @property
    def num_units(self) -> int:
        return self.model.cfg.num_embeddings

    def check_units(self, k: int, source: str = "vocab") -> None:
        if k != self.num_units:
            raise VocoderError(f"vocoder has {self.num_units} units, the {source} has {k}")

    @torch.inference_mode()
    def durations(self, units: torch.Tensor) -> torch.Tensor:
        """Predicted frames per deduplicated unit, ``[T] -> [T]``."""
        return self.model.predict_durations(units.to(self.device)[None])[0]

    @torch.inference_mode()
    def frames(
        self, frames: Sequence[torch.Tensor], speakers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Frame-rate unit sequences -> ``[N]`` float32 waveforms (batched, right-padded, cropped)."""
        if not frames:
            return []
        lens = [int(f.numel()) for f in frames]
        codes = torch.zeros(len(frames), max(lens), dtype=torch.long, device=self.device)
        for i, f in enumerate(frames):
            codes[i, : lens[i]] = f.to(self.device).long()
        if int(codes.max()) >= self.num_units or int(codes.min()) < 0:
            raise VocoderError(f"unit ids must lie in [0, {self.num_units})")
        x = self.model.dict(codes).transpose(1, 2).to(self.dtype)  # [B, C, T]
        if self.model.spkr is not None:
            if speakers is None:
                raise VocoderError("multi-speaker vocoder: pass speakers")
            spk = self.model.spkr(torch.as_tensor(list(speakers), device=self.device)).to(
                self.dtype
            )
            x = torch.cat([x, spk[:, :, None].expand(-1, -1, x.shape[-1])], dim=1)
        wav = self._generate(x)[:, 0].float()  # [B, N]
        return [wav[i, : lens[i] * self.hop].cpu() for i in range(len(frames))]

    def __call__(
        self,
        units: Sequence[torch.Tensor],
        durations: Sequence[torch.Tensor] | None = None,
        speakers: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """Deduplicated units with ``durations`` (or predicted ones), or frame-rate units when the
        vocoder has no duration predictor and no durations are given."""
        if durations is None and self.model.dur_predictor is not None:
            durations = [self.durations(u) if u.numel() else u for u in units]
        frames = (
            [
                torch.repeat_interleave(u.long().cpu(), d.long().cpu())
                for u, d in zip(units, durations, strict=True)
            ]
            if durations is not None
            else list(units)
        )
        return self.frames(frames, speakers)

    def stream(
        self, frames: Iterable[int], chunk: int = 25, context: int = 24, speaker: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Frame-rate units arriving one by one -> audio chunks of ``chunk`` frames
        (:class:`UnitChunks` with the frames as they are)."""
        chunks = UnitChunks(self, chunk, context, speaker, frame_rate=True)
        for f in frames:
            yield from chunks.push([f])
        yield from chunks.finish()

    def chunks(self, chunk: int = 25, context: int = 24, speaker: int | None = None) -> UnitChunks:
        """A push-style stream of one utterance's units (deduplicated where the vocoder predicts
        durations, frame-rate otherwise, as :meth:`__call__` reads them) -> audio chunks."""
        return UnitChunks(self, chunk, context, speaker)


DURATION_LOOKAHEAD = 2
"""Units of right context a predicted duration needs (the predictor's two k=3 convolutions): a
streamed unit is expanded to its frames once this many more units have come."""


class UnitChunks:
    """The one streaming rule of a unit vocoder: units arriving a few at a time -> audio chunks.

    A unit is expanded to its predicted frames once :data:`DURATION_LOOKAHEAD` more units have come
    (all of them at :meth:`finish`); with ``frame_rate`` (or a vocoder without a duration predictor)
    the units are the frames. Every ``chunk`` frames are vocoded with ``context`` frames on each side
    and cropped, so the chunks concatenate to the whole utterance vocoded at once within float
    tolerance (the generator's receptive field is a few frames, ``context`` is more). Latency:
    ``chunk + context`` frames (+ the lookahead's units)."""

    def __init__(
        self,
        vocoder: UnitVocoder,
        chunk: int = 25,
        context: int = 24,
        speaker: int | None = None,
        frame_rate: bool = False,
    ):
        if chunk < 1 or context < 0:
            raise ValueError(f"chunk must be >= 1 and context >= 0, got {chunk} and {context}")
        self.vocoder, self.chunk, self.context = vocoder, chunk, context
        self.speakers = [speaker] if speaker is not None else None
        self.frame_rate = frame_rate or vocoder.model.dur_predictor is None
        self.units: list[int] = []
        self.frames: list[int] = []  # frame-rate units of the expanded units
        self.expanded = 0  # units whose frames are in ``frames``
        self.emitted = 0  # frames already vocoded

    def push(self, units: Iterable[int]) -> list[torch.Tensor]:
        """New units -> the chunks that became ready (``[n]`` float32 each)."""
        self.units += [int(u) for u in units]
        self._expand(len(self.units) - (0 if self.frame_rate else DURATION_LOOKAHEAD))
        out = []
        while len(self.frames) - self.emitted >= self.chunk + self.context:
            out.append(self._window(self.emitted, self.emitted + self.chunk))
            self.emitted += self.chunk
        return out

    def finish(self) -> list[torch.Tensor]:
        """The utterance is complete: the rest of its chunks."""
        self._expand(len(self.units))
        out = []
        while self.emitted < len(self.frames):
            end = min(self.emitted + self.chunk, len(self.frames))
            out.append(self._window(self.emitted, end))
            self.emitted = end
        return out

    def _expand(self, upto: int) -> None:
        if upto <= self.expanded:
            return
        if self.frame_rate:
            self.frames += self.units[self.expanded : upto]
        else:
            d = self.vocoder.durations(torch.tensor(self.units)).tolist()  # [T]
            for i in range(self.expanded, upto):
                self.frames += [self.units[i]] * int(d[i])
        self.expanded = upto

    def _window(self, a: int, b: int) -> torch.Tensor:
        lo, hi = max(0, a - self.context), min(len(self.frames), b + self.context)
        wav = self.vocoder.frames([torch.tensor(self.frames[lo:hi])], self.speakers)[0]
        hop = self.vocoder.hop
        return wav[(a - lo) * hop : (b - lo) * hop]  # [(b - a) * hop]
