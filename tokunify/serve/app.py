"""The FastAPI app: OpenAI's audio and chat endpoints, /v1/models, /health and the page at /.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with a message that
names the field or file and the reason. Bodies are read and validated here (not by FastAPI's
signature magic) so that a wrong content type, malformed JSON or a bad field each get their own
4xx and message. A 5xx says only "internal error" and a request id; the server log has the
traceback under the same id.

Access (outermost first): the Host header (:class:`_HostCheck`), CORS preflights
(Starlette's ``CORSMiddleware``), then on ``/v1/*`` the origin and the API key
(:class:`_ApiGuard`), then the body size (:class:`_BodyLimit`).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokunify.data.audio import AudioError
from tokunify.model.bundle import BundleError
from tokunify.serve import audio_out
from tokunify.serve.admission import Busy, Ticket
from tokunify.serve.config import Access, is_loopback
from tokunify.serve.engine import Engine, RequestError, Sampling, TaskIO
from tokunify.tasks.conversation import Conversation, SpeechPart
from tokunify.tasks.conversation import Message as Turn

log = logging.getLogger("tokunify.serve")


# ---- request bodies ----------------------------------------------------------------------------
class _Sampled(BaseModel):
    """tokunify's own fields, taken by every endpoint."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    num_beams: int | None = None
    min_new_tokens: int | None = None

    def sampling(self) -> Sampling:
        return Sampling(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            num_beams=self.num_beams,
            min_new_tokens=self.min_new_tokens,
        )


class SpeechRequest(_Sampled):
    model: str
    input: str
    voice: str | None = None  # accepted for OpenAI clients; the bundle has one voice
    instructions: str | None = None  # accepted, unused
    response_format: str | None = None  # OpenAI's default, mp3; a stream's default is wav
    speed: float = 1.0
    stream: bool = False
    stream_format: Literal["audio", "sse"] | None = None  # OpenAI's: "audio" streams too


class TranscriptionForm(_Sampled):
    model: str
    language: str | None = None  # accepted, unused: the bundle knows its language
    prompt: str | None = None  # accepted, unused
    response_format: str = "json"


class InputAudio(BaseModel):
    data: str  # base64
    format: str = "wav"


class ContentPart(BaseModel):
    type: Literal["text", "input_audio"]
    text: str | None = None
    input_audio: InputAudio | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    audio: dict[str, Any] | None = None  # an earlier assistant audio reply: read as its transcript
    name: str | None = None


class AudioParams(BaseModel):
    format: str = "wav"
    voice: str | None = None


class ChatRequest(_Sampled):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioParams | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    n: int = 1
    seed: int | None = None  # accepted; batched sampling shares one generator
    user: str | None = None


# ---- errors --------------------------------------------------------------------------------------
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def _error(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:  # fmt: skip
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": status, **extra}},
        status_code=status,
        headers=headers,
    )


def _internal_error(method: str, path: str, e: BaseException) -> JSONResponse:
    """A generic 500 with a request id; the traceback goes to the log under the same id."""
    rid = uuid.uuid4().hex[:16]
    log.error("request %s: %s %s failed", rid, method, path, exc_info=e)
    return _error(500, f"internal error (request id {rid}); the server log has the details",
                  headers={"X-Request-Id": rid}, request_id=rid)  # fmt: skip


