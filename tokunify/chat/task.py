"""The ``chat`` task: a conversation record -> ``(ids, loss_mask)`` through a chat template.

Registered in :data:`tokunify.formats.FORMATS`, so ``tokunify train`` trains on a conversation
store with ``data.mixture: {chat: 1.0}``. The whole multi-turn history is one document, packed like
any other; the loss falls on ``loss_on`` turns (assistant only by default; ``data.chat_loss_on``,
or every turn with ``data.loss_on_input``). The template is the bundle tokenizer's own chat template
when it has one, else the default template (``data.chat_template`` names one explicitly).

The task has no task tag of its own (a conversation may carry the tag of the task it came from,
see :class:`~tokunify.chat.templates.DefaultTemplate`) and does not generate through
``tokunify generate``: :class:`tokunify.chat.session.ChatSession` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tokunify.chat.conversation import ROLES, Conversation, ConversationError, is_conversation
from tokunify.chat.templates import DEFAULT_LOSS_ON, ChatTemplate, template_for
from tokunify.formats import (
    FormatError,
    RecordLike,
    TaskFormat,
    TaskOptions,
    Utterance,
    register_task,
)
from tokunify.vocab import UnifiedVocab


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
        return self.template.render(self.vocab, self.tokenizer, conv, self.loss_on)

    def targets(self, utt, target, rng):
        raise FormatError("the chat task builds from conversation records (build_record)")

    def parse(self, ids):
        return self.template.parse(self.vocab, self.tokenizer, ids)


register_task(ChatFormat)
