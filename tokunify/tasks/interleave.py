"""Word-level interleaving of text and speech (SpiritLM style), from aligned or synthesized spans."""

from itertools import groupby

import numpy as np

from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks.base import (
    FormatError,
    TaskFormat,
    Word,
)


class InterleaveFormat(TaskFormat):
    """Word-level interleaving (SpiritLM style): modality switches at word boundaries.

    Words are grouped into spans of ``span_words`` (min, max) words; span modalities alternate,
    starting from a random one. Every token after the task tag is trained on. With words
    ``the|cat|sat`` (text ids ``[5]``, ``[6]``, ``[7]``; units ``[1]``, ``[2, 2]``, ``[4]``) and spans
    ``[the] [cat sat]`` starting with text::

        [bos, task:interleave, text_start, T:5, text_end, units_start, u:2, u:2, u:4, units_end, eos]

    ``parse`` returns the list of :class:`Segment` in order.
    """

    task = "interleave"
    target_modality = None
    requires = ("speech", "text", "words")

    def __init__(
        self,
        vocab: UnifiedVocab,
        stream: str | None = None,
        loss_on_input: bool = True,
        span_words: tuple[int, int] = (1, 5),
    ):
        super().__init__(vocab, stream, loss_on_input)
        if not 1 <= span_words[0] <= span_words[1]:
            raise ValueError(f"span_words must satisfy 1 <= min <= max, got {span_words}")
        self.span_words = span_words

    @classmethod
    def from_options(cls, vocab, options):
        return cls(vocab, options.stream)  # always trains on every segment

    def spans(self, n_words: int, rng: np.random.Generator) -> list[tuple[int, int, str]]:
        """``(start, stop, modality)`` word spans covering ``range(n_words)``."""
        out: list[tuple[int, int, str]] = []
        modality = "text" if rng.random() < 0.5 else self.stream
        i = 0
        while i < n_words:
            k = int(rng.integers(self.span_words[0], self.span_words[1] + 1))
            out.append((i, min(i + k, n_words), modality))
            modality = self.stream if modality == "text" else "text"
            i += k
        return out

    def targets(self, utt, target, rng):
        if not utt.words:
            raise FormatError("interleave needs word alignments (utterance.words is empty)")
        rng = rng if rng is not None else np.random.default_rng(0)
        segs: list[tuple[str, np.ndarray]] = []
        for a, b, modality in self.spans(len(utt.words), rng):
            words = utt.words[a:b]
            if modality == "text":
                segs.append(
                    ("text", np.concatenate([np.asarray(w.text, dtype=np.int64) for w in words]))
                )
            else:
                parts = [np.asarray(w.speech[self.stream], dtype=np.int64) for w in words]
                segs.append((modality, np.concatenate(parts, axis=-1)))
        return segs

    def parse(self, ids):
        return self.parse_checked(ids).segments


class SynthInterleaveFormat(TaskFormat):
    """Synthetic interleaved documents (the GLM-4-Voice recipe, ``tokunify synth-interleave``):
    text spans and speech spans whose units a TTS model generated, in the store's order.

    The record's words carry the spans: a word of a speech span owns a slice of the units, a word
    of a text span none. Consecutive words of one modality make one segment; every token after the
    task tag is trained on. Words ``the|cat|sat`` (text ids ``[5]``, ``[6]``, ``[7]``) where
    ``cat sat`` is a speech span with units ``[2, 2]`` + ``[4]``::

        [bos, task:synth_interleave, text_start, T:5, text_end, units_start, u:2, u:2, u:4, units_end, eos]

    Only records with ``doc_kind: synth_interleave`` are eligible (and no other task reads them).
    """

    task = "synth_interleave"
    target_modality = None
    requires = ("words",)
    doc_kinds = ("synth_interleave",)

    def __init__(self, vocab: UnifiedVocab, stream: str | None = None, loss_on_input: bool = True):
        super().__init__(vocab, stream, loss_on_input)

    @classmethod
    def from_options(cls, vocab, options):
        return cls(vocab, options.stream)  # always trains on every segment

    def _modality(self, w: Word) -> str:
        units = w.speech.get(self.stream)
        return self.stream if units is not None and np.asarray(units).shape[-1] > 0 else "text"

    def targets(self, utt, target, rng):
        if not utt.words:
            raise FormatError(
                "synth_interleave needs the record's words (utterance.words is empty)"
            )
        segs: list[tuple[str, np.ndarray]] = []
        for modality, group in groupby(utt.words, key=self._modality):
            words = list(group)
            if modality == "text":
                ids = [np.asarray(w.text, dtype=np.int64) for w in words]
                segs.append(("text", np.concatenate(ids)))
            else:
                parts = [np.asarray(w.speech[self.stream], dtype=np.int64) for w in words]
                segs.append((modality, np.concatenate(parts, axis=-1)))
        return segs

    def parse(self, ids):
        return self.parse_checked(ids).segments
