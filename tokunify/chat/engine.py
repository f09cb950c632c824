"""The one conversation-answering path: render, constrain, stop, parse, vocode.

:class:`ChatEngine` answers conversations with a bundle. For each conversation (system, user and
assistant turns, each a list of text and speech parts):

1. **render**: the bundle's chat template gives the generation prompt
   (:meth:`ChatTemplate.prompt`, which refuses typed text holding special-token strings), then the
   reply grammar's forced prefix (a speech reply under a base model's own template opens its span);
2. **constrain**: a logits processor masks what the template's :class:`ReplyGrammar` forbids after
   each row's generated ids (``reply``: ``any``, ``text`` or ``speech``);
3. **decode**: left-padded batches through ``model.generate`` with the KV cache; sampled rows draw
   from their own seeded generator (:class:`~tokunify.generate.decoding.SeededSampler`), so a
   reply depends on ``(bundle, conversation, decoding, seed)`` only, never on its batch;
4. **stop**: at the template's first end-of-turn id (``hit_limit`` when the length limit came first);
5. **parse**: :meth:`ChatTemplate.parse_reply` gives the reply's content parts;
6. **vocode** (``vocode=True``): the reply's speech parts of the engine's stream, through the
   bundle's vocoder, as one waveform; :meth:`ChatEngine.stream` vocodes them in chunks while the
   reply is generated (the vocoder's :class:`~tokunify.vocoder.inference.UnitChunks`).

``tokunify chat`` (:class:`~tokunify.chat.session.ChatSession`), ``make-chat-data``'s bundle
replies and the instruct demo's metrics all answer through :meth:`ChatEngine.reply`.

>>> engine = ChatEngine("run/final")                                   # doctest: +SKIP
>>> conv = Conversation([Message("system", "Answer briefly."), Message("user", "two plus three")])
>>> engine.reply([conv], Decoding(temperature=0), seed=0)[0].text       # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from tokunify.generate.decoding import Decoding
from tokunify.generate.generator import Generator
from tokunify.model.bundle import Bundle, BundleError
from tokunify.tasks.conversation import Conversation, Part, SpeechPart
from tokunify.tasks.templates import ChatTemplate, ReplyGrammar, template_for
from tokunify.vocoder.inference import UnitChunks, UnitVocoder

"""Units a unit's predicted duration depends on to its right (the duration predictor's two k=3
convolutions), as ``Generator.stream_speech`` expands them."""


@dataclass
class Reply:
    """One assistant turn: its content parts, the ids the model saw and generated, and its audio
    when vocoded."""

    content: list[Part]
    ids: list[int] = field(default_factory=list)
    """Generated global ids, up to and including the stop id (the grammar's prefix is in ``prompt``)."""
    prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """``[L]`` int64: what the model was given (template prompt plus the grammar's prefix)."""
    hit_limit: bool = False
    """The length limit came before an end-of-turn id."""
    audio: np.ndarray | None = None
    """``[N]`` float32: the reply's speech, vocoded (``reply(..., vocode=True)``)."""
    sample_rate: int | None = None
    wav: Path | None = None
    """Where a :class:`~tokunify.chat.session.ChatSession` wrote ``audio``."""
    done: bool = True
    """False for the partial replies :meth:`ChatEngine.stream` yields while generating."""
    chunk: np.ndarray | None = None
    """``[n]`` float32: speech vocoded since the previous reply of :meth:`ChatEngine.stream`
    (``vocode=True``); None when none became ready."""

    @property
    def text(self) -> str:
        """The text parts, joined and stripped."""
        return "".join(p for p in self.content if isinstance(p, str)).strip()

    @property
    def speech(self) -> list[SpeechPart]:
        return [p for p in self.content if isinstance(p, SpeechPart)]


class GrammarProcessor(LogitsProcessor):
    """Masks what the reply grammar forbids after each row's generated ids, and every id beyond
    the vocab (a model's embedding may be larger)."""

    def __init__(self, grammar: ReplyGrammar, prompt_len: int):
        self.grammar, self.prompt_len = grammar, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = self.grammar.vocab.size  # scores [B, V_model], V_model >= n
        rows = input_ids[:, self.prompt_len :].tolist()
        allowed = np.stack([self.grammar.allowed(self.grammar.prefix + r) for r in rows])  # [B, n]
        scores[:, :n] = scores[:, :n].masked_fill(
            ~torch.from_numpy(allowed).to(scores.device), float("-inf")
        )
        scores[:, n:] = float("-inf")
        return scores


class _UntilSet(StoppingCriteria):
    """Stops every row of a ``generate`` call once ``event`` is set (a stream's reader has gone)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:  # fmt: skip
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]  # fmt: skip


class _SpeechFeed:
    """The speech parts of a growing reply -> audio chunks: one vocoder
    :class:`~tokunify.vocoder.inference.UnitChunks` per part of
    ``stream``, a part finished when the next one starts."""

    def __init__(self, vocoder: UnitVocoder, stream: str, chunk: int, context: int):
        self.vocoder, self.stream, self.chunk, self.context = vocoder, stream, chunk, context
        self.parts: list[UnitChunks] = []
        self.pieces: list[np.ndarray] = []  # every chunk so far

    def push(self, content: Sequence[Part]) -> np.ndarray | None:
        """The reply's content parsed so far -> ``[n]`` float32 audio ready since the last push."""
        units = [p.ids for p in content if isinstance(p, SpeechPart) and p.stream == self.stream]
        out: list[torch.Tensor] = []
        for k, ids in enumerate(units):
            if k < len(self.parts) - 1:
                continue  # finished when a later part started
            if k == len(self.parts):
                if self.parts:
                    out += self.parts[-1].finish()
                self.parts.append(self.vocoder.chunks(self.chunk, self.context))
            part = self.parts[k]
            out += part.push(ids[len(part.units) :].tolist())
        return self._take(out)

    def finish(self) -> np.ndarray | None:
        return self._take(self.parts[-1].finish() if self.parts else [])

    def _take(self, chunks: list[torch.Tensor]) -> np.ndarray | None:
        out = [c.numpy() for c in chunks]
        self.pieces += out
        return np.concatenate(out) if out else None

    @property
    def audio(self) -> np.ndarray | None:
        """``[N]`` float32: every chunk so far (None when the reply has no speech)."""
        return np.concatenate(self.pieces) if self.pieces else None


class _IdQueue(BaseStreamer):
    """Receives the ids ``model.generate`` produces (the first call carries the prompt)."""

    def __init__(self, q: queue.Queue):
        self.q, self.prompt_seen = q, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for t in value.view(-1).tolist():
            self.q.put(int(t))

    def end(self) -> None:
        pass


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        return [int(seed)] * n
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{n} conversations but {len(seeds)} seeds")
    return seeds


class ChatEngine:
    """A bundle answering conversations (a path, a loaded :class:`Bundle` or a :class:`Generator`).

    ``template``: a registered template name or object (default: the bundle tokenizer's own, else
    ``default``). ``batch_size``: conversations decoded together."""

    def __init__(
        self,
        bundle: str | Path | Bundle | Generator,
        template: str | ChatTemplate | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ):
        self.gen = bundle if isinstance(bundle, Generator) else Generator(bundle, device=device)
        self.vocab, self.tokenizer = self.gen.vocab, self.gen.bundle.tokenizer
        self.template = (
            template
            if isinstance(template, ChatTemplate)
            else template_for(self.tokenizer, template)
        )
        self.batch_size = batch_size
        self._grammars: dict[str, ReplyGrammar] = {}

    @property
    def speech_stream(self) -> str:
        """The speech stream user audio is encoded into and replies are vocoded from."""
        return self.gen.stream

    def grammar(self, reply: str = "any") -> ReplyGrammar:
        """The template's reply grammar for a reply modality (``any``, ``text``, ``speech``)."""
        if reply not in self._grammars:
            self._grammars[reply] = self.template.reply_grammar(self.vocab, self.tokenizer, reply)
        return self._grammars[reply]

    def prompt(self, conversation: Conversation, reply: str = "any") -> np.ndarray:
        """``[L]`` int64: the ids the model is given for the next assistant turn. Raises
        :class:`~tokunify.tasks.FormatError` for a conversation the template refuses."""
        head = self.template.prompt(self.vocab, self.tokenizer, conversation)
        return np.concatenate([head, self.grammar(reply).prefix]).astype(np.int64)

    def encode_audio(self, audio: Sequence[str | Path | np.ndarray], sample_rate: int | None = None) -> list[SpeechPart]:  # fmt: skip
        """Audio files or arrays as speech parts of the engine's stream."""
        return [
            SpeechPart(self.speech_stream, u) for u in self.gen.encode_audio(audio, sample_rate)
        ]

    @torch.inference_mode()
    def reply(
        self,
        conversations: Sequence[Conversation],
        decoding: Decoding | None = None,
        seed: int | Sequence[int] = 0,
        reply: str = "any",
        vocode: bool = False,
        batch_size: int | None = None,
        streamer: BaseStreamer | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
    ) -> list[Reply]:
        """The next assistant turn of each conversation (none is changed).

        ``decoding``: :class:`Decoding` (default: sampled at 0.7; temperature 0 is greedy).
        ``seed``: one for every row, or one per conversation; a conversation's reply is the same
        alone and in any batch. ``vocode``: fill ``audio`` for replies with speech. ``streamer``:
        a transformers streamer that receives the ids as they are generated (one conversation).
        ``stopping_criteria``: ends generation early (e.g. a server's client has gone); a reply
        cut so has ``hit_limit``."""
        decoding = decoding or Decoding()
        seeds = _seeds(seed, len(conversations))
        if streamer is not None and len(conversations) != 1:
            raise ValueError("a streamer follows one conversation")
        grammar = self.grammar(reply)
        prompts = [self.prompt(c, reply) for c in conversations]  # refuses before any decoding
        size = batch_size or self.batch_size
        out: list[Reply] = []
        for a in range(0, len(prompts), size):
            rows = self._decode(
                prompts[a : a + size], seeds[a : a + size], grammar, decoding, streamer,
                stopping_criteria,
            )  # fmt: skip
            out += [self._reply(p, g, grammar) for p, g in zip(prompts[a : a + size], rows, strict=True)]  # fmt: skip
        if vocode:
            for r in out:
                r.audio = self.vocode(r.speech)
                r.sample_rate = self.gen.sample_rate if r.audio is not None else None
        return out

    def stream(
        self,
        conversation: Conversation,
        decoding: Decoding | None = None,
        seed: int = 0,
        reply: str = "any",
        vocode: bool = False,
        stopping_criteria: StoppingCriteriaList | None = None,
        chunk: int = 25,
        context: int = 24,
    ) -> Iterator[Reply]:
        """The reply of :meth:`reply` while it is generated: a partial :class:`Reply`
        (``done=False``, content parsed from the ids so far) after every new id, then the final
        reply (``done=True``), the same as ``reply([conversation], decoding, seed, reply)[0]``.
        A refused conversation raises before anything is yielded.

        ``vocode=True``: the speech is vocoded while it is generated (:class:`~tokunify.vocoder.inference.UnitChunks`,
        ``chunk`` frames at a time with ``context`` frames each side): each reply's ``chunk`` holds
        the audio ready since the previous one, the final reply's ``audio`` is all of it, equal to
        ``reply(..., vocode=True)``'s within float tolerance. A codec stream's speech is decoded
        once it is complete (the final ``chunk`` is all of ``audio``).

        ``stopping_criteria`` end the generation early; so does closing the iterator (a reader
        that leaves stops the decoding at its next step)."""
        prompt = self.prompt(conversation, reply)  # refuse in the caller's thread
        grammar = self.grammar(reply)
        feed = self._speech_feed(chunk, context) if vocode else None
        q: queue.Queue = queue.Queue()
        result: list[Reply] = []
        errors: list[BaseException] = []
        closed = threading.Event()
        crit = StoppingCriteriaList([*(stopping_criteria or []), _UntilSet(closed)])

        def run() -> None:
            try:
                result.extend(
                    self.reply([conversation], decoding, seed, reply, streamer=_IdQueue(q),
                               stopping_criteria=crit)
                )  # fmt: skip
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
            finally:
                q.put(None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            stops = set(self.template.stop_ids(self.vocab, self.tokenizer))
            ids: list[int] = []
            while (t := q.get()) is not None:
                if ids and ids[-1] in stops:
                    continue  # after the stop: padding of a finished row
                ids.append(t)
                content = self.template.parse_reply(
                    self.vocab, self.tokenizer, grammar.prefix + ids
                )
                audio = feed.push(content) if feed is not None else None
                yield Reply(content, list(ids), prompt, done=False, chunk=audio)
            thread.join()
            if errors:
                raise errors[0]
            final = replace(result[0], done=True)
            if vocode:
                if feed is not None:
                    final.chunk, final.audio = feed.finish(), feed.audio
                else:
                    final.audio = final.chunk = self.vocode(final.speech)
                final.sample_rate = self.gen.sample_rate if final.audio is not None else None
            yield final
        finally:
            closed.set()  # the reader has all of it, or has left: stop decoding

    def _speech_feed(self, chunk: int, context: int) -> _SpeechFeed | None:
        """Chunked vocoding of the engine's stream, or None where its speech is decoded whole
        (a codec's codes, a vocoder without the chunked path)."""
        voc = self.gen.vocoder
        units = self.vocab.stream(self.speech_stream).kind == "units"
        if not (units and isinstance(voc, UnitVocoder)):
            return None
        return _SpeechFeed(voc, self.speech_stream, chunk, context)

    def _decode(
        self,
        prompts: list[np.ndarray],
        seeds: list[int],
        grammar: ReplyGrammar,
        decoding: Decoding,
        streamer: BaseStreamer | None,
        stopping_criteria: StoppingCriteriaList | None = None,
    ) -> list[list[int]]:
        """Generated ids of each row (left padding, KV cache), up to the model's stop."""
        v, device = self.vocab, self.gen.device
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), v.pad, dtype=torch.long)  # [B, n] left-padded
        att = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, n - len(p) :] = torch.as_tensor(p)
            att[i, n - len(p) :] = 1
        procs: list[LogitsProcessor] = [GrammarProcessor(grammar, n)]
        sampler = decoding.sampler(seeds, device)
        if sampler is not None:
            procs.append(sampler)  # last: it draws from the masked scores
        res = self.gen.model.generate(
            input_ids=ids.to(device),
            attention_mask=att.to(device),
            logits_processor=LogitsProcessorList(procs),
            eos_token_id=self.template.stop_ids(v, self.tokenizer),
            pad_token_id=v.pad,
            streamer=streamer,
            stopping_criteria=stopping_criteria,
            **decoding.seeded_kwargs(),
        )
        return res[:, n:].tolist()

    def _reply(self, prompt: np.ndarray, row: list[int], grammar: ReplyGrammar) -> Reply:
        stops = set(self.template.stop_ids(self.vocab, self.tokenizer))
        cut = next((k for k, t in enumerate(row) if t in stops), None)
        gen = row if cut is None else row[: cut + 1]
        content = self.template.parse_reply(self.vocab, self.tokenizer, grammar.prefix + gen)
        return Reply(content, gen, prompt, hit_limit=cut is None)

    def vocode(self, parts: Sequence[SpeechPart]) -> np.ndarray | None:
        """``[N]`` float32: the speech parts of the engine's stream through the bundle's vocoder,
        one part at a time (None when there are none). Not in one padded batch: the padding would
        reach into a shorter part's end through the vocoder's receptive field."""
        units = [p.ids for p in parts if p.stream == self.speech_stream and p.frames > 0]
        if not units:
            return None
        try:
            return np.concatenate([self.gen.decode([u])[0] for u in units])
        except BundleError as e:
            raise BundleError(f"the reply is speech, but it cannot be vocoded: {e}") from None


__all__ = ["ChatEngine", "GrammarProcessor", "Reply"]
