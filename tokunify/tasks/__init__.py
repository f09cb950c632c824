"""Tasks: local-id streams of one record -> ``(ids, loss_mask)`` and back, one registered class per task.

- :mod:`~tokunify.tasks.base`: the sequence grammar (:func:`parse_sequence`), :class:`Utterance`,
  :class:`Word`, and :class:`TaskFormat`, the base every task derives from;
- :mod:`~tokunify.tasks.registry`: tag -> class (:func:`get_format`, :func:`make_task`,
  :func:`find_task`, :func:`register_task`);
- the task families: :mod:`~tokunify.tasks.text` (text LM, speech LM, continuation),
  :mod:`~tokunify.tasks.transcribe` (ASR, TTS), :mod:`~tokunify.tasks.s2s`,
  :mod:`~tokunify.tasks.interleave` (word-level and synthesized interleaving) and
  :mod:`~tokunify.tasks.chat` (conversations and the instruction forms of the base tasks), with
  :mod:`~tokunify.tasks.conversation`, :mod:`~tokunify.tasks.templates`,
  :mod:`~tokunify.tasks.reply` and :mod:`~tokunify.tasks.instructions` behind the chat task.

The built-in tasks register from one explicit list, :data:`BUILTIN_TASKS`, when this package is
imported (every import of a submodule imports it first), so no module registers as a side effect.
"""

from tokunify.tasks.base import (
    DEFAULT_PAIR_KEY,
    DOC_KIND_KEY,
    FormatError,
    ParsedSequence,
    RecordLike,
    Segment,
    Task,
    TaskFormat,
    TaskOptions,
    Utterance,
    Word,
    align_words,
    encode_segment,
    has_text,
    parse_sequence,
    parse_stream_body,
    stream_body,
)
from tokunify.tasks.chat import INSTRUCT_TASKS, ChatFormat, InstructFormat
from tokunify.tasks.interleave import InterleaveFormat, SynthInterleaveFormat
from tokunify.tasks.registry import (
    FORMATS,
    find_task,
    generation_tasks,
    get_format,
    make_task,
    register_task,
    task_class,
    unregister_task,
)
from tokunify.tasks.s2s import S2SFormat
from tokunify.tasks.text import ContinueFormat, SpeechFormat, TextFormat
from tokunify.tasks.transcribe import ASRFormat, TTSFormat

BUILTIN_TASKS: tuple[type[TaskFormat], ...] = (
    TextFormat,
    SpeechFormat,
    ContinueFormat,
    ASRFormat,
    TTSFormat,
    S2SFormat,
    InterleaveFormat,
    SynthInterleaveFormat,
    ChatFormat,
    *INSTRUCT_TASKS,
)
"""Every task tokunify ships, in registration order (the order :func:`find_task` searches)."""

for _cls in BUILTIN_TASKS:
    register_task(_cls)

__all__ = [
    "BUILTIN_TASKS",
    "DEFAULT_PAIR_KEY",
    "DOC_KIND_KEY",
    "FORMATS",
    "INSTRUCT_TASKS",
    "ASRFormat",
    "ChatFormat",
    "ContinueFormat",
    "FormatError",
    "InstructFormat",
    "InterleaveFormat",
    "ParsedSequence",
    "RecordLike",
    "S2SFormat",
    "Segment",
    "SpeechFormat",
    "SynthInterleaveFormat",
    "TTSFormat",
    "Task",
    "TaskFormat",
    "TaskOptions",
    "TextFormat",
    "Utterance",
    "Word",
    "align_words",
    "encode_segment",
    "find_task",
    "generation_tasks",
    "get_format",
    "has_text",
    "make_task",
    "parse_sequence",
    "parse_stream_body",
    "register_task",
    "stream_body",
    "task_class",
    "unregister_task",
]
