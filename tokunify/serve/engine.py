"""The bridge from HTTP requests to a loaded bundle: tasks, sampling fields, audio in and out.

The HTTP layer (:mod:`tokunify.serve.app`) hands in decoded requests and gets back text, units and
waveforms; everything about tasks, prompts and decoding goes through the public API of
:class:`~tokunify.generate.generator.Generator`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
import soundfile as sf
from transformers import StoppingCriteriaList

from tokunify.chat.engine import ChatEngine, Reply
from tokunify.data.audio import AudioError
from tokunify.generate import generator as g
from tokunify.generate.decoding import Decoding
from tokunify.generate.generator import Generator
from tokunify.serve.admission import Admission
from tokunify.serve.audio_replies import AudioReplies
from tokunify.serve.batcher import Batcher, ListBatcher, StopOnEvent
from tokunify.serve.config import Capacity, Limits
from tokunify.tasks import FormatError, parse_sequence
from tokunify.tasks.conversation import Conversation

T = TypeVar("T")
READ_BLOCK = 65536
"""Frames decoded at a time: decoding stops one block past the duration limit at most."""
UNKNOWN_FRAMES = 2**62
"""libsndfile reports ``SF_COUNT_MAX`` frames when a stream's length is unknown."""


class RequestError(ValueError):
    """A request tokunify cannot serve: carries the HTTP status, the message and the field."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class TaskIO:
    """What a task reads and writes: ``"text"`` or ``"audio"``."""

    input: str
    output: str


def task_info(gen: Generator, task: str) -> tuple[TaskIO, dict[str, Any]]:
    """What a generation task reads and writes, and its decoding preset; FormatError if unknown.

    The one place the server learns about tasks. It asks the task registry when the generator has
    one (``Generator.task(name)`` -> a task object with ``input_modality``, ``output_modality`` and
    ``preset``), and the generator module's task tables otherwise.
    """
    task_of = getattr(gen, "task", None)
    if callable(task_of):
        fmt = task_of(task)
        audio = {"speech", "audio"}
        return (
            TaskIO(
                "audio" if fmt.input_modality in audio else "text",
                "audio" if fmt.output_modality in audio else "text",
            ),
            dict(fmt.preset or {}),
        )

    presets = g.PRESETS  # type: ignore[attr-defined]
    if task not in presets:
        raise FormatError(f"unknown task {task!r}; generation knows {sorted(presets)}")
    return (
        TaskIO(
            "audio" if task in g.AUDIO_INPUT_TASKS else "text",  # type: ignore[attr-defined]
            "audio" if task in g.SPEECH_TASKS else "text",  # type: ignore[attr-defined]
        ),
        dict(presets[task]),
    )


SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "num_beams",
    "min_new_tokens",
)
"""tokunify's own sampling fields every endpoint takes (besides ``max_new_tokens`` and ``task``)."""


