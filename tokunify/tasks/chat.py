"""The ``chat`` task: a conversation record -> ``(ids, loss_mask)`` through a chat template.

Registered in :data:`tokunify.tasks.FORMATS` (from :data:`tokunify.tasks.BUILTIN_TASKS`), so ``tokunify train`` trains on a conversation
store with ``data.mixture: {chat: 1.0}``. The whole multi-turn history is one document, packed like
any other; the loss falls on ``loss_on`` turns (assistant only by default; ``data.chat_loss_on``,
or every turn with ``data.loss_on_input``). The template is the bundle tokenizer's own chat template
when it has one, else the default template (``data.chat_template`` names one explicitly).

The task has no task tag of its own (a conversation may carry the tag of the task it came from,
see :class:`~tokunify.tasks.templates.DefaultTemplate`) and does not generate through
``tokunify generate``: :class:`tokunify.chat.engine.ChatEngine` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks.base import (
    FormatError,
    RecordLike,
    TaskFormat,
    TaskOptions,
    Utterance,
    unmask_input_only,
)
from tokunify.tasks.conversation import (
    ROLES,
    Conversation,
    ConversationError,
    Part,
    SpeechPart,
    is_conversation,
)
from tokunify.tasks.instructions import InstructionPool, drop_words, instruction_conversation
from tokunify.tasks.registry import make_task
from tokunify.tasks.templates import DEFAULT_LOSS_ON, ChatTemplate, decode_text, template_for


class ChatFormat(TaskFormat):
    """Conversation records (``meta["messages"]``) rendered by a chat template.

    With the default template, a user turn ``["Transcribe: ", units [3, 7]]`` and an assistant turn
    ``"the cat"`` give (``ts``/``te`` text markers, ``us``/``ue`` the stream's)::

        bos ts T:user te ts T:Transcribe: te us u:3 u:7 ue eos ts T:assistant te ts T:the_cat te eos
        loss on the assistant content and its eos only.
    """

    task = "chat"
    needs_stream = False

    def __init__(
        self,
        vocab: UnifiedVocab,
        tokenizer: Any,
        template: ChatTemplate | str | None = None,
        loss_on: tuple[str, ...] = DEFAULT_LOSS_ON,
    ):
        # No super().__init__: that checks the vocab for a `chat` task tag, which the task never emits.
        self.vocab, self.stream, self.loss_on_input = vocab, None, False
        self.tokenizer = tokenizer
        self._template = template
        self.loss_on = tuple(loss_on)

    @property
    def target_modality(self) -> str | None:
        return None  # a conversation has no single target modality; it does not use `generate`

    @property
    def template(self) -> ChatTemplate:
        """The chat template (asked for when building: the task needs the text tokenizer)."""
        if self.tokenizer is None:
            raise FormatError(
                "the chat task needs the bundle's text tokenizer (TaskOptions.tokenizer)"
            )
        t = self._template
        return t if isinstance(t, ChatTemplate) else template_for(self.tokenizer, t)

    @classmethod
    def from_options(cls, vocab: UnifiedVocab, options: TaskOptions) -> ChatFormat:
        loss_on = ROLES if options.loss_on_input else tuple(options.chat_loss_on)
        return cls(vocab, options.tokenizer, options.chat_template or None, loss_on)

    def eligible(self, r: RecordLike) -> bool:
        return is_conversation(r)

    def find_pair(
        self, r: RecordLike, lookup: Callable[[str], RecordLike | None]
    ) -> tuple[bool, RecordLike | None]:
        """Speech parts that reference other records are resolved here (through the stores'
        lookup); the resolved conversation comes back as the "target" record. Unresolvable: unusable."""
        conv = Conversation.from_record(r)
        if not conv.refs():
            return True, None
        try:
            return True, conv.resolve(lookup).to_record(r.id)
        except ConversationError:
            return False, None

    def conversation(self, r: RecordLike, target: RecordLike | None = None) -> Conversation:
        return Conversation.from_record(target if target is not None else r)

    def build_record(
        self,
        r: RecordLike,
        target: RecordLike | None,
        utterance: Callable[[RecordLike], Utterance],
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        try:
            conv = self.conversation(r, target)
        except ConversationError as e:
            raise FormatError(str(e)) from e
        ids, mask = self.template.render(self.vocab, self.tokenizer, conv, self.loss_on)
        return ids, unmask_input_only(self.vocab, ids, mask)

    def targets(self, utt, target, rng):
        raise FormatError("the chat task builds from conversation records (build_record)")

    def parse(self, ids):
        return self.template.parse(self.vocab, self.tokenizer, ids)


class InstructFormat(ChatFormat):
    """A base task's (input, target) from an utterance record, as an instruction-following chat
    turn (:func:`~tokunify.tasks.instructions.instruction_conversation`): the instruction is drawn
    from the pool's ``train`` phrasings of :attr:`pool_task` with the document's rng. The task tag
    (``<|task:T|>`` in the default template) is kept only with ``task_tag``.

    ``instruct_asr`` on an utterance with units ``[3, 7]`` and text "the cat" renders, with the
    default template, user ``["Transcribe the audio. ", units [3, 7]]`` and assistant ``"the cat"``.
    """

    task = "instruct"
    base: ClassVar[str]
    """The task whose (input, target) is turned into a chat turn."""
    pool_task: ClassVar[str]
    """The instruction pool's task name."""

    def __init__(
        self,
        vocab: UnifiedVocab,
        tokenizer: Any,
        template: ChatTemplate | str | None = None,
        loss_on: tuple[str, ...] = DEFAULT_LOSS_ON,
        options: TaskOptions | None = None,
        pool: InstructionPool | None = None,
        task_tag: bool = False,
        split: str = "train",
        word_dropout: float = 0.0,
    ):
        super().__init__(vocab, tokenizer, template, loss_on)
        options = options or TaskOptions()
        # the base task sees its own options: never its input side under the loss
        self.inner = make_task(self.base, vocab, replace(options, loss_on_input=False))
        self.stream = self.inner.stream
        self.requires, self.min_frames = self.inner.requires, self.inner.min_frames
        self.pool = pool if pool is not None else InstructionPool.load(options.instructions or None)
        self.pool.phrasings(self.pool_task, split)  # raises early for a pool without this task
        self.task_tag, self.split, self.word_dropout = task_tag, split, word_dropout

    @classmethod
    def from_options(cls, vocab: UnifiedVocab, options: TaskOptions) -> InstructFormat:
        loss_on = ROLES if options.loss_on_input else tuple(options.chat_loss_on)
        return cls(
            vocab, options.tokenizer, options.chat_template or None, loss_on, options,
            task_tag=options.instruct_task_tag, word_dropout=options.instruction_word_dropout,
        )  # fmt: skip

    def eligible(self, r: RecordLike) -> bool:
        return not is_conversation(r) and self.inner.eligible(r)

    def find_pair(self, r, lookup):
        return self.inner.find_pair(r, lookup)

    def pair_eligible(self, target: RecordLike) -> bool:
        return self.inner.pair_eligible(target)

    def example(
        self, utt: Utterance, target: Utterance | None, rng: np.random.Generator | None
    ) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
        """(input segments, target segments) as (modality, local ids), from the base task."""
        return self.inner.inputs(utt), self.inner.targets(utt, target, rng)

    def _part(self, modality: str, local: np.ndarray) -> Part:
        if modality == "text":
            return decode_text(self.tokenizer, np.asarray(local).tolist(), True)
        return SpeechPart(modality, np.asarray(local))

    def conversation_of(
        self, utt: Utterance, target: Utterance | None, rng: np.random.Generator | None
    ) -> Conversation:
        rng = rng if rng is not None else np.random.default_rng(0)
        inputs, targets = self.example(utt, target, rng)
        instruction = self.pool.sample(self.pool_task, self.split, rng)
        return instruction_conversation(
            self.pool_task,
            drop_words(instruction, self.word_dropout, rng),
            [self._part(m, x) for m, x in inputs],
            [self._part(m, x) for m, x in targets],
            task_tag=self.task_tag,
        )

    def build_record(self, r, target, utterance, rng=None):
        words = "words" in self.requires
        utt = utterance(r)
        if words and utt.words is None:
            raise FormatError(f"{self.task}: record {r.id!r} has no word alignments")
        conv = self.conversation_of(utt, utterance(target) if target is not None else None, rng)
        ids, mask = self.template.render(self.vocab, self.tokenizer, conv, self.loss_on)
        return ids, unmask_input_only(self.vocab, ids, mask)


class InstructContinueFormat(InstructFormat):
    """Continuation as an instruction: the first part of the utterance (cut as the ``continue``
    task cuts it) is the user's speech, the rest the assistant's."""

    def example(self, utt, target, rng):
        local = utt.stream(self.stream)
        k = max(1, self.inner._split(local.shape[-1], rng))
        return [(self.stream, local[..., :k])], [(self.stream, local[..., k:])]


def _instruct(base: str, cls: type[InstructFormat] = InstructFormat) -> type[InstructFormat]:
    """The instruction-following form of task ``base`` (tag ``instruct_{base}``)."""
    attrs = {"task": f"instruct_{base}", "base": base, "pool_task": base}
    return type(f"Instruct{base.title()}Format", (cls,), attrs)


INSTRUCT_TASKS: tuple[type[InstructFormat], ...] = (
    _instruct("asr"),
    _instruct("tts"),
    _instruct("s2s"),
    _instruct("continue", InstructContinueFormat),
)
"""The instruction forms of the base tasks (registered by :mod:`tokunify.tasks`)."""
