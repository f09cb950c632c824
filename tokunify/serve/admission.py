"""Admission control for ``tokunify serve``: a bounded number of requests at once, 429 beyond it.

Every request that will cost model time takes a :class:`Ticket` before any work (audio decoding,
prompt encoding, a batch row or a streamed ``generate``) and gives it back when its answer is sent.
Streamed syntheses run their own ``generate`` outside the batcher, so they take a ticket from the
same budget (``max_queue``) and also count against ``max_streams``. A request that finds either
full is refused at once with :class:`Busy` (429 and ``Retry-After``): nothing waits unbounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class Busy(Exception):
    """The server is at capacity: carries the message and a ``Retry-After`` in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Ticket:
    """One admitted request; :meth:`Admission.release` it once (later calls do nothing)."""

    stream: bool
    started: float = field(default_factory=time.monotonic)
    released: bool = False


@dataclass
class Admission:
    """Counts admitted requests and streams against their limits (used from the event loop only)."""

    max_queue: int
    max_streams: int
    in_flight: int = 0
    streams: int = 0
    refused_queue: int = 0
    refused_streams: int = 0
    _seconds: float = 1.0  # a moving average of how long an admitted request takes

    def admit(self, stream: bool = False) -> Ticket:
        """A ticket, or :class:`Busy` when ``max_queue`` (or, for a stream, ``max_streams``) is full."""
        if self.in_flight >= self.max_queue:
            self.refused_queue += 1
            raise Busy(f"server busy: {self.in_flight} requests in progress is the limit (--max-queue {self.max_queue}); retry later", self.retry_after())  # fmt: skip
        if stream and self.streams >= self.max_streams:
            self.refused_streams += 1
            raise Busy(f"server busy: {self.streams} streamed syntheses in progress is the limit (--max-streams {self.max_streams}); retry later", self.retry_after())  # fmt: skip
        self.in_flight += 1
        self.streams += stream
        return Ticket(stream)

    def release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        self.in_flight -= 1
        self.streams -= ticket.stream
        took = time.monotonic() - ticket.started
        self._seconds = 0.8 * self._seconds + 0.2 * took

    @contextmanager
    def hold(self, stream: bool = False) -> Iterator[Ticket]:
        """A ticket for the duration of the ``with`` block."""
        ticket = self.admit(stream)
        try:
            yield ticket
        finally:
            self.release(ticket)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent time per request, 1 to 60."""
        return min(60, max(1, math.ceil(self._seconds)))
