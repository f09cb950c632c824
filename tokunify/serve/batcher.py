"""Dynamic batching: requests that arrive within a few milliseconds share one batched ``generate``.

Hugging Face ``generate`` runs a batch to its longest row, so two things keep a request from waiting
on its neighbours' length:

- a streamer watches every decoding step and answers a request the moment its row emits
  ``<|eos|>`` or reaches its own ``max_new_tokens`` (the batch runs on for the others);
- a stopping criterion marks the rows of cancelled requests (client gone) as finished, so the
  batch stops as soon as every row still wanted is done.

Rows of one batch share the task and the sampling settings (one ``generate`` call takes one
temperature); ``max_new_tokens`` is per row. Requests that arrive while a batch decodes wait for it
and form the next one. Written by hand because HF ``generate`` has no request queue and the
serving engines that do (vLLM, TGI) do not load tokunify's constrained, self-describing bundles.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

GenerateIds = Callable[..., list[tuple[list[int], bool]]]
"""``Generator.generate_ids(task, prompts, **overrides) -> [(generated ids, hit_limit)]``."""


@dataclass
class Job:
    """One request waiting for its generated ids."""

    task: str
    prompt: np.ndarray  # [T] global ids
    max_new_tokens: int
    sampling: tuple[tuple[str, Any], ...]  # sorted generate() overrides shared by the batch
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    @property
    def key(self) -> Hashable:
        return (self.task, self.sampling)

    @property
    def cancelled(self) -> bool:
        return self.future.cancelled()


@dataclass
class BatcherStats:
    batches: int = 0
    rows: int = 0
    cancelled: int = 0  # rows whose client left before their answer
    largest_batch: int = 0
    last_batch_steps: int = 0  # decoding steps the last batch ran
    cancelled_before_decode: int = 0  # jobs dropped from the queue without decoding


@dataclass
class Batcher:
    """Collects :class:`Job` s and decodes them in batches on one worker thread."""

    generate_ids: GenerateIds
    eos: int
    max_batch: int = 16
    wait_s: float = 0.005
    stats: BatcherStats = field(default_factory=BatcherStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[Job] | None = None
        self._held: deque[Job] = deque()  # collected but of another task/sampling than the batch
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokunify-decode")
        self._closing = threading.Event()  # set by stop(): a running batch ends at its next step

    # ---- lifecycle (inside the server's event loop) ----------------------------------------------
    def start(self) -> None:
        # unbounded here: the server's Admission caps how many requests can be waiting at all
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the batch that decodes now)."""
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._held)

    async def stop(self) -> None:
        """Stop collecting; a batch that decodes stops at its next step; wait for its thread."""
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def submit(
        self, task: str, prompt: np.ndarray, max_new_tokens: int, sampling: dict[str, Any]
    ) -> asyncio.Future:
        """Queue a request; the future gives ``(generated ids, hit_limit)``. Cancel it to drop it."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        loop = asyncio.get_running_loop()
        job = Job(task, prompt, max_new_tokens, tuple(sorted(sampling.items())), loop.create_future(), loop)  # fmt: skip
        await self._queue.put(job)
        return job.future

    # ---- collecting --------------------------------------------------------------------------------
    async def _next(self) -> Job:
        while self._held:
            job = self._held.popleft()
            if not job.cancelled:
                return job
            self.stats.cancelled_before_decode += 1
        assert self._queue is not None
        return await self._queue.get()

    async def _collect(self) -> list[Job]:
        first = await self._next()
        batch = [first]
        for job in list(self._held):  # held jobs of the same kind join first (they came earlier)
            if len(batch) < self.max_batch and job.key == first.key:
                self._held.remove(job)
                batch.append(job)
        assert self._queue is not None
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:  # whatever is already queued joins at once; then wait out the window
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            (batch if job.key == first.key else self._held).append(job)
        live = [j for j in batch if not j.cancelled]
        self.stats.cancelled_before_decode += len(batch) - len(live)
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            self.stats.batches += 1
            self.stats.rows += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            await loop.run_in_executor(self._pool, self._decode, batch)

    # ---- decoding (worker thread) ------------------------------------------------------------------
    def _decode(self, batch: list[Job]) -> None:
        rows = _Rows(batch, self.eos, self._closing)
        overrides: dict[str, Any] = dict(batch[0].sampling)
        overrides["max_new_tokens"] = max(j.max_new_tokens for j in batch)
        beams = int(overrides.get("num_beams") or 1)
        if beams == 1:  # HF streamers do not work with beam search: answers come at the end
            overrides["streamer"] = rows
            overrides["stopping_criteria"] = StoppingCriteriaList([rows])
        try:
            out = self.generate_ids(batch[0].task, [j.prompt for j in batch], **overrides)
        except BaseException as e:  # every waiting request learns why
            for j in batch:
                _answer(j, e)
            return
        self.stats.last_batch_steps = rows.steps
        self.stats.cancelled += sum(j.cancelled for j in batch)
        for i, (j, (ids, hit)) in enumerate(zip(batch, out, strict=True)):
            if not rows.answered[i]:
                cut = ids[: j.max_new_tokens]
                _answer(j, (cut, hit or (len(cut) < len(ids) and self.eos not in cut)))


class _Rows(BaseStreamer, StoppingCriteria):
    """Per-row bookkeeping of one batch: answers finished rows early, stops cancelled ones."""

    def __init__(self, batch: list[Job], eos: int, closing: threading.Event | None = None):
        self.batch, self.eos, self.closing = batch, eos, closing
        self.ids: list[list[int]] = [[] for _ in batch]
        self.answered = [False] * len(batch)
        self.steps = 0
        self._prompt_seen = False
        self._lock = threading.Lock()

    # BaseStreamer: called with the prompt once, then with each step's tokens [B]
    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.steps += 1
        for i, tok in enumerate(value.view(-1).tolist()):
            if self.answered[i]:
                continue
            self.ids[i].append(int(tok))
            job = self.batch[i]
            if tok == self.eos or len(self.ids[i]) >= job.max_new_tokens:
                self.answered[i] = True
                _answer(job, (list(self.ids[i]), tok != self.eos))

    def end(self) -> None:
        pass

    # StoppingCriteria: a row is done once answered or cancelled
    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        closing = self.closing is not None and self.closing.is_set()
        done = [closing or a or j.cancelled for a, j in zip(self.answered, self.batch, strict=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # [B]


def _answer(job: Job, value: Any) -> None:
    """Resolve a job's future from any thread (no-op when the client already cancelled it)."""

    def set_it() -> None:
        if job.future.done():
            return
        if isinstance(value, BaseException):
            job.future.set_exception(value)
        else:
            job.future.set_result(value)

    job.loop.call_soon_threadsafe(set_it)