@dataclass
class Sampling:
    """Per-request decoding settings; ``None`` keeps the task preset."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    num_beams: int | None = None
    min_new_tokens: int | None = None

    def overrides(self) -> dict[str, Any]:
        names = ("max_new_tokens", *SAMPLING_FIELDS)
        out = {k: getattr(self, k) for k in names if getattr(self, k) is not None}
        if "temperature" in out and Decoding(temperature=out["temperature"]).greedy:
            greedy = Decoding.greedy_with().generate_kwargs()  # the one greedy rule
            out.update({k: greedy[k] for k in ("do_sample", "temperature", "top_p", "top_k")})
        return out

    def decoding(self) -> Decoding:
        """These settings as the conversation engine's :class:`Decoding` (unset fields: its
        defaults); ``num_beams`` and ``min_new_tokens`` are task-routing fields only."""
        for name in ("num_beams", "min_new_tokens"):
            if getattr(self, name) is not None:
                raise RequestError(
                    f"{name} is not supported for conversations (the chat path samples or decodes greedily)",
                    param=name,
                )
        names = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")
        return Decoding(**{k: getattr(self, k) for k in names if getattr(self, k) is not None})


@dataclass
class Output:
    """One answered request."""

    task: str
    text: str | None = None
    units: np.ndarray | None = None  # local ids of the generated speech
    audio: np.ndarray | None = None  # [N] float32 at sample_rate
    sample_rate: int | None = None
    hit_limit: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine:
    """A :class:`Generator` behind a :class:`Batcher`, with request checks, limits and admission."""

    def __init__(
        self, generator: Generator, limits: Limits, batcher: Batcher, model_name: str,
        capacity: Capacity | None = None,
    ):  # fmt: skip
        self.gen, self.limits, self.batcher, self.model_name = (
            generator,
            limits,
            batcher,
            model_name,
        )
        self.capacity = capacity or Capacity()
        self.admission = Admission(self.capacity.max_queue, self.capacity.max_streams)
        self._cpu: anyio.CapacityLimiter | None = None  # made in start(), inside the event loop
        self._streams: set[threading.Event] = set()  # stop events of the running streams
        # Answers that end together are vocoded in one padded call, as Generator.generate does.
        # Padding reaches into a shorter answer's end through the vocoder's receptive field (all of
        # a very short one), so its audio can differ there from the same units vocoded alone.
        self.vocoder_batcher = ListBatcher(
            generator.decode, max(1, batcher.max_batch), batcher.wait_s
        )
        # tasks the bundle's vocabulary knows and the generator can run, in the vocabulary's order
        self.task_info: dict[str, tuple[TaskIO, dict[str, Any]]] = {}
        for t in generator.vocab.tasks:
            try:
                self.task_info[t] = task_info(generator, t)
            except (FormatError, ValueError):
                continue
        self.tasks = list(self.task_info)
        self.streams_stopped = 0  # streams (speech, chat) stopped because their client left
        self.has_speech_out = self._probe_vocoder()
        self._chat: ChatEngine | None = None
        self.audio_replies = AudioReplies()  # what an earlier spoken reply's audio.id said

    @property
    def chat(self) -> ChatEngine:
        """The conversation engine over the same generator (built on first use)."""
        if self._chat is None:
            self._chat = ChatEngine(self.gen, batch_size=max(1, self.batcher.max_batch))
        return self._chat

    def _probe_vocoder(self) -> bool:
        try:  # loads the vocoder now, not racing inside the first requests
            _ = self.gen.sample_rate
            return True
        except (ValueError, OSError):
            return False

    def start(self) -> None:
        """Inside the server's event loop: size the thread pools, start the batchers."""
        self._cpu = anyio.CapacityLimiter(self.capacity.threads)
        # Starlette's own thread work (stream bodies, spooled uploads) runs on anyio's default
        # limiter (40 threads): a streamed synthesis holds one while it waits for a chunk
        anyio.to_thread.current_default_thread_limiter().total_tokens = (
            self.capacity.threads + self.capacity.max_streams
        )
        self.batcher.start()
        self.vocoder_batcher.start()

    async def stop(self) -> None:
        """Stop every running generate at its next step and the batchers (server shutdown)."""
        for event in list(self._streams):
            event.set()
        await self.batcher.stop()
        await self.vocoder_batcher.stop()

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread, at most ``--threads`` at once."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._cpu)

    def default_task(self, io: TaskIO) -> str:
        """The bundle's first task that reads ``io.input`` and writes ``io.output``."""
        for t, (got, _) in self.task_info.items():
            if got == io:
                return t
        raise RequestError(f"this bundle has no task from {io.input} to {io.output}; it serves {', '.join(self.tasks)}")  # fmt: skip

    # ---- checks --------------------------------------------------------------------------------
    def check_task(self, task: str, io: TaskIO | None = None, param: str = "task") -> str:
        if task not in self.tasks:
            raise RequestError(
                f"unknown task {task!r}; this bundle serves {', '.join(self.tasks)}", param=param
            )
        got = self.task_info[task][0]
        if io is not None and got != io:
            raise RequestError(
                f"task {task!r} reads {got.input} and writes {got.output}; this endpoint needs "
                f"{io.input} in and {io.output} out",
                param=param,
            )
        if got.output == "audio" and not self.has_speech_out:
            raise RequestError(
                f"task {task!r} makes speech but the bundle has no vocoder (tokunify attach-vocoder)",
                param=param,
            )
        return task

    def check_text(self, text: str, param: str) -> str:
        if not text.strip():
            raise RequestError(f"{param}: empty text", param=param)
        if len(text) > self.limits.max_input_chars:
            raise RequestError(
                f"{param}: {len(text)} characters is over the limit of {self.limits.max_input_chars}",
                param=param,
            )
        return text

    def check_sampling(self, s: Sampling) -> Sampling:
        lim = self.limits.max_new_tokens
        checks = [
            ("max_new_tokens", s.max_new_tokens, lambda v: 1 <= v <= lim, f"between 1 and {lim}"),
            ("min_new_tokens", s.min_new_tokens, lambda v: 0 <= v <= (s.max_new_tokens or lim), "between 0 and max_new_tokens"),
            ("temperature", s.temperature, lambda v: 0 <= v <= 10, "between 0 and 10"),
            ("top_p", s.top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
            ("top_k", s.top_k, lambda v: v >= 0, ">= 0"),
            ("repetition_penalty", s.repetition_penalty, lambda v: 0 < v <= 10, "in (0, 10]"),
            ("num_beams", s.num_beams, lambda v: 1 <= v <= 8, "between 1 and 8"),
        ]  # fmt: skip
        for name, value, ok, want in checks:
            if value is not None and not ok(value):
                raise RequestError(f"{name} must be {want}, got {value}", param=name)
        return s

    def read_audio(self, data: bytes, name: str, param: str = "file") -> tuple[np.ndarray, int]:
        """Audio bytes (wav, flac, ogg, ...: whatever libsndfile reads) -> mono ``[1, N]`` and rate.

        The header is read first (``soundfile.info``): too many channels, an odd rate or more
        frames than ``max_audio_seconds`` are refused before anything is decoded. Decoding then
        reads blocks and stops one block past the limit, so a stream whose header gives no frame
        count (or a wrong one) costs at most the limit too. Channels are averaged block by block.
        """
        if not data:
            raise RequestError(f"{name}: empty file", param=param)
        lim = self.limits
        try:
            info = sf.info(io.BytesIO(data))
        except Exception as e:  # libsndfile's own error types vary across versions
            raise RequestError(f"{name}: undecodable audio ({_sf_reason(e)}); send wav, flac or ogg", param=param) from e  # fmt: skip
        sr, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
        what = f"{name} ({info.format}"  # e.g. "a.flac (FLAC"
        if not 1 <= channels <= lim.max_audio_channels:
            raise RequestError(f"{what}): {channels} channels; the limit is {lim.max_audio_channels}", param=param)  # fmt: skip
        if not 1 <= sr <= lim.max_audio_rate:
            raise RequestError(f"{what}): sample rate {sr} Hz is outside 1 to {lim.max_audio_rate} Hz", param=param)  # fmt: skip
        cap = int(lim.max_audio_seconds * sr)  # most frames a request may hold
        if cap < frames < UNKNOWN_FRAMES:
            raise RequestError(self._too_long(name, frames / sr), param=param)
        blocks, n = [], 0
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                while n <= cap:
                    block = f.read(min(READ_BLOCK, cap + 1 - n), dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    blocks.append(block.mean(axis=1))
                    n += len(block)
        except Exception as e:
            raise RequestError(f"{what}): undecodable audio ({_sf_reason(e)})", param=param) from e
        if n > cap:
            raise RequestError(self._too_long(name, n / sr, at_least=True), param=param)
        if n == 0:
            raise RequestError(f"{name}: the file holds no samples", param=param)
        return np.concatenate(blocks)[None], sr  # [1, N]

    def _too_long(self, name: str, seconds: float, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"{name}: {more}{seconds:.1f} s of audio is over the limit of {self.limits.max_audio_seconds:g} s"  # fmt: skip

    def decode_base64(self, data: str, where: str) -> bytes:
        """A base64 ``input_audio.data`` -> bytes; its decoded size is checked before decoding."""
        size = len(data) * 3 // 4
        if size > self.limits.max_upload_bytes:
            raise RequestError(f"{where}.input_audio.data: {size} bytes of audio is over the limit of {self.limits.max_upload_bytes} bytes", status=413, param=where)  # fmt: skip
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise RequestError(f"{where}.input_audio.data: not base64 ({e})", param=where) from e

    # ---- running -------------------------------------------------------------------------------
    async def prompt(
        self, task: str, source: str | np.ndarray, sr: int | None = None
    ) -> np.ndarray:
        """Text, a waveform ``[C, N]`` or local units ``[T]`` -> the task's prompt ids."""
        try:
            return await self.cpu(lambda: self.gen.prompts(task, [source], sr)[0])
        except (
            AudioError,
            FormatError,
            ValueError,
        ) as e:  # bad input, or a bundle without the part
            raise RequestError(
                str(e), param="file" if self.task_info[task][0].input == "audio" else "input"
            ) from e

    async def run(
        self, task: str, source: str | np.ndarray, sampling: Sampling, sr: int | None = None,
        vocode: bool = True, is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> Output:  # fmt: skip
        """One request through the batcher; speech outputs are vocoded unless ``vocode=False``.

        ``is_disconnected`` (Starlette's ``request.is_disconnected``) is polled while the request
        waits: a client that leaves cancels its job, which frees its row in the batch.
        """
        prompt = await self.prompt(task, source, sr)
        over = sampling.overrides()
        max_new = sampling.max_new_tokens or int(self.task_info[task][1].get("max_new_tokens", 256))
        over.pop("max_new_tokens", None)
        fut = await self.batcher.submit(task, prompt, max_new, over)
        watch = (
            asyncio.ensure_future(_cancel_on_disconnect(fut, is_disconnected))
            if is_disconnected is not None
            else None
        )
        try:
            ids, hit = await fut
        except asyncio.CancelledError:
            if watch is not None and watch.done() and not watch.cancelled() and watch.result():
                # the client left; nobody reads this answer (nginx's 499 "client closed request")
                raise RequestError("client closed the request", status=499) from None
            # the server stops and its drain time is over: say so while the connection is open
            raise RequestError(
                "the server is shutting down; retry the request", status=503
            ) from None
        finally:
            if watch is not None:
                watch.cancel()
        out = self._output(task, prompt, ids, hit)
        if vocode and out.units is not None and out.units.shape[-1] > 0:
            wav = await self.vocoder_batcher(out.units)
            out.audio, out.sample_rate = wav, self.gen.sample_rate
        elif vocode and self.task_info[task][0].output == "audio":
            out.audio, out.sample_rate = np.zeros(0, np.float32), self.gen.sample_rate
        return out

    def _output(self, task: str, prompt: np.ndarray, ids: list[int], hit: bool) -> Output:
        out = Output(task, hit_limit=hit, prompt_tokens=len(prompt), completion_tokens=len(ids))
        full = np.concatenate([prompt, np.asarray(ids, dtype=np.int64)])
        try:
            parsed = parse_sequence(self.gen.vocab, full)
        except (FormatError, ValueError):  # a codec stream cut mid-frame by the limit
            n_q = self.gen.vocab.stream(self.gen.stream).codebooks
            parsed = parse_sequence(self.gen.vocab, full[: len(prompt) + len(ids) // n_q * n_q])
        # the prompt ends by opening the target segment, so the last segment is the answer
        seg = parsed.segments[-1] if parsed.segments else None
        if seg is None:
            return out
        if self.task_info[task][0].output == "text":
            out.text = self.gen.bundle.tokenizer.decode(
                seg.ids.tolist(), skip_special_tokens=True
            ).strip()
        else:
            out.units = seg.ids
        return out

    async def stream_tts(
        self, task: str, text: str, sampling: Sampling
    ) -> tuple[Iterator[np.ndarray], threading.Event]:
        """Audio chunks of ``task`` (a text -> speech task) while the LM generates (the
        generator's streaming path, not batched), and
        the event that stops the generation when set (the client has gone, or the server stops).
        The caller holds a stream ticket of :attr:`admission` and calls :meth:`stream_done`."""
        stop = threading.Event()
        crit = StoppingCriteriaList([StopOnEvent(stop, self._stream_stopped)])
        self._streams.add(stop)
        try:
            chunks = await self.cpu(
                lambda: self.gen.stream_speech(
                    task, text, stopping_criteria=crit, **sampling.overrides()
                )
            )
        except BaseException:
            self.stream_done(stop)
            raise
        return chunks, stop

    def stream_chat(
        self, conversation: Conversation, decoding: Decoding, seed: int, reply: str
    ) -> tuple[Iterator[Reply], threading.Event]:
        """The conversation engine's reply while it is generated (:meth:`ChatEngine.stream`; a
        spoken reply vocoded in chunks, as :meth:`stream_tts`'s), and the event that stops its
        generation when set. The caller holds a stream ticket and calls :meth:`stream_done`."""
        stop = threading.Event()
        crit = StoppingCriteriaList([StopOnEvent(stop, self._stream_stopped)])
        self._streams.add(stop)
        replies = self.chat.stream(
            conversation, decoding, seed, reply, vocode=reply == "speech", stopping_criteria=crit
        )
        return replies, stop

    def stream_done(self, stop: threading.Event) -> None:
        """A stream has ended: stop its generate (if still running) and forget it."""
        stop.set()
        self._streams.discard(stop)

    def _stream_stopped(self) -> None:
        self.streams_stopped += 1


def _sf_reason(e: Exception) -> str:
    """libsndfile's reason without the Python repr of the in-memory file it names."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>:?\s*", "", str(e)).strip()
    text = re.sub(r"^Error opening\s*:?\s*", "", text).strip()
    return text or type(e).__name__


async def _cancel_on_disconnect(
    fut: asyncio.Future, is_disconnected: Callable[[], Awaitable[bool]]
) -> bool:
    """Cancel ``fut`` when the client goes away before it resolves; True if it did."""
    while not fut.done():
        if await is_disconnected():
            fut.cancel()
            return True
        await asyncio.sleep(0.05)
    return False
