"""Speech in conversation: conversations as data, chat templates, instruction pools, chat sessions.

- :mod:`~tokunify.chat.conversation`: :class:`Conversation` of :class:`Message` with text and
  :class:`SpeechPart` content, stored as ordinary store records;
- :mod:`~tokunify.chat.templates`: chat templates (the base model's own, or the default one);
- :mod:`~tokunify.chat.task`: the ``chat`` training task;
- :mod:`~tokunify.chat.instructions`: natural-language instruction pools per task;
- :mod:`~tokunify.chat.session`: :class:`~tokunify.chat.session.ChatSession`, behind ``tokunify chat``.
"""

# formats first: its last line imports tokunify.chat.task, which needs formats whole (a module of
# this package imported on its own would otherwise meet a half-initialised formats).
import tokunify.formats  # noqa: F401  isort: skip
from tokunify.chat.conversation import (
    ROLES,
    Conversation,
    ConversationError,
    Message,
    SpeechPart,
    is_conversation,
)

__all__ = ["ROLES", "Conversation", "ConversationError", "Message", "SpeechPart", "is_conversation"]