@dataclass
class ListBatcher:
    """Calls ``fn(items) -> results`` once for everything submitted within ``wait_s`` (vocoding).

    The rows of one LM batch end together, so their answers reach the vocoder together. One padded
    call is cheaper (16 answers of 48 units on a loaded 2-core CPU: 2.3 s in one call, 5.1 s one by
    one), and answering them together keeps the clients in step, so that their next requests fill
    the next LM batch instead of trickling in one vocoder call apart.
    """

    fn: Callable[[list[Any]], list[Any]]
    max_batch: int = 16
    wait_s: float = 0.005
    calls: int = 0

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokunify-vocode")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def __call__(self, item: Any) -> Any:
        if self._queue is None:
            raise RuntimeError("ListBatcher.start() was not called")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), left))
                    except asyncio.TimeoutError:
                        break
            batch = [(x, f) for x, f in batch if not f.done()]
            if not batch:
                continue
            self.calls += 1
            try:
                out = await loop.run_in_executor(self._pool, self.fn, [x for x, _ in batch])
            except Exception as e:
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), y in zip(batch, out, strict=True):
                if not f.done():
                    f.set_result(y)


class StopOnEvent(StoppingCriteria):
    """Stops a ``generate`` call (every row) once ``event`` is set, e.g. when its client has gone."""

    def __init__(self, event: threading.Event, on_stop: Callable[[], None] | None = None):
        self.event, self.on_stop, self.fired = event, on_stop, False

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        stop = self.event.is_set()
        if stop and not self.fired:
            self.fired = True
            if self.on_stop is not None:
                self.on_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
