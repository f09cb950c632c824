"""What a generated assistant turn may contain: :class:`ReplyGrammar`, the ids allowed next from the
ids generated so far (the chat engine masks logits with it), and the base tokenizer's own specials
that a reply never generates. A template asks for its grammar (:meth:`ChatTemplate.grammar`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks.base import FormatError


def base_special_ids(vocab: UnifiedVocab, tokenizer: Any) -> list[int]:
    """The base text tokenizer's own special tokens (pad, bos, header tokens, ...): its named
    specials and its added tokens marked special, below the vocab's text size."""
    ids = set(tokenizer.all_special_ids)
    ids |= {int(i) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    return sorted(i for i in ids if 0 <= i < vocab.text_size)


REPLY_MODES: tuple[str, ...] = ("any", "text", "speech")


class ReplyGrammar:
    """The ids allowed next in a generated assistant turn, from what it has generated so far.

    ``structured`` (the default template): a turn is segments then ``<|eos|>``: outside a segment
    only a segment start (or, after one segment at least, a stop id); inside a text segment text
    ids and ``<|text_end|>``; inside a speech segment the stream's ids (and ``<|empty|>``) and its
    end marker. ``reply="text"`` / ``"speech"``: exactly one segment of that modality (the first
    stream for speech). Unstructured (a base model's own template): anything but the vocab's
    specials, task tags and reserved rows; ``reply="speech"`` opens with the stream's start marker
    and ``"text"`` bans stream markers. Continuous (encoder-input) streams are never generated:
    their markers and placeholder are allowed nowhere.
    """

    def __init__(
        self,
        vocab: UnifiedVocab,
        reply: str,
        stops: Sequence[int],
        structured: bool,
        banned: Sequence[int] = (),
    ):
        """``banned``: ids never generated (the text tokenizer's own special tokens: pad, bos,
        header tokens, ...), except the stop ids."""
        if reply not in REPLY_MODES:
            raise FormatError(f"reply must be one of {REPLY_MODES}, got {reply!r}")
        self.vocab, self.reply, self.structured = vocab, reply, structured
        self.stops = np.zeros(vocab.size, bool)
        self.stops[list(stops)] = True
        emitted = [s for s in vocab.streams if not s.continuous]
        self.starts = {vocab.stream_start(s.name): s.name for s in emitted}
        text_specials = self._ids([i for i in banned if 0 <= i < vocab.text_size]) & ~self.stops
        self.text = vocab.mask("text").numpy() & ~text_specials
        self.body = {
            s.name: vocab.mask(s.name).numpy()
            | self._ids([vocab.empty] if s.kind == "codec" else [])
            for s in emitted
        }
        speech = vocab.stream_start(vocab.default_stream) if emitted else None
        self.prefix = (
            [speech] if (reply == "speech" and not structured and speech is not None) else []
        )
        free = ~vocab.mask("special", "task", "reserved").numpy() & ~text_specials
        free = (free & ~vocab.input_only_mask().numpy()) | self.stops
        if reply == "text":
            free &= ~vocab.mask("marker").numpy()
        self.free = free

    def _ids(self, ids: Sequence[int]) -> np.ndarray:
        m = np.zeros(self.vocab.size, bool)
        m[list(ids)] = True
        return m

    def allowed(self, generated: Sequence[int]) -> np.ndarray:
        """``[V]`` bool: the ids allowed after ``generated`` (the reply's ids so far)."""
        v = self.vocab
        inside: str | None = None  # "text", a stream name, or None between segments
        done = 0
        for t in generated:
            t = int(t)
            if inside is None:
                inside = self.starts.get(t)
                if self.structured and t == v.text_start:
                    inside = "text"
            elif (inside == "text" and t == v.text_end) or (
                inside != "text" and t == v.stream_end(inside)
            ):
                inside, done = None, done + 1
        if inside == "text":
            return self.text | self._ids([v.text_end])
        if inside is not None:
            return self.body[inside] | self._ids([v.stream_end(inside)])
        if not self.structured:  # free text between speech spans; a speech reply is one span
            return self.stops if (self.reply == "speech" and done) else self.free
        if self.reply == "any":
            opens = self._ids([v.text_start, *self.starts])
            return opens | self.stops if done else opens
        if done:
            return self.stops
        return self._ids(
            [v.text_start if self.reply == "text" else v.stream_start(v.default_stream)]
        )
