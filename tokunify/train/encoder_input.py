"""Speech input through an encoder in the training step (``speech_input`` in the train config).

Records hear a continuous stream (:func:`tokunify.core.vocab.continuous_stream`) as a frame count:
:class:`FrameCounts` adds to each record of a store ``streams[NAME] = n``, the encoder + adapter
output length of the record's audio (``SpeechInput.output_lengths`` of its 16 kHz samples), so the
task formats put ``n`` placeholders where the speech goes. A document keeps its record's audio as
an :class:`~tokunify.train.packing.AudioSpan` (:func:`audio_of`); at each step :class:`SpeechFeed`
reads the batch's audio, runs the encoder and the adapter (on the fly: nothing is stored) and
overwrites each packed row's placeholders, document after document, with the frames
(:func:`~tokunify.model.speech_input.embed_inputs`).

:class:`ManifestRecords` reads a manifest as records without a speech tokenizer, for runs whose
tasks hear speech only through the encoder (ASR on a bundle with no unit stream).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tokunify.data.audio import AudioError
from tokunify.data.audio import load as load_audio
from tokunify.data.manifest import Entry
from tokunify.data.store import Record, StoreError, record_from_entry, shuffled_order
from tokunify.data.store.schema import empty_record
from tokunify.model.encoders import SAMPLE_RATE
from tokunify.model.speech_input import SpeechInput, embed_inputs
from tokunify.tokenize.job import load_rows
from tokunify.train.packing import AudioSpan, PackedBatch

CHUNK_ROWS = 256  # manifest rows per shuffle window unit (as a store's shard)
SILENCE_SAMPLES = SAMPLE_RATE // 2  # what a batch without audio feeds the speech input (DDP)


class ManifestRecords:
    """A manifest's rows as store records (text, words, audio; no speech ids): what a run whose
    tasks hear speech only through the encoder reads. Rejected rows are empty records."""

    def __init__(self, manifest: str | Path):
        self.rows = load_rows(manifest)
        if not self.rows:
            raise StoreError(f"{manifest}: no rows to train on")
        self.root = Path(manifest)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Record:
        row = self.rows[i]
        if not isinstance(row, Entry):
            return empty_record()
        return record_from_entry(row, 0.0, None, {}, {})

    def order(self, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
        n = len(self.rows)
        chunks = [min(CHUNK_ROWS, n - a) for a in range(0, n, CHUNK_ROWS)]
        return shuffled_order(chunks, seed, epoch, shuffle)

    def ids(self) -> list[str]:
        return [
            r.id if isinstance(r, Entry) else f"\0rejected-{i}" for i, r in enumerate(self.rows)
        ]


class FrameCounts:
    """A store whose records also hold a continuous stream: ``streams[stream] = n``, the speech
    input's output frames for the record's audio (counted once per record; unreadable or
    missing audio gives no count, so no speech-input task takes the record)."""

    def __init__(self, store: Any, speech_input: SpeechInput, stream: str):
        self.store, self.speech_input, self.stream = store, speech_input, stream
        self.root = store.root
        self._counts: dict[int, int | None] = {}

    def __len__(self) -> int:
        return len(self.store)

    def __getattr__(self, name: str) -> Any:  # meta, check_streams: the store's
        store = self.__dict__.get("store")
        if store is None:
            raise AttributeError(name)
        return getattr(store, name)

    def count(self, i: int, r: Record) -> int | None:
        if i not in self._counts:
            self._counts[i] = None
            if r.audio:
                try:
                    wav = load_audio(r.audio, SAMPLE_RATE, r.start, r.end)
                except AudioError:
                    return None
                self._counts[i] = int(self.speech_input.output_lengths([len(wav)])[0])
        return self._counts[i]

    def __getitem__(self, i: int) -> Record:
        r = self.store[i]
        n = self.count(i, r)
        if n is None:
            return r
        return replace(r, streams={**r.streams, self.stream: np.asarray(n, dtype=np.int64)})

    def order(self, seed: int = 0, epoch: int = 0) -> np.ndarray:
        return self.store.order(seed, epoch)

    def ids(self) -> list[str]:
        return self.store.ids()


def audio_of(r: Record, frames: int) -> tuple[AudioSpan, ...]:
    """The audio of a record's ``frames`` placeholders (all its encoder frames)."""
    if not frames:
        return ()
    if not r.audio:
        raise StoreError(f"record {r.id!r}: {frames} speech-input placeholders but no audio")
    return (AudioSpan(str(r.audio), r.start, r.end, 0, int(frames)),)


class SpeechFeed:
    """The step's speech input: a batch's audio -> encoder + adapter frames -> ``inputs_embeds``.

    ``module`` is the speech input as ``accelerator.prepare`` returned it (DDP-wrapped where
    several processes train it); ``placeholder`` the continuous stream's id. With ``every_step``
    (several processes) a batch without audio still runs the speech input, on a short silence
    whose frames enter the embeddings times zero: every rank's DDP then reduces the same
    gradients each step (a rank that skipped the module would leave the others waiting).
    """

    def __init__(self, module: nn.Module, placeholder: int, every_step: bool = False):
        self.module, self.placeholder, self.every_step = module, placeholder, every_step

    def rows(self, audio: list[list[AudioSpan]]) -> list[torch.Tensor]:
        """Per row, the frames of its spans in order, ``[n_b, H]``."""
        sources = list(dict.fromkeys(s.source for row in audio for s in row))
        where = {src: k for k, src in enumerate(sources)}
        try:
            wavs = [load_audio(p, SAMPLE_RATE, a, b) for p, a, b in sources]
        except AudioError as e:
            raise StoreError(f"speech input: {e}") from None
        feats, lengths = self.module(wavs, SAMPLE_RATE)  # [N, T', H], [N]
        out = []
        for row in audio:
            parts = [feats[where[s.source], s.first : s.first + s.frames] for s in row]
            for s, part in zip(row, parts, strict=True):
                if part.shape[0] != s.frames:
                    raise StoreError(
                        f"{s.path}: the speech input gives {int(lengths[where[s.source]])} frames, "
                        f"the document holds placeholders up to frame {s.first + s.frames}"
                    )
            out.append(torch.cat(parts) if parts else feats.new_zeros(0, feats.shape[-1]))
        return out

    def embeds(self, lm: nn.Module, batch: PackedBatch) -> torch.Tensor:
        """``inputs_embeds [B, L, H]`` of a packed batch: its placeholders hold its audio's frames."""
        lm = getattr(lm, "module", lm)  # the LM inside a DDP wrapper
        if not batch.has_audio:
            # the speech input runs before the embeddings, as with audio: DDP's gradient hooks
            # then fire in the same order on every rank, whichever ranks have audio
            feats, _ = self.module([np.zeros(SILENCE_SAMPLES, np.float32)], SAMPLE_RATE)
            embeds = lm.get_input_embeddings()(batch.input_ids)  # [B, L, H]
            return embeds + 0.0 * feats.sum().to(embeds.dtype)
        return embed_inputs(lm, batch.input_ids, self.rows(batch.audio), self.placeholder)


__all__ = ["FrameCounts", "ManifestRecords", "SpeechFeed", "audio_of"]
