"""Speech in conversation: conversations as data, chat templates, instruction pools, chat sessions.

- :mod:`~tokunify.tasks.conversation`: :class:`Conversation` of :class:`Message` with text and
  :class:`SpeechPart` content, stored as ordinary store records;
- :mod:`~tokunify.tasks.templates`: chat templates (the base model's own, or the default one);
- :mod:`~tokunify.tasks.chat`: the ``chat`` training task;
- :mod:`~tokunify.tasks.instructions`: natural-language instruction pools per task;
- :mod:`~tokunify.chat.engine`: :class:`~tokunify.chat.engine.ChatEngine`, the one path that answers
  conversations (``tokunify chat``, ``make-chat-data``'s bundle replies, the instruct demo's metrics);
- :mod:`~tokunify.chat.session`: :class:`~tokunify.chat.session.ChatSession`, behind ``tokunify chat``.
"""

from tokunify.tasks.conversation import (
    ROLES,
    Conversation,
    ConversationError,
    Message,
    SpeechPart,
    is_conversation,
    write_conversation_store,
)
from tokunify.tasks.instructions import InstructionPool, instruction_conversation
from tokunify.tasks.templates import ChatTemplate, get_template, register_template, template_for

__all__ = [
    "ROLES",
    "ChatTemplate",
    "Conversation",
    "ConversationError",
    "InstructionPool",
    "Message",
    "SpeechPart",
    "get_template",
    "instruction_conversation",
    "is_conversation",
    "register_template",
    "template_for",
    "write_conversation_store",
]
