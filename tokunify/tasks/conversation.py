"""Conversations as data: messages of text and speech parts, stored as ordinary store records.

A :class:`Conversation` is a list of :class:`Message` (system / user / assistant); each message's
content is a list of parts, a text string or a :class:`SpeechPart` (a stream's *local* ids, or a
reference to a store record resolved later). In a store, a conversation is one normal
:class:`~tokunify.data.store.schema.Record`:

- ``record.streams[name]``: the ids of every speech part of stream ``name``, concatenated along time
  in message order (units ``[T]``, codec ``[n_q, T]``), so the usual stream columns hold them;
- ``record.meta["messages"]``: the structure and the text, e.g.
  ``[{"role": "user", "content": [{"text": "Transcribe: "}, {"speech": "units", "frames": 7}]},
  {"role": "assistant", "content": [{"text": "the red cat"}]}]``; a reference part is
  ``{"speech": "units", "ref": "utt-12"}`` (no frames: its ids live in the referenced record);
- ``record.meta["conversation"]``: the conversation's own metadata (task, instruction, provenance).

Records of utterance stores and conversation stores therefore go through the same writer, reader
and training data path; :func:`is_conversation` tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tokunify.data.store.layout import StoreMeta, open_or_create
from tokunify.data.store.schema import Record
from tokunify.data.store.writer import write_chunk
from tokunify.tasks.base import num_frames

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
MESSAGES_KEY = "messages"
CONVERSATION_KEY = "conversation"


class ConversationError(ValueError):
    """A conversation or a conversation record is malformed."""


@dataclass(eq=False)
class SpeechPart:
    """Speech in a message: local ids of ``stream`` (``[T]`` units, ``[n_q, T]`` codec, or a 0-d
    frame count for a continuous stream), or ``ref``, the id of a store record whose stream holds
    them (resolved by :meth:`Conversation.resolve`)."""

    stream: str
    ids: np.ndarray | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        if self.ids is None and self.ref is None:
            raise ConversationError(
                f"speech part of stream {self.stream!r} has neither ids nor ref"
            )
        if self.ids is not None:
            self.ids = np.asarray(self.ids, dtype=np.int64)
            if self.ids.ndim not in (0, 1, 2) or (self.ids.ndim == 0 and int(self.ids) < 0):
                raise ConversationError(
                    f"speech part of stream {self.stream!r}: ids must be [T], [n_q, T] or a frame "
                    f"count >= 0, got shape {self.ids.shape}"
                )

    @property
    def frames(self) -> int:
        return 0 if self.ids is None else num_frames(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpeechPart):
            return NotImplemented
        same_ids = (self.ids is None and other.ids is None) or (
            self.ids is not None and other.ids is not None and np.array_equal(self.ids, other.ids)
        )
        return self.stream == other.stream and self.ref == other.ref and same_ids

    def __repr__(self) -> str:
        what = f"ids={self.ids.tolist()}" if self.ids is not None else f"ref={self.ref!r}"
        what = f"frames={self.frames}" if self.ids is not None and self.ids.ndim == 0 else what
        return f"SpeechPart({self.stream!r}, {what})"


Part = str | SpeechPart


def _normalise(content: str | Iterable[Part]) -> list[Part]:
    """A plain string becomes one text part; adjacent text parts merge; empty text parts go."""
    parts: list[Part] = [content] if isinstance(content, str) else list(content)
    out: list[Part] = []
    for p in parts:
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] = out[-1] + p
                continue
        elif not isinstance(p, SpeechPart):
            raise ConversationError(
                f"a content part must be str or SpeechPart, got {type(p).__name__}"
            )
        out.append(p)
    return out


@dataclass
class Message:
    """One turn. ``content`` parts are text strings and :class:`SpeechPart` in order."""

    role: Role
    content: list[Part] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConversationError(f"message role {self.role!r}: must be one of {ROLES}")
        self.content = _normalise(self.content)

    @property
    def text(self) -> str:
        """The text parts joined (speech parts left out)."""
        return "".join(p for p in self.content if isinstance(p, str))

    @property
    def speech(self) -> list[SpeechPart]:
        return [p for p in self.content if isinstance(p, SpeechPart)]


@dataclass
class Conversation:
    """Messages in order plus free-form metadata (task, instruction, provenance)."""

    messages: list[Message] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.messages = [m if isinstance(m, Message) else Message(**m) for m in self.messages]

    def append(self, role: Role, content: str | Iterable[Part]) -> Message:
        m = Message(role, content)
        self.messages.append(m)
        return m

    def refs(self) -> list[str]:
        """Record ids of the speech parts that are references without ids."""
        return [
            p.ref for m in self.messages for p in m.speech if p.ids is None and p.ref is not None
        ]

    def resolve(self, lookup: Callable[[str], Any | None]) -> Conversation:
        """A copy whose reference parts carry the ids of the referenced records (``lookup(id)`` gives
        a record or None); a missing record or stream raises :class:`ConversationError`."""
        msgs = []
        for m in self.messages:
            parts: list[Part] = []
            for p in m.content:
                if isinstance(p, SpeechPart) and p.ids is None:
                    r = lookup(str(p.ref))
                    if r is None or p.stream not in r.streams:
                        raise ConversationError(
                            f"speech part refers to record {p.ref!r} stream {p.stream!r}, which is not in the stores"
                        )
                    p = SpeechPart(p.stream, np.asarray(r.streams[p.stream], dtype=np.int64), p.ref)
                parts.append(p)
            msgs.append(Message(m.role, parts))
        return Conversation(msgs, dict(self.meta))

    # ---- store form ---------------------------------------------------------------------------
    def to_record(self, id: str, seconds: float = 0.0, speaker: str | None = None) -> Record:
        """The conversation as one store record (see the module docstring for the layout)."""
        streams: dict[str, list[np.ndarray]] = {}
        messages = []
        for m in self.messages:
            content: list[dict[str, Any]] = []
            for p in m.content:
                if isinstance(p, str):
                    content.append({"text": p})
                    continue
                d: dict[str, Any] = {"speech": p.stream}
                if p.ref is not None:
                    d["ref"] = p.ref
                if p.ids is not None:
                    d["frames"] = p.frames
                    prev = streams.setdefault(p.stream, [])
                    if prev and prev[0].ndim != p.ids.ndim:
                        raise ConversationError(
                            f"stream {p.stream!r}: parts mix [T] and [n_q, T] ids"
                        )
                    prev.append(p.ids)
                content.append(d)
            messages.append({"role": m.role, "content": content})
        meta: dict[str, Any] = {MESSAGES_KEY: messages}
        if self.meta:
            meta[CONVERSATION_KEY] = self.meta
        return Record(
            id=id,
            speaker=speaker,
            text=None,
            seconds=float(seconds),
            text_ids=None,
            streams={k: _join(v) for k, v in streams.items()},
            durations={},
            words=None,
            meta=meta,
        )

    @classmethod
    def from_record(cls, record: Any) -> Conversation:
        """The conversation stored in a record (inverse of :meth:`to_record`)."""
        if not is_conversation(record):
            raise ConversationError(
                f"record {record.id!r}: no meta.{MESSAGES_KEY}; not a conversation record"
            )
        offsets = {k: 0 for k in record.streams}
        msgs = []
        for i, m in enumerate(record.meta[MESSAGES_KEY]):
            parts: list[Part] = []
            for d in m.get("content", []):
                if "text" in d:
                    parts.append(str(d["text"]))
                    continue
                stream = d.get("speech")
                if not stream:
                    raise ConversationError(
                        f"record {record.id!r} message {i}: part {d!r} is neither text nor speech"
                    )
                if "frames" not in d:
                    parts.append(SpeechPart(stream, None, d.get("ref")))
                    continue
                if stream not in record.streams:
                    raise ConversationError(
                        f"record {record.id!r} message {i}: no stream {stream!r} in the record"
                    )
                a, n = offsets[stream], int(d["frames"])
                ids = np.asarray(record.streams[stream], dtype=np.int64)
                # a continuous stream holds its total frame count; its parts take theirs in turn
                ids = np.asarray(min(n, int(ids) - a)) if ids.ndim == 0 else ids[..., a : a + n]
                if num_frames(ids) != n:
                    raise ConversationError(
                        f"record {record.id!r}: stream {stream!r} has {a + ids.shape[-1]} frames, messages need more"
                    )
                offsets[stream] = a + n
                parts.append(SpeechPart(stream, ids, d.get("ref")))
            try:
                msgs.append(Message(m["role"], parts))
            except KeyError:
                raise ConversationError(f"record {record.id!r} message {i}: no role") from None
        return cls(msgs, dict(record.meta.get(CONVERSATION_KEY, {})))


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """A stream's parts along time: ids concatenated, or continuous frame counts summed (0-d)."""
    if parts[0].ndim == 0:
        return np.asarray(sum(int(p) for p in parts), dtype=np.uint32)
    return np.concatenate(parts, axis=-1).astype(np.uint32)


