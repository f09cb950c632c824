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

A task is one registered :class:`TaskFormat` subclass; it owns every rule about itself, and the
trainer, the generator, the CLI and the evaluator ask it (they hold no task names):

- which store records it can use (:meth:`TaskFormat.eligible`, :meth:`TaskFormat.pair_id` for tasks
  that join two records, such as s2s);
- how to build ``(ids, loss_mask)`` (:meth:`TaskFormat.build`, from any number of input and target
  segments of one utterance, its words, or a paired utterance);
- its generation prompt, output modality, length/decoding preset and how to parse the output
  (:meth:`TaskFormat.prompt`, :attr:`TaskFormat.input_modality`, :attr:`TaskFormat.output_modality`,
  :attr:`TaskFormat.preset`, :meth:`TaskFormat.parse_output`);
- which metric evaluates it (:attr:`TaskFormat.metric`, a name in ``tokunify.generate.evaluate``).

A new task is one class plus ``register_task(cls)``; its tag must be in the vocab's ``tasks``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from tokunify.layouts import get_layout
from tokunify.vocab import MARKER, SPECIAL, TASK, TEXT, UnifiedVocab, VocabError


class FormatError(ValueError):
    """A sequence does not follow the task grammar, or an example lacks what a task needs."""


DEFAULT_PAIR_KEY = "s2s_target"
"""Default manifest field naming the target utterance of an s2s pair."""

DOC_KIND_KEY = "doc_kind"
"""Record metadata field naming a record that is not a plain utterance (e.g. a synthetic
interleaved document); only tasks listing that kind in :attr:`TaskFormat.doc_kinds` read it."""


class RecordLike(Protocol):
    """What a task reads from a store record (:class:`tokunify.store.Record` has it)."""

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
    """Speech stream (default: the vocab's first)."""
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


@dataclass
class Word:
    """One word of an aligned utterance: its text ids and its slice of each speech stream."""

    text: np.ndarray  # [n] text ids
    speech: dict[str, np.ndarray]  # stream -> [t] units or [n_q, t] codes


@dataclass
class Utterance:
    """Local-id streams of one utterance, as tokenizers and the token store give them."""

    text: np.ndarray | None = None  # [n] text-tokenizer ids
    speech: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> [T] or [n_q, T]
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
    ids: np.ndarray  # [n] text ids, [T] units, or [n_q, T] codes
    closed: bool = True  # False when the end marker is missing (e.g. generation hit its limit)


@dataclass
class ParsedSequence:
    task: str | None
    segments: list[Segment]
    ended: bool  # True if the sequence ends with <|eos|>


