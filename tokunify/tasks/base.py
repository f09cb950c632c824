"""Task formats: local-id streams -> ``(ids, loss_mask)`` and back.

Every sequence has one grammar, whatever the task::

    <|bos|> <|task:T|> SEGMENT ... SEGMENT <|eos|>
    SEGMENT := <|text_start|> text ids <|text_end|>
             | <|{stream}_start|> stream ids (codec: laid out by the stream's layout) <|{stream}_end|>

A format decides which segments come from the input side (the prompt) and which are the target.
``loss_mask[i]`` is True where ``ids[i]`` is a training target: by default the target segments and
the final ``<|eos|>`` only (``loss_on_input=True`` also trains on the input segments). The generation
prompt of a format is everything before its first target token, ending with the target's start
marker, so the decoder knows which modality to emit.

Ids written as ``u:i`` below mean the global id of local unit ``i``; ``T:5`` the text token 5.

A *continuous* stream (encoder input, :func:`tokunify.core.vocab.continuous_stream`) holds no ids:
its speech in a record or an utterance is a frame count ``n`` (the adapter's output length), its
segment ``<|enc_start|> <|enc_frame|> * n <|enc_end|>``, and parsing gives the count back (a 0-d
int64 array). It is input only: a task whose target is such a stream refuses it, its ids are never
under the loss, and a task may read several input streams (``TaskOptions.input_streams``: hybrid
input, units and encoder frames of one utterance)::

    ASR, stream "enc", Utterance(text=[5], speech={"enc": 3}) ->
    [bos, task:asr, enc_start, enc_frame, enc_frame, enc_frame, enc_end, text_start, T:5, text_end, eos]

A task is one registered :class:`TaskFormat` subclass; it owns every rule about itself, and the
trainer, the generator, the CLI and the evaluator ask it (they hold no task names):

- which store records it can use (:meth:`TaskFormat.eligible`, :meth:`TaskFormat.pair_id` for tasks
  that join two records, such as s2s);
- how to build ``(ids, loss_mask)`` (:meth:`TaskFormat.build`, from any number of input and target
  segments of one utterance, its words, or a paired utterance);
- its generation prompt, output modality, length/decoding preset and how to parse the output
  (:meth:`TaskFormat.prompt`, :attr:`TaskFormat.input_modality`, :attr:`TaskFormat.output_modality`,
  :attr:`TaskFormat.preset`, :meth:`TaskFormat.parse_output`);
- which metric evaluates it (:attr:`TaskFormat.metric`, a name in ``tokunify.eval.generative``).

A new task is one class plus ``register_task(cls)``; its tag must be in the vocab's ``tasks``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from tokunify.core.layouts import get_layout
from tokunify.core.vocab import MARKER, SPECIAL, TASK, TEXT, UnifiedVocab, VocabError


class FormatError(ValueError):
    """A sequence does not follow the task grammar, or an example lacks what a task needs."""


DEFAULT_PAIR_KEY = "s2s_target"
"""Default manifest field naming the target utterance of an s2s pair."""

DOC_KIND_KEY = "doc_kind"
"""Record metadata field naming a record that is not a plain utterance (e.g. a synthetic
interleaved document); only tasks listing that kind in :attr:`TaskFormat.doc_kinds` read it."""


class RecordLike(Protocol):
    """What a task reads from a store record (:class:`tokunify.data.store.Record` has it)."""

    id: str
    text: str | None
    text_ids: np.ndarray | None
    streams: dict[str, np.ndarray]
    words: Any
    meta: dict[str, Any]


@dataclass(frozen=True)
class TaskOptions:
    """Settings every task is built from; each task takes what it needs (:meth:`TaskFormat.from_options`)."""

    stream: str | None = None
    """Speech stream (default: the vocab's first units or codec stream)."""
    input_streams: tuple[str, ...] = ()
    """Streams a task's speech input is read from, in order (several: hybrid input, e.g. units and
    a continuous encoder stream); empty: the task's stream."""
    loss_on_input: bool = False
    """Train on the input side too."""
    pair_key: str = DEFAULT_PAIR_KEY
    """Record metadata field naming the paired record (tasks that join two records)."""
    tokenizer: Any = field(default=None, compare=False)
    """The bundle's text tokenizer (tasks that render text themselves, e.g. chat templates)."""
    chat_loss_on: tuple[str, ...] = ("assistant",)
    """Conversation turns (roles) the chat task trains on."""
    chat_template: str = ""
    """Chat template name for the chat task ("": the tokenizer's own, else the default)."""
    instructions: str = ""
    """Instruction pool YAML of the instruct_* tasks ("": the package's pool)."""
    instruct_task_tag: bool = False
    """instruct_* tasks keep the base task's tag next to the instruction."""
    instruction_word_dropout: float = 0.0
    """instruct_* tasks drop each word of the drawn instruction with this probability."""


def has_text(r: RecordLike) -> bool:
    return bool(r.text) or (r.text_ids is not None and len(r.text_ids) > 0)


def num_frames(local: Any) -> int:
    """Frames of a stream's local form: a continuous stream's count, else the last axis."""
    a = np.asarray(local)
    return int(a) if a.ndim == 0 else int(a.shape[-1])


@dataclass
class Word:
    """One word of an aligned utterance: its text ids and its slice of each speech stream."""

    text: np.ndarray  # [n] text ids
    speech: dict[str, np.ndarray]  # stream -> [t] units or [n_q, t] codes


@dataclass
class Utterance:
    """Local-id streams of one utterance, as tokenizers and the token store give them."""

    text: np.ndarray | None = None  # [n] text-tokenizer ids
    # stream -> [T] units, [n_q, T] codes, or a continuous stream's frame count
    speech: dict[str, np.ndarray] = field(default_factory=dict)
    words: list[Word] | None = None

    def stream(self, name: str) -> np.ndarray:
        if name not in self.speech:
            raise FormatError(
                f"utterance has no speech stream {name!r} (has {sorted(self.speech)})"
            )
        return np.asarray(self.speech[name])

    def text_ids(self) -> np.ndarray:
        if self.text is None:
            raise FormatError("utterance has no text ids, but this task needs text")
        return np.asarray(self.text, dtype=np.int64)


@dataclass
class Segment:
    """A parsed segment: ``modality`` is ``"text"`` or a stream name; ``ids`` are local."""

    modality: str
    ids: np.ndarray  # [n] text ids, [T] units, [n_q, T] codes, or a 0-d frame count (continuous)
    closed: bool = True  # False when the end marker is missing (e.g. generation hit its limit)


@dataclass
class ParsedSequence:
    task: str | None
    segments: list[Segment]
    ended: bool  # True if the sequence ends with <|eos|>


# ---- segments <-> ids ------------------------------------------------------------------------
def stream_body(vocab: UnifiedVocab, stream: str, local: np.ndarray) -> np.ndarray:
    """Local stream ids -> global body ids (codec streams laid out by their layout; a continuous
    stream's frame count ``n`` -> its placeholder ``n`` times)."""
    spec = vocab.stream(stream)
    local = np.asarray(local, dtype=np.int64)
    if spec.continuous:
        if local.ndim != 0 or int(local) < 0:
            raise FormatError(
                f"stream {stream!r} is continuous: its speech is a frame count n >= 0, "
                f"got an array of shape {local.shape}"
                + ("" if local.ndim else f" holding {int(local)}")
            )
        return np.full(int(local), vocab.placeholder(stream), dtype=np.int64)
    if spec.kind == "units":
        if local.ndim != 1:
            raise FormatError(f"stream {stream!r}: units must be [T], got shape {local.shape}")
        return vocab.to_global(stream, local)
    if local.ndim != 2 or local.shape[0] != spec.codebooks:
        raise FormatError(
            f"stream {stream!r}: codec codes must be [{spec.codebooks}, T], got shape {local.shape}"
        )
    return get_layout(spec.layout).build(vocab.to_global(stream, local), vocab.empty)


def parse_stream_body(vocab: UnifiedVocab, stream: str, ids: np.ndarray) -> np.ndarray:
    """Global body ids -> local ids (inverse of :func:`stream_body`)."""
    spec = vocab.stream(stream)
    ids = np.asarray(ids, dtype=np.int64)
    if spec.continuous:  # every id must be the placeholder; the count comes back
        vocab.to_local(stream, ids)
        return np.asarray(len(ids), dtype=np.int64)
    if spec.kind == "units":
        return vocab.to_local(stream, ids)
    layout = get_layout(spec.layout)
    try:
        codes = layout.revert(ids, spec.codebooks, vocab.empty)
    except ValueError as e:
        raise FormatError(f"stream {stream!r}: {e}") from e
    return vocab.to_local(stream, codes)


def encode_segment(vocab: UnifiedVocab, modality: str, local: np.ndarray) -> np.ndarray:
    """One segment with its markers, as global ids."""
    if modality == "text":
        text = np.asarray(local, dtype=np.int64)
        if text.size and (text.min() < 0 or text.max() >= vocab.text_size):
            raise FormatError(
                f"text ids must lie in [0, {vocab.text_size}), got [{text.min()}, {text.max()}]"
            )
        return np.concatenate([[vocab.text_start], text, [vocab.text_end]]).astype(np.int64)
    body = stream_body(vocab, modality, local)
    return np.concatenate(
        [[vocab.stream_start(modality)], body, [vocab.stream_end(modality)]]
    ).astype(np.int64)


def _start_markers(vocab: UnifiedVocab) -> dict[int, tuple[str, int]]:
    """start marker id -> (modality, end marker id)."""
    out = {vocab.text_start: ("text", vocab.text_end)}
    for s in vocab.streams:
        out[vocab.stream_start(s.name)] = (s.name, vocab.stream_end(s.name))
    return out


def parse_sequence(vocab: UnifiedVocab, ids: Sequence[int] | np.ndarray) -> ParsedSequence:
    """Split a sequence into task tag and segments. Tolerates a missing final end marker/eos.

    >>> # [bos, task:asr, units_start, u:3, u:3, units_end, text_start, T:5, text_end, eos]
    >>> # -> ParsedSequence(task="asr", segments=[Segment("units", [3, 3]), Segment("text", [5])], ended=True)
    """
    ids = np.asarray(ids, dtype=np.int64)
    kinds = vocab.modality_of(ids) if ids.size else np.zeros(0, dtype=np.int16)
    i, n = 0, len(ids)
    if i < n and ids[i] == vocab.bos:
        i += 1
    task = None
    if i < n and kinds[i] == TASK:
        task = vocab.task_name(int(ids[i]))
        i += 1
    starts = _start_markers(vocab)
    # Structural ids (specials, markers, tasks) never occur inside a segment body, except <|empty|>.
    structural = np.isin(kinds, (SPECIAL, MARKER, TASK)) & (ids != vocab.empty)
    segments: list[Segment] = []
    ended = False
    while i < n:
        tok = int(ids[i])
        if tok == vocab.eos:
            ended = True
            if i != n - 1:
                raise FormatError(f"tokens after <|eos|> at position {i}")
            break
        if tok not in starts:
            raise FormatError(
                f"position {i}: expected a segment start marker or <|eos|>, got id {tok}"
            )
        modality, end_id = starts[tok]
        rest = np.flatnonzero(structural[i + 1 :])
        j = i + 1 + int(rest[0]) if rest.size else n
        closed = j < n and int(ids[j]) == end_id
        if j < n and not closed and int(ids[j]) != vocab.eos:
            raise FormatError(
                f"position {j}: segment {modality!r} ends with unexpected id {int(ids[j])}"
            )
        body = ids[i + 1 : j]
        try:
            if modality == "text":
                if body.size and not np.all(kinds[i + 1 : j] == TEXT):
                    raise FormatError("non-text ids inside a text segment")
                local = body
            else:
                local = parse_stream_body(vocab, modality, body)
        except VocabError as e:
            raise FormatError(f"segment {modality!r} at position {i}: {e}") from e
        segments.append(Segment(modality, local, closed))
        i = j + 1 if closed else j
    return ParsedSequence(task, segments, ended)


def unmask_input_only(vocab: UnifiedVocab, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask`` off at the input-only ids (continuous streams' placeholders and markers): they are
    never predicted, whatever turns or segments the loss covers."""
    banned = vocab.input_only_ids()
    return mask & ~np.isin(ids, banned) if banned else mask


def _is_continuous(vocab: UnifiedVocab, modality: str) -> bool:
    return modality != "text" and vocab.stream(modality).continuous


# ---- formats --------------------------------------------------------------------------------
class TaskFormat(ABC):
    """Base of all tasks. ``eligible`` picks records, ``build`` makes training examples, ``prompt``
    and ``parse_output`` serve generation, ``metric`` names the evaluation."""

    task: ClassVar[str]
    needs_stream: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    """What a record must have: any of "text", "speech" (>= ``min_frames`` frames), "words"."""
    min_frames: ClassVar[int] = 1
    input_modality: ClassVar[Literal["text", "speech"] | None] = None
    """What a generation request gives: a text string, or speech (audio or local ids); None: the
    task does not generate."""
    preset: ClassVar[Mapping[str, Any] | None] = None
    """Decoding preset for ``model.generate`` (length limit, sampling); any key can be overridden."""
    metric: ClassVar[str | None] = None
    """Name of the metric that evaluates the task (``tokunify.eval.generative.METRICS``)."""
    metric_keys: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """Renames of the metric's result fields for this task (result keys are ``{task}_{field}``)."""
    eval_by_default: ClassVar[bool] = True
    """Whether `tokunify eval` runs the task's metric when no --tasks are given."""
    doc_kinds: ClassVar[tuple[str | None, ...]] = (None,)
    """Record kinds (metadata ``doc_kind``) the task reads; None: plain utterances. A synthetic
    document's stream holds only its speech spans, so no utterance task may take it for one."""

    @classmethod
    def from_options(cls, vocab: UnifiedVocab, options: TaskOptions) -> TaskFormat:
        """The task configured from shared options (override to take more or fewer of them)."""
        return cls(
            vocab,
            stream=options.stream if cls.needs_stream else None,
            loss_on_input=options.loss_on_input,
            input_streams=options.input_streams if cls.needs_stream else (),
        )

    def __init__(
        self,
        vocab: UnifiedVocab,
        stream: str | None = None,
        loss_on_input: bool = False,
        input_streams: Sequence[str] = (),
    ):
        vocab.task(self.task)  # raises for a tag this vocab does not know
        self.vocab = vocab
        self.stream = (stream or vocab.default_stream) if self.needs_stream else stream
        if self.stream is not None:
            vocab.stream(self.stream)
        self.input_streams: tuple[str, ...] = tuple(input_streams) or (
            (self.stream,) if self.stream is not None else ()
        )
        for s in self.input_streams:
            vocab.stream(s)
        self.loss_on_input = loss_on_input
        m = self.target_modality
        if m is not None and _is_continuous(vocab, m):
            raise FormatError(
                f"task {self.task!r}: stream {m!r} is continuous (encoder input only) and cannot "
                "be its output; choose a units or codec stream"
            )

    @property
    def target_modality(self) -> str | None:
        """Modality of the first target segment ("text" or a stream); its start marker ends the prompt."""
        return self.stream

    @property
    def output_modality(self) -> Literal["text", "speech"] | None:
        """What generation returns: text, speech (local ids, vocoded), or None (no generation)."""
        m = self.target_modality
        return None if m is None else "text" if m == "text" else "speech"

    # ---- which records ------------------------------------------------------------------------
    def frames(self, r: RecordLike, stream: str | None = None) -> int:
        """Frames of a stream (this task's by default) in a record (0 when it has none)."""
        stream = stream or self.stream
        if stream is None or stream not in r.streams:
            return 0
        return num_frames(r.streams[stream])

    @property
    def record_streams(self) -> tuple[str, ...]:
        """The streams a record must hold (with >= :attr:`min_frames` frames) for a task that
        requires speech: the input streams and the task's stream."""
        both = (*self.input_streams, self.stream)
        return tuple(dict.fromkeys(s for s in both if s is not None))

    def eligible(self, r: RecordLike) -> bool:
        """Whether the task can build an example from this record (see :attr:`requires`)."""
        need = self.requires
        return (
            (r.meta or {}).get(DOC_KIND_KEY) in self.doc_kinds
            and ("text" not in need or has_text(r))
            and (
                "speech" not in need
                or all(self.frames(r, s) >= self.min_frames for s in self.record_streams)
            )
            and ("words" not in need or bool(r.words))
        )

    def pair_id(self, r: RecordLike) -> str | None:
        """Id of the record this one is paired with; None for tasks that use one record."""
        return None

    def pair_eligible(self, target: RecordLike) -> bool:
        """Whether a paired record can serve as the target."""
        return True

    def find_pair(
        self, r: RecordLike, lookup: Callable[[str], RecordLike | None]
    ) -> tuple[bool, RecordLike | None]:
        """``(usable, target)``: the paired record through ``lookup(id)`` for tasks that pair, else
        ``(True, None)``. A task that pairs but whose pair is missing or unusable gives ``(False, None)``."""
        pid = self.pair_id(r)
        if pid is None:
            return True, None
        target = lookup(pid)
        if target is None or not self.pair_eligible(target):
            return False, None
        return True, target

    def reference_text(self, r: RecordLike, target: RecordLike | None) -> str:
        """The text a generated output is scored against."""
        return (target if target is not None else r).text or ""

    def request(self, r: RecordLike) -> Any:
        """The generation input a record gives: its text, or its (first input) stream's local ids."""
        if self.input_modality == "text":
            return r.text or ""
        return np.asarray(r.streams[self.input_streams[0]], dtype=np.int64)

    def inputs(self, utt: Utterance) -> list[tuple[str, np.ndarray]]:
        """Input-side segments as (modality, local ids)."""
        return []

    def speech_inputs(self, utt: Utterance) -> list[tuple[str, np.ndarray]]:
        """One segment per input stream, in order (what a speech-input task's :meth:`inputs` are)."""
        return [(s, utt.stream(s)) for s in self.input_streams]

    @abstractmethod
    def targets(
        self, utt: Utterance, target: Utterance | None, rng: np.random.Generator | None
    ) -> list[tuple[str, np.ndarray]]:
        """Target-side segments as (modality, local ids)."""

    def build(
        self,
        utt: Utterance,
        target: Utterance | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [L] int64, loss_mask [L] bool)`` for training."""
        v = self.vocab
        parts = [v.prefix(self.task)]
        masks = [np.zeros(v.prefix_len, dtype=bool)]
        targets = self.targets(utt, target, rng)
        for modality, _ in targets:
            if _is_continuous(v, modality):
                raise FormatError(
                    f"task {self.task!r}: stream {modality!r} is continuous (encoder input only) "
                    "and cannot be a target"
                )
        for group, train in ((self.inputs(utt), self.loss_on_input), (targets, True)):
            for modality, local in group:
                seg = encode_segment(v, modality, local)
                parts.append(seg)
                masks.append(np.full(len(seg), train))
        parts.append(np.array([v.eos], dtype=np.int64))
        masks.append(np.ones(1, dtype=bool))
        ids = np.concatenate(parts)
        return ids, unmask_input_only(v, ids, np.concatenate(masks))

    def build_record(
        self,
        r: RecordLike,
        target: RecordLike | None,
        utterance: Callable[[RecordLike], Utterance],
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, loss_mask)`` from store records: by default :meth:`build` on their utterances
        (``utterance(record)``); a task that reads more of a record than its streams overrides it."""
        return self.build(utterance(r), utterance(target) if target is not None else None, rng=rng)

    def prompt(self, utt: Utterance) -> np.ndarray:
        """Generation prompt: bos, task tag, the input segments, then the target's start marker."""
        v = self.vocab
        parts = [v.prefix(self.task)]
        parts += [encode_segment(v, m, x) for m, x in self.inputs(utt)]
        m = self.target_modality
        if m is not None:
            parts.append(
                np.array([v.text_start if m == "text" else v.stream_start(m)], dtype=np.int64)
            )
        return np.concatenate(parts)

    def target_offset(self, prompt: np.ndarray) -> int:
        """Tokens of the target segment already in a prompt (after its start marker)."""
        m = self.target_modality
        start = self.vocab.text_start if m == "text" else self.vocab.stream_start(m)
        return len(prompt) - 1 - int(np.flatnonzero(np.asarray(prompt) == start)[-1])

    def parse_output(self, prompt: np.ndarray, generated: Sequence[int]) -> Segment | None:
        """The generated target segment (local ids) from a prompt and what the model added to it;
        a codec stream cut mid-step by the length limit keeps its whole steps."""
        full = np.concatenate([prompt, np.asarray(generated, dtype=np.int64)])
        try:
            parsed = parse_sequence(self.vocab, full)
        except (FormatError, ValueError):  # cut by the length limit: the layout closes the body
            m = self.target_modality
            body = np.asarray(generated, dtype=np.int64)
            if m not in (None, "text"):
                spec = self.vocab.stream(m)
                body = get_layout(spec.layout).close(body, spec.codebooks, self.vocab.empty)
            parsed = parse_sequence(self.vocab, np.concatenate([prompt, body]))
        return parsed.segments[-1] if parsed.segments else None

    def parse_checked(self, ids: Sequence[int] | np.ndarray) -> ParsedSequence:
        parsed = parse_sequence(self.vocab, ids)
        if parsed.task is not None and parsed.task != self.task:
            raise FormatError(
                f"sequence has task tag {parsed.task!r}, this format is {self.task!r}"
            )
        return parsed

    def parse(self, ids: Sequence[int] | np.ndarray) -> Any:
        """Streams back from a built or generated sequence."""
        parsed = self.parse_checked(ids)
        out = Utterance()
        for seg in parsed.segments:
            if seg.modality == "text":
                out.text = seg.ids
            else:
                out.speech[seg.modality] = seg.ids
        return out


Task = TaskFormat


# ---- word alignment -> per-word slices -------------------------------------------------------
def align_words(
    alignment: Sequence[tuple[str, float, float]],
    word_text_ids: Sequence[Sequence[int]],
    stream: str,
    stream_ids: np.ndarray,
    frame_rate: float,
    durations: np.ndarray | None = None,
) -> list[Word]:
    """Cut a stream into per-word slices from ``(word, start_s, end_s)`` alignments.

    Token ``k`` starts at frame ``sum(durations[:k])`` (deduplicated units) or ``k``. Word ``i`` gets
    the tokens starting in ``[start_i, start_{i+1})``, the last word those up to its end, so pauses
    go with the word before them and nothing after the first word is dropped.
    """
    if len(alignment) != len(word_text_ids):
        raise FormatError(f"{len(alignment)} aligned words but {len(word_text_ids)} text id lists")
    ids = np.asarray(stream_ids, dtype=np.int64)
    t = ids.shape[-1]
    if durations is None:
        token_start = np.arange(t)
    else:
        durations = np.asarray(durations, dtype=np.int64)
        if durations.shape != (t,):
            raise FormatError(f"durations shape {durations.shape} does not match {t} tokens")
        token_start = np.cumsum(durations) - durations
    starts = np.array([w[1] for w in alignment], dtype=np.float64) * frame_rate
    end = float(alignment[-1][2]) * frame_rate if len(alignment) else 0.0
    bounds = np.searchsorted(token_start, np.append(np.round(starts), np.round(end)), side="left")
    bounds = np.maximum.accumulate(bounds)
    return [
        Word(
            text=np.asarray(txt, dtype=np.int64),
            speech={stream: ids[..., bounds[i] : bounds[i + 1]]},
        )
        for i, txt in enumerate(word_text_ids)
    ]
