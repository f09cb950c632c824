"""Speech in through an encoder and an adapter: :class:`SpeechInput` and :func:`embed_inputs`.

A continuous stream (:func:`tokunify.core.vocab.continuous_stream`) puts one placeholder id per
adapter frame into a sequence (``<|enc_start|> <|enc_frame|> * n <|enc_end|>``, with
``n = SpeechInput.output_lengths(samples)``). At the LM input, :func:`embed_inputs` takes the LM's
embeddings of the ids and overwrites the placeholder rows, in order, with the adapter's outputs,
as ESPnet-SpeechLM's continuous audio input and SpeechVerse/SALMONN/Qwen-Audio do::

    wavs --SpeechEncoder--> feats [B, T, D] --Adapter--> speech [B, T', H]
    ids [B, L] --lm.get_input_embeddings()--> [B, L, H], placeholder rows <- speech frames

Saved beside a bundle (the LM part still loads in plain transformers)::

    BUNDLE/speech_input/
      speech_input.json     stream, and the relative paths and settings of the two parts
      encoder/              SpeechEncoder.save: save_pretrained of the encoder + feature extractor
      adapter/              adapter.json + adapter.safetensors

Every path inside is relative, so a moved bundle still loads (:func:`load_speech_input`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tokunify.core.fsio import atomic_dir
from tokunify.model.adapters import Adapter, AdapterError, build_adapter, load_adapter
from tokunify.model.encoders import EncoderError, Layer, SpeechEncoder

SPEECH_INPUT_DIR = "speech_input"
SPEECH_INPUT_FILE = "speech_input.json"
SPEECH_INPUT_FORMAT = "tokunify.speech_input"  # a file-format name, not a module path
SPEECH_INPUT_VERSION = 1


class SpeechInputError(ValueError):
    """A speech input is misconfigured, its saved directory is incomplete, or its frames do not
    match a sequence's placeholders."""


