"""The transcripts of the spoken replies a server sent, by their ``audio.id``.

OpenAI's multi-turn audio sends an earlier spoken reply back as ``{"role": "assistant", "audio":
{"id": "audio_..."}}``, without its words; the server reads it as the transcript it sent with that
reply. Kept per server (no module state): the newest ``size`` replies, each until the
``expires_at`` the reply carried.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict

TTL_S = 3600
"""How long a reply's audio id is valid (its ``expires_at``, as OpenAI's: an hour)."""


class AudioReplies:
    """Audio id -> transcript of this server's spoken replies, the newest ``size`` of them."""

    def __init__(self, size: int = 4096, ttl_s: int = TTL_S):
        self.size, self.ttl_s = size, ttl_s
        # audio id -> (transcript, expires_at), oldest first
        self._items: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> tuple[str, int]:
        """A fresh audio id and its ``expires_at`` (Unix seconds)."""
        return f"audio_{uuid.uuid4().hex}", int(time.time()) + self.ttl_s

    def keep(self, audio_id: str, transcript: str, expires_at: int) -> None:
        with self._lock:
            self._items[audio_id] = (transcript, expires_at)
            self._items.move_to_end(audio_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def transcript(self, audio_id: str) -> str | None:
        """The transcript sent with ``audio_id``; None when unknown, dropped or expired."""
        with self._lock:
            item = self._items.get(audio_id)
        if item is None or item[1] <= time.time():
            return None
        return item[0]
