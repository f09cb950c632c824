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
        """Frame-rate units arriving one by one -> audio chunks of ``chunk`` frames.

        Each chunk is vocoded with ``context`` frames on both sides and cropped, so the concatenated
        chunks equal the whole-utterance output within float tolerance (the generator's receptive
        field is a few frames). Latency: ``chunk + context`` frames.
        """
        buf: list[int] = []
        done = 0  # frames already emitted
        spk = [speaker] if speaker is not None else None
        for f in frames:
            buf.append(int(f))
            while len(buf) - done >= chunk + context:
                yield self._window(buf, done, done + chunk, context, spk)
                done += chunk
        while done < len(buf):
            end = min(done + chunk, len(buf))
            yield self._window(buf, done, end, context, spk)
            done = end

    def _window(
        self, buf: list[int], a: int, b: int, context: int, spk: list[int] | None
    ) -> torch.Tensor:
        lo, hi = max(0, a - context), min(len(buf), b + context)
        wav = self.frames([torch.tensor(buf[lo:hi])], spk)[0]
        return wav[(a - lo) * self.hop : (b - lo) * self.hop]