def is_conversation(record: Any) -> bool:
    """Whether a store record holds a conversation (``meta["messages"]``)."""
    return isinstance(getattr(record, "meta", None), dict) and MESSAGES_KEY in record.meta


def write_conversation_store(
    root: str | Path,
    conversations: Sequence[tuple[str, Conversation]],
    like: StoreMeta,
    chunk_size: int = 256,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``(id, conversation)`` pairs as a store whose streams (tokenizers and their hashes)
    and text tokenizer are those of ``like`` (the store the speech came from), so a bundle that
    trains on that store trains on this one. ``extra`` (provenance) goes into ``store.json``."""

    meta = StoreMeta(
        streams=dict(like.streams),
        text_tokenizer=like.text_tokenizer,
        manifest="conversations",
        manifest_rows=len(conversations),
        chunk_size=chunk_size,
        extra={"kind": "conversations", **(extra or {})},
    )
    open_or_create(root, meta)
    for c in range(meta.num_chunks):
        records = [conversations[i][1].to_record(conversations[i][0]) for i in meta.chunk_rows(c)]
        for r in records:
            unknown = set(r.streams) - set(meta.streams)
            if unknown:
                raise ConversationError(
                    f"conversation {r.id!r}: streams {sorted(unknown)} are not in the store"
                )
            for name, info in meta.streams.items():  # every shard row has every stream column
                shape = (info.num_codebooks, 0) if info.kind == "codec" else (0,)
                r.streams.setdefault(name, np.zeros(shape, dtype=np.uint32))
                if info.dedup:  # run lengths of a conversation's speech are not kept: empty
                    r.durations.setdefault(name, np.zeros(0, dtype=np.uint32))
        write_chunk(root, meta, c, records, [])
    return Path(root)


__all__ = [
    "ROLES",
    "Conversation",
    "ConversationError",
    "Message",
    "Part",
    "Role",
    "SpeechPart",
    "is_conversation",
    "write_conversation_store",
]