class SpeechInput(nn.Module):
    """Encoder + adapter for one continuous stream: ``forward(wavs) -> (speech [B, T', H], lengths)``."""

    def __init__(self, encoder: SpeechEncoder, adapter: Adapter, stream: str = "enc"):
        super().__init__()
        if adapter.in_dim != encoder.dim:
            raise SpeechInputError(
                f"adapter {adapter.name!r} takes {adapter.in_dim}-dim frames, the encoder gives {encoder.dim}"
            )
        self.encoder, self.adapter, self.stream = encoder, adapter, stream

    @classmethod
    def build(
        cls,
        encoder: str | Path,
        lm_hidden_size: int,
        adapter: str = "conv",
        layer: Layer = -1,
        freeze: bool = True,
        stream: str = "enc",
        adapter_options: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
    ) -> SpeechInput:
        """A speech input of a pretrained encoder (hub id or directory) and a new adapter whose
        outputs have the LM's hidden size."""
        enc = SpeechEncoder.from_pretrained(encoder, layer=layer, freeze=freeze, device=device)
        ad = build_adapter(adapter, enc.dim, lm_hidden_size, **(adapter_options or {}))
        return cls(enc, ad.to(device), stream)

    @property
    def out_dim(self) -> int:
        return self.adapter.out_dim

    @property
    def frame_rate(self) -> float:
        """Adapter frames per second (the placeholders per second of speech)."""
        n = 16000 * 60  # one minute: rates are exact ratios of whole frame counts
        return float(self.output_lengths([n])[0]) / 60.0

    def output_lengths(self, num_samples: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``[B]`` adapter frames, i.e. placeholders, of wavs of ``num_samples`` samples at 16 kHz."""
        return self.adapter.output_lengths(self.encoder.output_lengths(num_samples))

    def forward(
        self,
        wavs: Sequence[np.ndarray] | np.ndarray,
        sample_rate: int | Sequence[int] = 16000,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, lengths = self.encoder(wavs, sample_rate)  # [B, T, D], [B]
        return self.adapter(feats, lengths)  # [B, T', H], [B]

    @property
    def config(self) -> dict[str, Any]:
        return {
            "format": SPEECH_INPUT_FORMAT,
            "version": SPEECH_INPUT_VERSION,
            "stream": self.stream,
            "encoder": {"path": "encoder", **self.encoder.config, "source": self.encoder.source},
            "adapter": {"path": "adapter", **self.adapter.config},
        }

    def save(self, path: str | Path) -> Path:
        """Write the speech input directory (atomically): its json, ``encoder/``, ``adapter/``."""
        with atomic_dir(Path(path)) as tmp:
            self.encoder.save(tmp / "encoder")
            self.adapter.save(tmp / "adapter")
            (tmp / SPEECH_INPUT_FILE).write_text(json.dumps(self.config, indent=2) + "\n")
        return Path(path)


def save_speech_input(bundle: str | Path, speech_input: SpeechInput) -> Path:
    """Save ``speech_input`` beside a bundle's LM: ``BUNDLE/speech_input/``."""
    return speech_input.save(Path(bundle) / SPEECH_INPUT_DIR)


def _read_config(p: Path) -> dict[str, Any]:
    f = p / SPEECH_INPUT_FILE
    if not f.is_file():
        raise SpeechInputError(f"{f}: missing; not a speech input directory")
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise SpeechInputError(f"{f}: not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("format") != SPEECH_INPUT_FORMAT:
        raise SpeechInputError(f"{f}: not a tokunify speech input (format {SPEECH_INPUT_FORMAT!r})")
    if d.get("version") != SPEECH_INPUT_VERSION:
        raise SpeechInputError(f"{f}: version {d.get('version')!r} is not supported")
    for key in ("stream", "encoder", "adapter"):
        if key not in d:
            raise SpeechInputError(f"{f}: no {key!r}")
    return d


def has_speech_input(path: str | Path) -> bool:
    """Whether ``path`` (a bundle or a speech input directory) holds a speech input."""
    p = Path(path)
    return (p / SPEECH_INPUT_FILE).is_file() or (p / SPEECH_INPUT_DIR / SPEECH_INPUT_FILE).is_file()


def load_speech_input(path: str | Path, device: torch.device | str = "cpu") -> SpeechInput:
    """The speech input of a bundle (``BUNDLE/speech_input/``) or of its own directory."""
    p = Path(path)
    if not (p / SPEECH_INPUT_FILE).is_file() and (p / SPEECH_INPUT_DIR).is_dir():
        p = p / SPEECH_INPUT_DIR
    d = _read_config(p)
    enc_cfg, ad_cfg = d["encoder"], d["adapter"]
    try:
        encoder = SpeechEncoder.from_pretrained(
            p / str(enc_cfg.get("path", "encoder")),
            layer=enc_cfg.get("layer", -1),
            freeze=bool(enc_cfg.get("freeze", True)),
            device=device,
        )
        adapter = load_adapter(p / str(ad_cfg.get("path", "adapter")), device)
    except (EncoderError, AdapterError) as e:
        raise SpeechInputError(f"{p}: {e}") from None
    return SpeechInput(encoder, adapter, str(d["stream"]))


# ---- the LM input ----------------------------------------------------------------------------------
def _rows(
    speech: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor | None, batch: int
) -> list[torch.Tensor]:
    """Per row of the batch, its speech frames ``[n_b, H]``."""
    if isinstance(speech, torch.Tensor):
        if speech.ndim != 3:
            raise SpeechInputError(
                f"speech embeddings must be [B, T', H] or a list of [n_b, H], got shape {tuple(speech.shape)}"
            )
        if lengths is None:
            lengths = torch.full((speech.shape[0],), speech.shape[1], dtype=torch.long)
        speech = [speech[i, : int(n)] for i, n in enumerate(lengths.tolist())]
    rows = list(speech)
    if len(rows) != batch:
        raise SpeechInputError(
            f"{len(rows)} rows of speech embeddings for {batch} rows of input ids"
        )
    return rows


def embed_inputs(
    lm: nn.Module,
    input_ids: torch.Tensor,
    speech: torch.Tensor | Sequence[torch.Tensor],
    placeholder: int,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """``inputs_embeds [B, L, H]``: the LM's embeddings of ``input_ids [B, L]`` with the rows at
    ``placeholder`` overwritten, in order, by the speech frames of the same batch row.

    ``speech``: ``[B, T', H]`` adapter outputs with ``lengths [B]`` (row ``b`` takes
    ``speech[b, :lengths[b]]``), or a list of ``B`` tensors ``[n_b, H]`` (several utterances
    packed into one row: their frames concatenated in order). A row whose placeholders and frames
    differ in number raises, naming the row and both counts.
    """
    embeds = lm.get_input_embeddings()(input_ids)  # [B, L, H]
    rows = _rows(speech, lengths, input_ids.shape[0])
    is_ph = input_ids == placeholder  # [B, L]
    counts = is_ph.sum(dim=1).tolist()
    for b, (n_ph, frames) in enumerate(zip(counts, rows, strict=True)):
        if n_ph != frames.shape[0]:
            raise SpeechInputError(
                f"row {b}: {n_ph} placeholders but {frames.shape[0]} speech frames"
            )
        if frames.ndim != 2 or (frames.shape[0] and frames.shape[1] != embeds.shape[-1]):
            raise SpeechInputError(
                f"row {b}: speech frames of shape {tuple(frames.shape)}, the LM's embeddings are {embeds.shape[-1]}-dim"
            )
    if not any(counts):
        return embeds
    flat = torch.cat([f for f in rows if f.shape[0]]).to(embeds.dtype)  # [sum n_b, H]
    return embeds.masked_scatter(is_ph[..., None], flat)


__all__ = [
    "SPEECH_INPUT_DIR",
    "SPEECH_INPUT_FILE",
    "SpeechInput",
    "SpeechInputError",
    "embed_inputs",
    "has_speech_input",
    "load_speech_input",
    "save_speech_input",
]
