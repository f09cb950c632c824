"""Cost is checked before work: audio headers before decoding, and admission control (429) before
any work, for uploads, base64 chat parts and streamed speech."""

from __future__ import annotations

import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tokunify.serve.engine import RequestError

RSS_GROWTH_MB = 20
TTS = {
    "model": "tiny",
    "input": "the red cat sat on the mat",
    "temperature": 0,
    "response_format": "wav",
}


def _long_silence_flac(minutes: float = 20, sr: int = 48000) -> bytes:
    """``minutes`` of 48 kHz silence as FLAC (about 176 KiB for 20 minutes), written block by block
    so that the test itself never holds the decoded samples."""
    buf = io.BytesIO()
    block = np.zeros(sr * 10, np.int16)
    with sf.SoundFile(buf, "w", sr, 1, "PCM_16", format="FLAC") as f:
        for _ in range(int(minutes * 6)):
            f.write(block)
    return buf.getvalue()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _memory_growth_mb(send) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    """``send()`` against the in-process server -> (its response, how far this process's resident
    memory rose meanwhile: the peak (VmHWM, reset through clear_refs) where Linux allows, else RSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        field = "VmHWM"
    except OSError:
        field = "VmRSS"
    before = _status_kb("VmRSS")
    r = send()
    return r, (_status_kb(field) - before) / 1024


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="memory is read from /proc (Linux)")  # fmt: skip


@needs_proc
def test_a_long_flac_upload_is_refused_from_its_header(server):
    flac = _long_silence_flac()
    assert len(flac) < 200 * 1024  # small on the wire, 230 MB as float32
    r, grew = _memory_growth_mb(lambda: httpx.post(
        f"{server.url}/v1/audio/transcriptions", files={"file": ("long.flac", flac, "audio/flac")},
        data={"model": "tiny"}, timeout=60))  # fmt: skip
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "file"
    assert err["message"] == "long.flac: 1200.0 s of audio is over the limit of 15 s"
    assert grew < RSS_GROWTH_MB, grew


@needs_proc
def test_a_long_base64_chat_part_is_refused_from_its_header(server):
    b64 = base64.b64encode(_long_silence_flac()).decode()
    part = {"type": "input_audio", "input_audio": {"data": b64, "format": "flac"}}
    body = {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}  # fmt: skip
    r, grew = _memory_growth_mb(
        lambda: httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    )
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "messages.0.content.1.input_audio"
    assert "1200.0 s of audio is over the limit of 15 s" in err["message"]
    assert grew < RSS_GROWTH_MB, grew


def test_too_many_channels_and_undecodable_audio_are_named_without_a_python_repr(server):
    buf = io.BytesIO()
    sf.write(buf, np.zeros((800, 9), np.float32), 8000, format="WAV")
    wide = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("wide.wav", buf.getvalue())},
                      data={"model": "tiny"}, timeout=60)  # fmt: skip
    assert wide.status_code == 400
    assert wide.json()["error"]["message"] == "wide.wav (WAV): 9 channels; the limit is 8"
    junk = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("junk.ogg", b"OggS" + b"\x01" * 900)},
                      data={"model": "tiny"}, timeout=60)  # fmt: skip
    msg = junk.json()["error"]["message"]
    assert junk.status_code == 400 and msg.startswith("junk.ogg: undecodable audio (")
    assert "0x" not in msg and "<_io" not in msg and "BytesIO" not in msg, msg


def test_a_base64_part_larger_than_the_upload_limit_is_refused_before_decoding(server):
    engine = server.engine
    with pytest.raises(RequestError, match="over the limit of 524288 bytes") as e:
        engine.decode_base64("A" * 800_000, "messages.0.content.0")
    assert e.value.status == 413


def _flood(url: str, n: int, body: dict) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120), range(n)))  # fmt: skip


def test_a_flood_beyond_max_queue_gets_429_with_retry_after_and_every_accepted_request_is_answered(serve_with):  # fmt: skip
    with serve_with(max_queue=3, max_batch=2) as s:
        body = {**TTS, "max_new_tokens": 300, "min_new_tokens": 300}
        rs = _flood(s.url, 4 * 3, body)
        statuses = [r.status_code for r in rs]
        assert not [c for c in statuses if c not in (200, 429)], statuses  # no 5xx, nothing else
        busy = [r for r in rs if r.status_code == 429]
        assert busy and all(int(r.headers["retry-after"]) >= 1 for r in busy)
        err = busy[0].json()["error"]
        assert err["type"] == "rate_limit_error" and "--max-queue 3" in err["message"]
        done = [r for r in rs if r.status_code == 200]
        assert len(done) >= 3 and all(
            r.content[:4] == b"RIFF" and len(r.content) > 44 for r in done
        )
        h = httpx.get(f"{s.url}/health").json()
        assert h["refused"]["queue_full"] == len(busy)
        assert h["queue"] == {"depth": 0, "in_flight": 0, "max_queue": 3}
        assert httpx.post(f"{s.url}/v1/audio/speech", json={**TTS, "max_new_tokens": 5}, timeout=60).status_code == 200  # fmt: skip


def _wait_for(cond, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, what
        time.sleep(0.05)


LONG_STREAM = {**TTS, "stream": True, "max_new_tokens": 3000, "min_new_tokens": 3000}


def test_max_streams_holds_with_streaming_clients(serve_with):
    with serve_with(max_queue=4, max_streams=1) as s:
        health = lambda: httpx.get(f"{s.url}/health").json()  # noqa: E731
        with httpx.stream("POST", f"{s.url}/v1/audio/speech", json=LONG_STREAM, timeout=60) as a:
            assert a.status_code == 200
            a_chunks = a.iter_raw()  # kept: a dropped iterator closes the connection
            next(a_chunks)
            assert health()["streams"] == {"active": 1, "max_streams": 1}
            b = httpx.post(f"{s.url}/v1/audio/speech", json=LONG_STREAM, timeout=60)
            assert b.status_code == 429 and int(b.headers["retry-after"]) >= 1
            assert "--max-streams 1" in b.json()["error"]["message"]
            # a batched request still has room in --max-queue
            ok = httpx.post(
                f"{s.url}/v1/audio/speech", json={**TTS, "max_new_tokens": 5}, timeout=60
            )
            assert ok.status_code == 200
        _wait_for(lambda: health()["streams"]["active"] == 0, "the stream slot came back")
        assert health()["refused"]["streams_full"] == 1
        with httpx.stream("POST", f"{s.url}/v1/audio/speech", json={**LONG_STREAM, "max_new_tokens": 20, "min_new_tokens": 0}, timeout=60) as c:  # fmt: skip
            assert c.status_code == 200 and b"".join(c.iter_raw())[:4] == b"RIFF"


def test_streams_share_the_queue_budget(serve_with):
    with serve_with(max_queue=2, max_streams=2) as s:
        with (
            httpx.stream("POST", f"{s.url}/v1/audio/speech", json=LONG_STREAM, timeout=60) as a,
            httpx.stream("POST", f"{s.url}/v1/audio/speech", json=LONG_STREAM, timeout=60) as b,
        ):
            assert a.status_code == b.status_code == 200
            a_chunks, b_chunks = a.iter_raw(), b.iter_raw()  # kept: a dropped one hangs up
            next(a_chunks), next(b_chunks)
            assert httpx.get(f"{s.url}/health").json()["streams"]["active"] == 2
            full = httpx.post(
                f"{s.url}/v1/audio/speech", json={**TTS, "max_new_tokens": 5}, timeout=60
            )
            assert full.status_code == 429 and "--max-queue 2" in full.json()["error"]["message"]
        _wait_for(lambda: httpx.get(f"{s.url}/health").json()["queue"]["in_flight"] == 0, "slots came back")  # fmt: skip
        ok = httpx.post(f"{s.url}/v1/audio/speech", json={**TTS, "max_new_tokens": 5}, timeout=60)
        assert ok.status_code == 200
