"""The HTTP API over loopback: every endpoint's shape, formats, streaming and the task field."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

TTS = {"model": "tiny", "input": "the red cat sat on the mat", "max_new_tokens": 60, "min_new_tokens": 8}  # fmt: skip


def test_health_and_models(server):
    h = httpx.get(f"{server.url}/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny" and h["speech_output"] is True
    assert {"asr", "tts", "s2s", "text"} <= set(h["tasks"])
    m = httpx.get(f"{server.url}/v1/models").json()
    assert m["object"] == "list" and [d["id"] for d in m["data"]] == ["tiny"]


def test_speech_wav_and_pcm_agree(server):
    wav = httpx.post(f"{server.url}/v1/audio/speech", json={**TTS, "temperature": 0, "response_format": "wav"}, timeout=60)  # fmt: skip
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert sr == server.engine.gen.sample_rate == int(wav.headers["x-sample-rate"])
    assert audio.ndim == 1 and len(audio) > 0
    pcm = httpx.post(f"{server.url}/v1/audio/speech", json={**TTS, "temperature": 0, "response_format": "pcm"}, timeout=60)  # fmt: skip
    assert pcm.status_code == 200 and pcm.headers["content-type"] == "audio/pcm"
    np.testing.assert_array_equal(np.frombuffer(pcm.content, "<i2"), audio)  # greedy: same audio


def test_speech_streams_chunks_that_make_the_whole(server):
    body = {**TTS, "temperature": 0, "stream": True}
    chunks = []
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200
        chunks = list(r.iter_raw())
    data = b"".join(chunks)
    assert data[:4] == b"RIFF" and len(chunks) > 1
    streamed = np.frombuffer(data[44:], "<i2")
    whole, _ = sf.read(io.BytesIO(httpx.post(f"{server.url}/v1/audio/speech", json={**TTS, "temperature": 0, "response_format": "wav"}, timeout=60).content), dtype="int16")  # fmt: skip
    assert abs(len(streamed) - len(whole)) <= 1
    assert np.abs(streamed[: len(whole)].astype(int) - whole[: len(streamed)]).max() <= 4


def test_transcription_formats(server, wav_file):
    data = wav_file.read_bytes()
    res = {}
    for fmt in ("json", "text", "verbose_json"):
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")},
                       data={"model": "tiny", "response_format": fmt, "max_new_tokens": "12"}, timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        res[fmt] = r
    text = res["json"].json()["text"]
    assert isinstance(text, str) and res["text"].text == text  # asr preset is greedy
    v = res["verbose_json"].json()
    assert v["text"] == text and abs(v["duration"] - sf.info(str(wav_file)).duration) < 1e-3


def test_transcription_any_rate_and_channels(server, wav_file):
    """A stereo 44.1 kHz FLAC of the same speech transcribes like the mono 22.05 kHz WAV."""
    import soxr

    wav, sr = sf.read(str(wav_file), dtype="float32")
    up = soxr.resample(wav, sr, 44100)
    buf = io.BytesIO()
    sf.write(buf, np.stack([up, up], 1), 44100, format="FLAC")
    texts = []
    for name, data in [("a.wav", wav_file.read_bytes()), ("b.flac", buf.getvalue())]:
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": (name, data)},
                       data={"model": "tiny", "max_new_tokens": "12"}, timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        texts.append(r.json()["text"])
    assert isinstance(texts[1], str)


def test_chat_routes_by_modality_and_task_field(server, wav_file):
    b64 = base64.b64encode(wav_file.read_bytes()).decode()
    audio_msg = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}]}]  # fmt: skip
    url = f"{server.url}/v1/chat/completions"
    asr = httpx.post(url, json={"model": "tiny", "messages": audio_msg, "max_tokens": 12}, timeout=60).json()  # fmt: skip
    assert asr["task"] == "asr" and asr["choices"][0]["message"].get("audio") is None
    s2s = httpx.post(url, json={"model": "tiny", "messages": audio_msg, "modalities": ["text", "audio"],
                                "audio": {"format": "wav"}, "max_tokens": 40, "min_new_tokens": 4, "temperature": 0}, timeout=60).json()  # fmt: skip
    assert s2s["task"] == "s2s"
    a = s2s["choices"][0]["message"]["audio"]
    wav, _ = sf.read(io.BytesIO(base64.b64decode(a["data"])))
    assert len(wav) > 0 and isinstance(a["transcript"], str)
    text = httpx.post(url, json={"model": "tiny", "messages": [{"role": "user", "content": "the cat"}], "max_tokens": 8}, timeout=60).json()  # fmt: skip
    assert text["task"] == "text" and isinstance(text["choices"][0]["message"]["content"], str)
    tts = httpx.post(url, json={"model": "tiny", "messages": [{"role": "user", "content": "the cat"}], "task": "tts",
                                "modalities": ["audio"], "max_tokens": 30}, timeout=60).json()  # fmt: skip
    assert tts["task"] == "tts" and "audio" in tts["choices"][0]["message"]


def test_page_is_served(server):
    r = httpx.get(f"{server.url}/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for anchor in (
        'id="asr-file"',
        'id="tts-go"',
        'id="chat-log"',
        "MediaRecorder",
        "/v1/audio/speech",
    ):
        assert anchor in r.text


def test_client_that_disconnects_frees_its_row(server):
    """A long request whose client gives up is cancelled: its batch stops, the next one is served."""
    stats = server.engine.batcher.stats
    before = stats.cancelled
    long = {**TTS, "temperature": 0, "max_new_tokens": 3000, "min_new_tokens": 3000}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/v1/audio/speech", json=long, timeout=1.0)
    r = httpx.post(f"{server.url}/v1/audio/speech", json={**TTS, "temperature": 0, "max_new_tokens": 5, "min_new_tokens": 0}, timeout=60)  # fmt: skip
    assert r.status_code == 200
    assert stats.cancelled == before + 1
    assert httpx.get(f"{server.url}/health").json()["batching"]["cancelled"] >= 1


def test_bundle_without_vocoder_serves_text_and_refuses_speech(no_vocoder_server, wav_file):
    url = no_vocoder_server.url
    assert httpx.get(f"{url}/health").json()["speech_output"] is False
    r = httpx.post(f"{url}/v1/audio/speech", json={"model": "nv", "input": "hello"}, timeout=60)
    assert r.status_code == 400 and "no vocoder" in r.json()["error"]["message"]
    t = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav_file.read_bytes())},
                   data={"model": "nv", "max_new_tokens": "8"}, timeout=60)  # fmt: skip
    assert t.status_code == 200 and isinstance(t.json()["text"], str)


def test_streaming_client_that_disconnects_stops_its_generation(server):
    before = server.engine.streams_stopped
    body = {**TTS, "temperature": 0, "stream": True, "max_new_tokens": 3000, "min_new_tokens": 3000}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # the header and the first chunk have come; then hang up
    t0 = time.monotonic()
    while server.engine.streams_stopped == before and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert server.engine.streams_stopped == before + 1