# ---- segments <-> ids ------------------------------------------------------------------------
def stream_body(vocab: UnifiedVocab, stream: str, local: np.ndarray) -> np.ndarray:
    """Local stream ids -> global body ids (codec streams laid out by their layout)."""
    spec = vocab.stream(stream)
    local = np.asarray(local, dtype=np.int64)
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
    """Name of the metric that evaluates the task (``tokunify.generate.evaluate.METRICS``)."""
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
        )

    def __init__(self, vocab: UnifiedVocab, stream: str | None = None, loss_on_input: bool = False):
        vocab.task(self.task)  # raises for a tag this vocab does not know
        self.vocab = vocab
        self.stream = (stream or vocab.default_stream) if self.needs_stream else stream
        if self.stream is not None:
            vocab.stream(self.stream)
        self.loss_on_input = loss_on_input

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
    def frames(self, r: RecordLike) -> int:
        """Frames of this task's stream in a record (0 when it has none)."""
        if self.stream is None or self.stream not in r.streams:
            return 0
        return int(np.asarray(r.streams[self.stream]).shape[-1])

    def eligible(self, r: RecordLike) -> bool:
        """Whether the task can build an example from this record (see :attr:`requires`)."""
        need = self.requires
        return (
            (r.meta or {}).get(DOC_KIND_KEY) in self.doc_kinds
            and ("text" not in need or has_text(r))
            and ("speech" not in need or self.frames(r) >= self.min_frames)
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
        """The generation input a record gives: its text, or its stream's local ids."""
        if self.input_modality == "text":
            return r.text or ""
        return np.asarray(r.streams[self.stream], dtype=np.int64)

    def inputs(self, utt: Utterance) -> list[tuple[str, np.ndarray]]:
        """Input-side segments as (modality, local ids)."""
        return []

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
        groups = ((self.inputs(utt), self.loss_on_input), (self.targets(utt, target, rng), True))
        for group, train in groups:
            for modality, local in group:
                seg = encode_segment(v, modality, local)
                parts.append(seg)
                masks.append(np.full(len(seg), train))
        parts.append(np.array([v.eos], dtype=np.int64))
        masks.append(np.ones(1, dtype=bool))
        return np.concatenate(parts), np.concatenate(masks)

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


class TextFormat(TaskFormat):
    """Text LM.

    ``Utterance(text=[5, 6])`` -> ``[bos, task:text, text_start, T:5, T:6, text_end, eos]``,
    mask ``[0, 0, 1, 1, 1, 1, 1]``. Generation continues the given text: ``prompt(Utterance(text=[5]))``
    is ``[bos, task:text, text_start, T:5]`` (the text segment left open), and the output is the
    whole segment, the given text then its continuation.
    """

    task = "text"
    needs_stream = False
    target_modality = "text"
    requires = ("text",)
    input_modality = "text"
    preset = MappingProxyType(
        {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 128}
    )

    def targets(self, utt, target, rng):
        return [("text", utt.text_ids())]

    def prompt(self, utt):
        text = utt.text_ids() if utt.text is not None else np.zeros(0, np.int64)
        return np.concatenate([super().prompt(utt), text]).astype(np.int64)


class SpeechFormat(TaskFormat):
    """Unconditional speech LM on one stream.

    ``Utterance(speech={"units": [3, 7]})`` -> ``[bos, task:speech, units_start, u:3, u:7, units_end, eos]``,
    mask ``[0, 0, 1, 1, 1, 1, 1]``.
    """

    task = "speech"
    requires = ("speech",)

    def targets(self, utt, target, rng):
        return [(self.stream, utt.stream(self.stream))]


class ContinueFormat(TaskFormat):
    """Speech continuation: the first part of an utterance is the prompt, the rest the target.

    The split is at ``prompt_fraction`` of the frames, or uniform in ``fraction_range`` when an
    ``rng`` is given. With units ``[3, 7, 9, 9]`` and fraction 0.5::

        ids  [bos, task:continue, units_start, u:3, u:7, u:9, u:9, units_end, eos]
        mask [0,   0,             0,           0,   0,   1,   1,   1,         1]

    ``prompt(utt)`` uses the *whole* utterance as the prefix: ``[bos, task:continue, units_start, u:3 .. u:9]``.
    """

    task = "continue"
    requires = ("speech",)
    min_frames = 2
    input_modality = "speech"
    preset = MappingProxyType(
        {
            "do_sample": True,
            "temperature": 0.9,
            "top_k": 50,
            "top_p": 0.95,
            "repetition_penalty": 1.05,
            "max_new_tokens": 300,
        }
    )
    metric = "continuation"
    eval_by_default = False  # long sampled generations: asked for by name

    def __init__(
        self,
        vocab: UnifiedVocab,
        stream: str | None = None,
        loss_on_input: bool = False,
        prompt_fraction: float = 0.5,
        fraction_range: tuple[float, float] = (0.2, 0.8),
    ):
        super().__init__(vocab, stream, loss_on_input)
        self.prompt_fraction = prompt_fraction
        self.fraction_range = fraction_range

    def targets(self, utt, target, rng):
        return [(self.stream, utt.stream(self.stream))]

    def request(self, r: RecordLike) -> Any:
        """Evaluation prompts are the first ``prompt_fraction`` of the record's frames."""
        local = np.asarray(r.streams[self.stream], dtype=np.int64)
        return local[..., : max(1, self._split(local.shape[-1], None))]

    def _split(self, frames: int, rng: np.random.Generator | None) -> int:
        frac = rng.uniform(*self.fraction_range) if rng is not None else self.prompt_fraction
        return round(frames * frac)

    def _head(self) -> np.ndarray:
        """The prefix and the stream's start marker: everything before the stream body."""
        v = self.vocab
        return np.append(v.prefix(self.task), v.stream_start(self.stream)).astype(np.int64)

    def build(self, utt, target=None, rng=None):
        v, spec = self.vocab, self.vocab.stream(self.stream)
        local = utt.stream(self.stream)
        body = stream_body(v, self.stream, local)
        frames = local.shape[-1]
        head = self._head()
        layout = get_layout(spec.layout)
        split = len(head) + layout.frame_boundary(self._split(frames, rng), spec.codebooks)
        ids = np.concatenate([head, body, [v.stream_end(self.stream), v.eos]]).astype(np.int64)
        mask = np.zeros(len(ids), dtype=bool)
        mask[split:] = True
        if self.loss_on_input:
            mask[v.prefix_len :] = True
        return ids, mask

    def prompt(self, utt):
        spec = self.vocab.stream(self.stream)
        local = utt.stream(self.stream)
        body = stream_body(self.vocab, self.stream, local)
        keep = get_layout(spec.layout).continuation_length(local.shape[-1], spec.codebooks)
        return np.concatenate([self._head(), body[:keep]]).astype(np.int64)


class ASRFormat(TaskFormat):
    """Speech recognition (VoxtLM ``<start-speech> D <generate-text> Y``; SpeechGPT-style target-only loss).

    ``Utterance(text=[5], speech={"units": [3, 7]})`` ->
    ``[bos, task:asr, units_start, u:3, u:7, units_end, text_start, T:5, text_end, eos]``,
    mask ``[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]``. Prompt: ``[bos, task:asr, units_start, u:3, u:7, units_end, text_start]``.
    """

    task = "asr"
    target_modality = "text"
    requires = ("speech", "text")
    input_modality = "speech"
    preset = MappingProxyType({"do_sample": False, "num_beams": 1, "max_new_tokens": 128})
    metric = "text_wer"

    def inputs(self, utt):
        return [(self.stream, utt.stream(self.stream))]

    def targets(self, utt, target, rng):
        return [("text", utt.text_ids())]


class TTSFormat(TaskFormat):
    """Speech synthesis: text in, speech stream out.

    ``Utterance(text=[5], speech={"units": [3, 7]})`` ->
    ``[bos, task:tts, text_start, T:5, text_end, units_start, u:3, u:7, units_end, eos]``,
    mask ``[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]``. Prompt: ``[bos, task:tts, text_start, T:5, text_end, units_start]``.
    """

    task = "tts"
    requires = ("speech", "text")
    input_modality = "text"
    # Temperature 0.4: on the demo's held-out sentences, ASR of the generated units gave WER 0.28 at
    # temperature 0.7, 0.24 at 0.4 and 0.21 greedy; 0.4 keeps some variety between samples.
    preset = MappingProxyType(
        {
            "do_sample": True,
            "temperature": 0.4,
            "top_k": 20,
            "top_p": 0.95,
            "repetition_penalty": 1.0,
            "max_new_tokens": 400,
        }
    )
    metric = "speech_roundtrip"

    def inputs(self, utt):
        return [("text", utt.text_ids())]

    def targets(self, utt, target, rng):
        return [(self.stream, utt.stream(self.stream))]


class S2SFormat(TaskFormat):
    """Speech to speech (e.g. spoken question -> spoken answer): ``build(source, target)``.

    source units ``[3]``, target units ``[8, 9]`` ->
    ``[bos, task:s2s, units_start, u:3, units_end, units_start, u:8, u:9, units_end, eos]``,
    mask ``[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]``. ``parse`` returns ``(source, target)`` utterances.
    """

    task = "s2s"
    requires = ("speech",)
    input_modality = "speech"
    preset = MappingProxyType(
        {
            "do_sample": True,
            "temperature": 0.7,
            "top_k": 20,
            "top_p": 0.95,
            "repetition_penalty": 1.0,
            "max_new_tokens": 400,
        }
    )
    metric = "speech_roundtrip"
    metric_keys = MappingProxyType({"roundtrip_wer": "wer", "n": "pairs"})

    def __init__(
        self,
        vocab: UnifiedVocab,
        stream: str | None = None,
        loss_on_input: bool = False,
        pair_key: str = DEFAULT_PAIR_KEY,
    ):
        super().__init__(vocab, stream, loss_on_input)
        self.pair_key = pair_key

    @classmethod
    def from_options(cls, vocab, options):
        return cls(vocab, options.stream, options.loss_on_input, options.pair_key)

    def eligible(self, r):
        return super().eligible(r) and bool(r.meta.get(self.pair_key))

    def pair_id(self, r):
        return str(r.meta[self.pair_key])

    def pair_eligible(self, target):
        return self.frames(target) > 0

    def inputs(self, utt):
        return [(self.stream, utt.stream(self.stream))]

    def targets(self, utt, target, rng):
        if target is None:
            raise FormatError("s2s needs a target utterance: build(source, target)")
        return [(self.stream, target.stream(self.stream))]

    def parse(self, ids):
        parsed = self.parse_checked(ids)
        speech = [s for s in parsed.segments if s.modality == self.stream]
        src = Utterance(speech={self.stream: speech[0].ids}) if speech else Utterance()
        tgt = Utterance(speech={self.stream: speech[1].ids}) if len(speech) > 1 else Utterance()
        return src, tgt


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


Task = TaskFormat

FORMATS: dict[str, type[TaskFormat]] = {}
"""The task registry: tag -> task class, in registration order. Change it through
:func:`register_task` / :func:`unregister_task`."""


def register_task(cls: type[TaskFormat]) -> type[TaskFormat]:
    """Register a task class under its ``task`` tag (usable as a class decorator)."""
    name = getattr(cls, "task", None)
    if not isinstance(name, str) or not name:
        raise FormatError(f"{cls.__name__}: a task class needs a `task` tag")
    if name in FORMATS and FORMATS[name] is not cls:
        raise FormatError(f"task {name!r} is already registered ({FORMATS[name].__name__})")
    FORMATS[name] = cls
    return cls


def unregister_task(name: str) -> None:
    FORMATS.pop(name, None)


for _cls in (
    TextFormat,
    SpeechFormat,
    ContinueFormat,
    ASRFormat,
    TTSFormat,
    S2SFormat,
    InterleaveFormat,
    SynthInterleaveFormat,
):
    register_task(_cls)


def task_class(task: str) -> type[TaskFormat]:
    """The registered class of a task tag. Unknown tags raise with the list of known ones."""
    try:
        return FORMATS[task]
    except KeyError:
        raise FormatError(f"unknown task {task!r}; known tasks: {list(FORMATS)}") from None


def get_format(task: str, vocab: UnifiedVocab, **kwargs: Any) -> TaskFormat:
    """The format for a task tag, built with keyword arguments."""
    return task_class(task)(vocab, **kwargs)


def make_task(task: str, vocab: UnifiedVocab, options: TaskOptions | None = None) -> TaskFormat:
    """The task for a tag, configured from shared :class:`TaskOptions`."""
    return task_class(task).from_options(vocab, options or TaskOptions())


def generation_tasks() -> list[str]:
    """Tags of the registered tasks that generate (they have an input modality and a preset)."""
    return [t for t, c in FORMATS.items() if c.input_modality is not None and c.preset is not None]


def find_task(input_modality: str, output_modality: str, vocab: UnifiedVocab) -> str:
    """The first registered, generating task of this vocab from one modality to another (e.g. the
    speech -> text task the evaluator transcribes with)."""
    for t in generation_tasks():
        cls = FORMATS[t]
        if t in vocab.tasks and cls.input_modality == input_modality:
            out = "text" if getattr(cls, "target_modality", None) == "text" else "speech"
            if out == output_modality:
                return t
    raise FormatError(f"no registered task turns {input_modality} into {output_modality}")


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


# Tasks defined outside this module register themselves on import (here, so that every user of the
# registry sees them); imported last because they subclass TaskFormat.
import tokunify.chat.task  # noqa: E402, F401