class _InternalErrors:
    """Any exception no handler knows -> :func:`_internal_error` (not re-raised: logged once)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            if started:  # a stream broke mid-way: the status is sent; log it, close the response
                log.error("%s %s failed while streaming", scope["method"], scope["path"], exc_info=e)  # fmt: skip
                return
            await _internal_error(scope["method"], scope["path"], e)(scope, receive, send)


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    return any(p == "*" or host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)  # fmt: skip


def _split_host(value: str) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _HostCheck:
    """400 unless the Host header is a loopback name (localhost, 127.x, [::1]) or an allowed one.

    Starlette's ``TrustedHostMiddleware`` matches names and ``*.domain`` only, not 127.0.0.0/8,
    and answers in plain text; this one answers in OpenAI's error shape.
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = Headers(scope=scope).get("host", "")
            host = _split_host(raw)
            if not (host and (is_loopback(host) or _host_matches(host, self.allowed))):
                extra = f", {', '.join(self.allowed)}" if self.allowed else ""
                msg = f"Host header {raw!r} is not allowed; this server answers localhost, 127.0.0.1, [::1]{extra} (--allowed-hosts adds names)"  # fmt: skip
                await _error(400, msg, param="Host")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _ApiGuard:
    """On ``/v1/*``: 403 for a browser request from another site unless ``--cors-origin`` names it
    (a cross-site form POST needs no preflight), then 401 without the right API key."""

    def __init__(self, app: ASGIApp, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        h = Headers(scope=scope)
        refused = self._foreign_origin(h)
        if refused:
            await _error(403, refused, param="Origin")(scope, receive, send)
            return
        key = self.access.api_key
        if key is not None:
            auth = h.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), key.encode()
            ):
                why = "wrong API key" if auth else "missing API key"
                msg = f"{why}: send the header 'Authorization: Bearer KEY' (the server's --api-key)"
                await _error(401, msg, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _foreign_origin(self, h: Headers) -> str | None:
        """Why a request comes from a site that may not call the API, or None."""
        allowed = self.access.cors_origins
        origin = h.get("origin")
        if origin is not None:
            if "*" in allowed or origin.rstrip("/") in allowed:
                return None
            if urllib.parse.urlsplit(origin).netloc.lower() == h.get("host", "").lower():
                return None  # the page this server serves
            return f"cross-origin request from {origin!r} refused (--cors-origin allows an origin)"
        site = h.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            return f"{site} browser request refused (--cors-origin allows an origin)"
        return None


def _validation_message(e: ValidationError | RequestValidationError, where: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or where
    msg = "unknown field" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
    return f"{where}: field {loc!r}: {msg}"


def _parse(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestError(_validation_message(e, where)) from e


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(
            f"{request.url.path}: Content-Type must be application/json, got {ctype or 'none'!r}",
            status=415,
        )
    body = await request.body()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"{request.url.path}: malformed JSON body ({e})") from e


class _BodyLimit:
    """413 for request bodies over ``max_bytes``: by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _error(413, self._message(int(length)))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:  # a chunked body with no Content-Length
                raise RequestError(self._message(seen), status=413)
            return msg

        await self.app(scope, counted, send)

    def _message(self, n: int) -> str:
        return f"request body of {n} bytes is over the limit of {self.max_bytes} bytes (--max-upload-mb)"


# ---- the app -------------------------------------------------------------------------------------
def create_app(engine: Engine, access: Access | None = None) -> FastAPI:
    """The app around ``engine``; ``access`` (default: anyone, any Host, no cross-origin)."""
    access = access or Access()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="tokunify", lifespan=lifespan)
    app.state.engine = engine
    app.state.access = access
    # added innermost first: the last one added sees a request first
    app.add_middleware(_InternalErrors)
    app.add_middleware(_BodyLimit, max_bytes=engine.limits.max_upload_bytes)
    app.add_middleware(_ApiGuard, access=access)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(access.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["X-Sample-Rate", "X-Hit-Limit", "X-Request-Id", "Retry-After"],
    )
    if access.allowed_hosts is not None:
        app.add_middleware(_HostCheck, allowed=access.allowed_hosts)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, e: RequestError) -> JSONResponse:
        return _error(e.status, str(e), e.param)

    @app.exception_handler(Busy)
    async def _busy(request: Request, e: Busy) -> JSONResponse:
        return _error(429, str(e), headers={"Retry-After": str(e.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(e, request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, f"{request.method} {request.url.path}: {e.detail}")

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:  # an outer middleware's
        return _internal_error(request.method, request.url.path, e)

    def check_model(name: str) -> None:
        if name != engine.model_name:
            raise RequestError(
                f"model {name!r} not found; this server serves {engine.model_name!r}",
                status=404,
                param="model",
            )

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(
            resources.files("tokunify.serve").joinpath("static/index.html").read_text()
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        s, a = engine.batcher.stats, engine.admission
        return {
            "status": "ok",
            "model": engine.model_name,
            "tasks": engine.tasks,
            "speech_output": engine.has_speech_out,
            "api_key_required": access.api_key is not None,
            "batching": {"max_batch": engine.batcher.max_batch, "batches": s.batches, "rows": s.rows,
                         "largest_batch": s.largest_batch, "cancelled": s.cancelled + s.cancelled_before_decode},
            "queue": {"depth": engine.batcher.depth, "in_flight": a.in_flight, "max_queue": a.max_queue},
            "streams": {"active": a.streams, "max_streams": a.max_streams},
            "refused": {"queue_full": a.refused_queue, "streams_full": a.refused_streams},
        }  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": engine.model_name, "object": "model", "created": 0, "owned_by": "tokunify",
                      "tasks": engine.tasks}],
        }  # fmt: skip

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise RequestError(
                f"{request.url.path}: Content-Type must be multipart/form-data, got {ctype or 'none'!r}",
                status=415,
            )
        try:
            form = await request.form(max_files=1, max_fields=32)
        except RequestError:
            raise
        except Exception as e:  # starlette's multipart errors
            raise RequestError(f"{request.url.path}: unreadable multipart body ({e})") from e
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RequestError(
                "field 'file' is required: the audio file to transcribe", param="file"
            )
        fields = {k: v for k, v in form.multi_items() if k != "file" and not k.startswith("timestamp_granularities")}  # fmt: skip
        req = _parse(TranscriptionForm, fields, request.url.path)
        check_model(req.model)
        fmt = req.response_format
        if fmt not in ("json", "text", "verbose_json"):
            raise RequestError(
                f"response_format {fmt!r} is not supported; use json, text or verbose_json",
                param="response_format",
            )
        task = engine.check_task(req.task or "asr", TaskIO("audio", "text"))
        sampling = engine.check_sampling(req.sampling())
        name = upload.filename or "file"
        with engine.admission.hold():
            wav, sr = await engine.cpu(engine.read_audio, await upload.read(), name)  # [1, N]
            out = await engine.run(task, wav, sampling, sr, is_disconnected=request.is_disconnected)  # fmt: skip
        text = out.text or ""
        if fmt == "text":
            return PlainTextResponse(text)
        if fmt == "json":
            return JSONResponse({"text": text})
        duration = wav.shape[1] / sr
        return JSONResponse({
            "task": "transcribe", "language": req.language or "unknown", "duration": duration, "text": text,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text,
                          "tokens": [], "temperature": req.temperature or 0.0, "avg_logprob": 0.0,
                          "compression_ratio": 0.0, "no_speech_prob": 0.0}],
            "hit_limit": out.hit_limit,
        })  # fmt: skip

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        req = _parse(SpeechRequest, await _json_body(request), request.url.path)
        check_model(req.model)
        text = engine.check_text(req.input, "input")
        streamed = req.stream or req.stream_format == "audio"
        fmt = req.response_format or ("wav" if streamed else "mp3")
        if fmt not in audio_out.ENCODERS:
            raise RequestError(
                f"response_format {fmt!r} is not supported; use {', '.join(audio_out.ENCODERS)}",
                param="response_format",
            )
        if req.speed != 1.0:
            raise RequestError(f"speed {req.speed} is not supported (only 1.0)", param="speed")
        if req.stream_format == "sse":
            raise RequestError(
                "stream_format 'sse' is not supported; use 'audio'", param="stream_format"
            )
        task = engine.check_task(req.task or "tts", TaskIO("text", "audio"))
        sampling = engine.check_sampling(req.sampling())
        headers = {"X-Sample-Rate": str(audio_out.rate_of(fmt, engine.gen.sample_rate))}
        if streamed:
            if fmt not in audio_out.STREAMED:
                raise RequestError(
                    f"response_format {fmt!r} cannot be streamed; a stream is {' or '.join(audio_out.STREAMED)}",
                    param="response_format",
                )
            return await _stream_speech(engine, task, text, sampling, fmt, headers)
        with engine.admission.hold():
            out = await engine.run(task, text, sampling, is_disconnected=request.is_disconnected)
            assert out.audio is not None and out.sample_rate is not None
            data = await engine.cpu(audio_out.ENCODERS[fmt], out.audio, out.sample_rate)
        headers["X-Hit-Limit"] = str(out.hit_limit).lower()
        return Response(data, media_type=audio_out.MEDIA_TYPES[fmt], headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        req = _parse(ChatRequest, await _json_body(request), request.url.path)
        check_model(req.model)
        if req.stream and req.task not in (None, "chat"):
            raise RequestError("stream: a streamed reply answers the conversation; leave out 'task'", param="stream")  # fmt: skip
        if req.n != 1:
            raise RequestError(f"n must be 1, got {req.n}", param="n")
        out_mod = "audio" if "audio" in (req.modalities or ["text"]) else "text"
        afmt = (req.audio.format if req.audio else "wav").replace("pcm16", "pcm")
        if out_mod == "audio" and afmt not in audio_out.ENCODERS:
            raise RequestError(
                f"audio.format {afmt!r} is not supported; use {', '.join(audio_out.ENCODERS)}",
                param="audio.format",
            )
        s = req.sampling()
        s.max_new_tokens = s.max_new_tokens or req.max_completion_tokens or req.max_tokens
        s = engine.check_sampling(s)
        if req.task == "chat" or req.stream or (req.task is None and not _one_plain_turn(req.messages)):  # fmt: skip
            return await _chat_reply(engine, req, s, out_mod, afmt)
        users = [i for i, m in enumerate(req.messages) if m.role == "user"]
        if not users:
            raise RequestError("messages: no user message to answer", param="messages")
        # one turn of one modality (or an explicit task): the task routing answers the last user turn
        text, audio = _content(engine, req.messages[users[-1]], users[-1])
        io = TaskIO("audio" if audio is not None else "text", out_mod)
        task = engine.check_task(req.task or engine.default_task(io), io)
        if audio is None:
            text = engine.check_text(text, "messages content")
        elif text.strip():
            raise RequestError(
                f"messages.{users[-1]}: task {task!r} reads audio only and cannot use the text part "
                "beside it; leave out 'task' to answer the message as a conversation",
                param=f"messages.{users[-1]}.content",
            )
        with engine.admission.hold():
            if audio is not None:
                wav, sr = await engine.cpu(engine.read_audio, audio[1], audio[0], audio[0])
                out = await engine.run(task, wav, s, sr, is_disconnected=request.is_disconnected)
            else:
                out = await engine.run(task, text, s, is_disconnected=request.is_disconnected)
            transcript, data = "", None
            if out.audio is not None and out.sample_rate is not None:
                transcript = await _transcript(engine, out.units)
                data = await engine.cpu(audio_out.ENCODERS[afmt], out.audio, out.sample_rate)
        return _completion(engine, task, out.text, data, transcript, out.hit_limit,
                           out.prompt_tokens, out.completion_tokens)  # fmt: skip

    return app


def _completion(
    engine: Engine, task: str, text: str | None, audio: bytes | None, transcript: str,
    hit_limit: bool, prompt_tokens: int, completion_tokens: int,
) -> JSONResponse:  # fmt: skip
    """OpenAI's ``chat.completion`` object for one answer (``audio``: encoded speech, or None)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if audio is not None:
        aid, expires = engine.audio_replies.new()
        engine.audio_replies.keep(aid, transcript, expires)  # a later turn may send back the id
        message["audio"] = {"id": aid, "data": base64.b64encode(audio).decode(),
                            "expires_at": expires, "transcript": transcript}  # fmt: skip
    return JSONResponse({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": engine.model_name,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "length" if hit_limit else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "task": task,
    })  # fmt: skip


def _one_plain_turn(messages: list[ChatMessage]) -> bool:
    """One user message of text only or of audio only: what a single task answers."""
    if len(messages) != 1 or messages[0].role != "user":
        return False
    content = messages[0].content
    if not isinstance(content, list):
        return True
    return (
        len({p.type for p in content}) == 1 and sum(p.type == "input_audio" for p in content) <= 1
    )


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""OpenAI's message roles -> the conversation's (``developer`` is OpenAI's newer ``system``)."""


async def _conversation(engine: Engine, messages: list[ChatMessage]) -> Conversation:
    """The request's messages as a :class:`Conversation`: text parts, ``input_audio`` parts as
    speech of the bundle's stream, an earlier assistant audio reply as its transcript."""
    turns = []
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if m.role not in ROLES:
            raise RequestError(f"{where}: role {m.role!r} is not supported; use system, developer, user or assistant", param=f"{where}.role")  # fmt: skip
        content = m.content
        if content is None and m.role == "assistant" and m.audio is not None:
            content = _earlier_audio(engine, m.audio, f"{where}.audio")
        parts: list[str | SpeechPart] = []
        for at, value in _parts(engine, content, where):
            if isinstance(value, str):
                parts.append(value)
            else:
                data = value
                wav, sr = await engine.cpu(
                    engine.read_audio, data, f"{at}.input_audio", f"{at}.input_audio"
                )
                try:
                    speech = await engine.cpu(engine.chat.encode_audio, [wav[0]], sr)
                except (AudioError, BundleError, ValueError) as e:
                    raise RequestError(f"{at}: {e}", param=at) from e
                parts += speech
        text = "".join(p for p in parts if isinstance(p, str))
        if len(text) > engine.limits.max_input_chars:
            engine.check_text(text, f"{where}.content")
        turns.append(Turn(ROLES[m.role], parts))  # type: ignore[arg-type]
    if not any(t.role == "user" for t in turns):
        raise RequestError("messages: no user message to answer", param="messages")
    return Conversation(turns)


def _earlier_audio(engine: Engine, audio: dict[str, Any], where: str) -> str:
    """An earlier assistant audio reply (``{"id": ...}``, OpenAI's multi-turn audio) as its
    transcript: the one given, else the one this server sent with that id."""
    given = audio.get("transcript")
    if isinstance(given, str):
        return given
    aid = audio.get("id")
    said = engine.audio_replies.transcript(aid) if isinstance(aid, str) else None
    if said is None:
        keep = engine.audio_replies
        raise RequestError(
            f"{where}: no earlier audio reply {aid!r} on this server (it keeps the newest {keep.size} for {keep.ttl_s // 60} minutes); send the reply's transcript as the message content",
            param=where,
        )  # fmt: skip
    return said


async def _chat_reply(
    engine: Engine, req: ChatRequest, s: Sampling, out_mod: str, afmt: str
) -> JSONResponse:
    """The next assistant turn of the whole conversation, through the conversation engine."""
    if out_mod == "audio" and not engine.has_speech_out:
        raise RequestError("modalities: audio needs a vocoder; this bundle has none (tokunify attach-vocoder)", param="modalities")  # fmt: skip
    decoding = s.decoding()
    kind = "speech" if out_mod == "audio" else "text"
    conv = await _conversation(engine, req.messages)
    try:
        engine.chat.prompt(conv, kind)
    except ValueError as e:  # FormatError: the template refuses a turn (e.g. special-token text)
        raise RequestError(f"messages: {e}", param="messages") from e
    if req.stream:
        return _stream_chat(engine, conv, decoding, req.seed or 0, kind)
    with engine.admission.hold():
        r = (await engine.cpu(
            lambda: engine.chat.reply([conv], decoding, req.seed or 0, kind, vocode=kind == "speech")
        ))[0]  # fmt: skip
        data, transcript = None, ""
        if kind == "speech":
            units = [p.ids for p in r.speech if p.stream == engine.chat.speech_stream]
            transcript = r.text or await _transcript(
                engine, np.concatenate(units) if units else None
            )
            audio = r.audio if r.audio is not None else np.zeros(0, np.float32)
            data = await engine.cpu(audio_out.ENCODERS[afmt], audio, engine.gen.sample_rate)
    text = (r.text or None) if kind == "speech" else r.text
    return _completion(
        engine, "chat", text, data, transcript, r.hit_limit, len(r.prompt), len(r.ids)
    )


def _stream_chat(
    engine: Engine, conv: Conversation, decoding: Any, seed: int, kind: str
) -> Response:
    """Server-Sent Events of ``chat.completion.chunk``: the role, then a text delta per new piece
    of text as ids are generated (:meth:`ChatEngine.stream`); for a spoken reply a ``delta.audio``
    per chunk of speech as it is vocoded (base64 PCM16 at the bundle's rate, one audio id, the
    reply's text since the previous chunk as its ``transcript``) and, when the reply has no text,
    a last ``delta.audio`` with no samples whose ``transcript`` is the model's own transcription
    (as in a whole reply); then the finish reason and ``[DONE]``. The stream holds a stream slot
    of the admission until its last event is sent; a client that leaves stops the generation at
    its next step."""
    ticket = engine.admission.admit(stream=True)
    try:
        replies, stop = engine.stream_chat(conv, decoding, seed, kind)
    except BaseException:
        engine.admission.release(ticket)
        raise
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    aid, expires = engine.audio_replies.new()
    said: list[str] = []  # the transcript deltas sent

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": engine.model_name,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def audio(pcm: np.ndarray | None, transcript: str) -> bytes:
        data = base64.b64encode(audio_out.to_pcm16(pcm) if pcm is not None else b"").decode()
        said.append(transcript)
        return event({"audio": {"id": aid, "expires_at": expires, "data": data,
                                "transcript": transcript}})  # fmt: skip

    async def body() -> AsyncIterator[bytes]:
        yield event({"role": "assistant", "content": ""})
        sent, final = "", None
        # next() on a worker thread: the engine blocks between ids and while it vocodes
        while (r := await run_in_threadpool(next, replies, None)) is not None:
            # a byte-level tokenizer's partial character decodes as U+FFFD: wait for the rest
            text = "".join(p for p in r.content if isinstance(p, str)).rstrip("\ufffd")
            grown = text.startswith(sent) and len(text) > len(sent)
            if kind == "text" and grown:
                yield event({"content": text[len(sent) :]})
                sent = text
            elif kind == "speech" and r.chunk is not None and not r.done:
                delta = text[len(sent) :] if grown else ""
                sent += delta
                yield audio(r.chunk, delta)
            final = r
        assert final is not None
        if kind == "speech":
            text = "".join(p for p in final.content if isinstance(p, str))
            yield audio(final.chunk, text[len(sent) :] if text.startswith(sent) else "")
            if not final.text:  # no text parts: what the model hears in its speech, as _chat_reply
                units = [p.ids for p in final.speech if p.stream == engine.chat.speech_stream]
                asr = await _transcript(engine, np.concatenate(units) if units else None)
                yield audio(None, asr)  # after the speech: the transcription does not delay it
            engine.audio_replies.keep(aid, "".join(said), expires)
        elif final.text.strip() != sent.strip():  # a stripped or re-parsed tail
            yield event({"content": final.text[len(sent) :] if final.text.startswith(sent) else ""})
        yield event({}, "length" if final.hit_limit else "stop")
        yield b"data: [DONE]\n\n"

    return _StreamUntilGone(
        lambda: _end_stream(engine, stop, ticket), body(), media_type="text/event-stream",
        headers={"X-Sample-Rate": str(engine.gen.sample_rate), "Cache-Control": "no-cache"},
    )  # fmt: skip


def _content(engine: Engine, msg: ChatMessage, index: int) -> tuple[str, tuple[str, bytes] | None]:
    """A user message -> (its text, its last audio part as (where, bytes), or None)."""
    texts, audio = [], None
    for at, value in _parts(engine, msg.content, f"messages.{index}"):
        if isinstance(value, str):
            texts.append(value)
        else:
            audio = (f"{at}.input_audio", value)
    return " ".join(texts), audio


def _parts(engine: Engine, content: Any, where: str) -> Iterator[tuple[str, str | bytes]]:
    """Each part of a message's ``content`` (a string or a list of parts), checked: its place
    and its text, or its place and the decoded bytes of its ``input_audio``."""
    for j, part in enumerate([content] if isinstance(content, str) else content or []):
        at = f"{where}.content.{j}"
        if isinstance(part, str):
            yield at, part
        elif part.type == "text":
            if part.text is None:
                raise RequestError(f"{at}: a text part needs 'text'", param=at)
            yield at, part.text
        else:
            if part.input_audio is None:
                raise RequestError(f"{at}: an input_audio part needs 'input_audio'", param=at)
            yield at, engine.decode_base64(part.input_audio.data, at)


async def _transcript(engine: Engine, units: np.ndarray | None) -> str:
    """What the model hears in its own speech reply (its ASR task), for OpenAI's ``transcript``."""
    if units is None or units.shape[-1] == 0 or "asr" not in engine.tasks:
        return ""
    out = await engine.run("asr", units, Sampling(), vocode=False)
    return out.text or ""


async def _stream_speech(
    engine: Engine, task: str, text: str, sampling: Sampling, fmt: str, headers: dict[str, str]
) -> Response:
    """Chunks of audio as the LM generates them: a WAV header first (``wav``) or bare PCM.

    The stream holds an admission ticket (a stream slot) from before its prompt is encoded until
    its last chunk is sent or its client leaves."""
    ticket = engine.admission.admit(stream=True)
    try:
        chunks, stop = await engine.stream_tts(task, text, sampling)
    except BaseException:
        engine.admission.release(ticket)
        raise
    try:  # the first chunk surfaces errors (e.g. a codec stream) while a status can still be set
        first = await run_in_threadpool(next, chunks, None)
    except BaseException as e:
        engine.stream_done(stop)
        engine.admission.release(ticket)
        if isinstance(e, ValueError):
            raise RequestError(str(e), param="stream") from e
        raise
    sr = engine.gen.sample_rate

    def body() -> Iterator[bytes]:
        try:
            if fmt == "wav":
                yield audio_out.wav_header(sr)
            if first is not None:
                yield audio_out.to_pcm16(first)
            for c in chunks:
                yield audio_out.to_pcm16(c)
        finally:  # also when the client disconnects and the response drops this generator
            stop.set()

    return _StreamUntilGone(
        lambda: _end_stream(engine, stop, ticket), iterate_in_threadpool(body()),
        media_type=audio_out.MEDIA_TYPES[fmt], headers=headers,
    )  # fmt: skip


def _end_stream(engine: Engine, stop: threading.Event, ticket: Ticket) -> None:
    engine.stream_done(stop)
    engine.admission.release(ticket)


class _StreamUntilGone(StreamingResponse):
    """A streaming response that calls ``on_end`` when it ends, finished or cut off by the client."""

    def __init__(self, on_end: Any, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_end()
