"""`/v1/audio/speech` and chat audio in OpenAI's formats (mp3, opus, flac, wav, pcm), through the
official client; streamed speech runs the task the request names."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from tokunify.serve import audio_out

openai = pytest.importorskip("openai", reason="the openai client is in tokunify's dev extra")
SAY = {"max_new_tokens": 40, "min_new_tokens": 8, "temperature": 0}
CONTAINERS = {"mp3": "MP3", "opus": "OGG", "flac": "FLAC", "wav": "WAV"}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=120
    )


def test_speech_with_the_clients_defaults_is_mp3(client, server):
    r = client.audio.speech.create(model="tiny", voice="alloy", input="hi", extra_body=SAY)
    assert r.response.headers["content-type"] == "audio/mpeg"
    info = sf.info(io.BytesIO(r.content))
    assert info.format == "MP3" and info.frames > 0
    assert int(r.response.headers["x-sample-rate"]) == info.samplerate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav", "pcm"])
def test_each_format_decodes_to_the_same_length(client, server, fmt):
    sr = server.engine.gen.sample_rate
    ref = client.audio.speech.create(model="tiny", voice="alloy", input="we saw five birds",
                                     response_format="wav", extra_body=SAY)  # fmt: skip
    n = sf.info(io.BytesIO(ref.content)).frames
    r = client.audio.speech.create(model="tiny", voice="alloy", input="we saw five birds",
                                   response_format=fmt, extra_body=SAY)  # fmt: skip
    rate = int(r.response.headers["x-sample-rate"])
    assert r.response.headers["content-type"] == audio_out.MEDIA_TYPES[fmt]
    if fmt == "pcm":  # raw 16-bit samples at the bundle's own rate
        assert rate == sr and len(r.content) == 2 * n
        return
    info = sf.info(io.BytesIO(r.content))
    assert info.format == CONTAINERS[fmt] and info.samplerate == rate
    if fmt == "opus":
        assert info.subtype == "OPUS" and rate in audio_out.OPUS_RATES and rate >= min(sr, 48000)
    # lossy codecs pad by a frame or so; the duration is the waveform's
    assert info.duration == pytest.approx(n / sr, abs=0.08)


def test_opus_resamples_rates_it_cannot_code():
    wav = np.sin(np.linspace(0, 200, 22050)).astype(np.float32) * 0.5
    data = audio_out.ENCODERS["opus"](wav, 22050)
    info = sf.info(io.BytesIO(data))
    assert info.samplerate == audio_out.rate_of("opus", 22050) == 24000
    assert info.duration == pytest.approx(1.0, abs=0.05)


def test_chat_audio_in_each_format(client):
    for fmt in ("mp3", "flac", "opus"):
        r = client.chat.completions.create(
            model="tiny", modalities=["text", "audio"], audio={"voice": "alloy", "format": fmt},
            messages=[{"role": "user", "content": "read this aloud for me"}], max_tokens=30,
            extra_body={"min_new_tokens": 8, "temperature": 0},
        )  # fmt: skip
        info = sf.info(io.BytesIO(base64.b64decode(r.choices[0].message.audio.data)))
        assert info.format == CONTAINERS[fmt] and info.frames > 0


def test_a_stream_is_wav_or_pcm_and_runs_the_named_task(client):
    with pytest.raises(openai.BadRequestError, match="response_format 'mp3' cannot be streamed"):
        client.audio.speech.create(
            model="tiny",
            voice="alloy",
            input="hi",
            response_format="mp3",
            extra_body={"stream": True},
        )
    # a stream without a format is WAV (a header, then PCM as it is generated)
    with client.audio.speech.with_streaming_response.create(
        model="tiny", voice="alloy", input="hi", extra_body={"stream": True, **SAY}
    ) as s:
        data = b"".join(s.iter_bytes())
        assert s.headers["content-type"] == "audio/wav" and data[:4] == b"RIFF"
    # a task the bundle lacks is refused, never replaced by the bundle's tts
    with pytest.raises(openai.BadRequestError, match="unknown task 'instruct_tts'"):
        client.audio.speech.create(model="tiny", voice="alloy", input="hi", response_format="pcm",
                                   extra_body={"stream": True, "task": "instruct_tts"})  # fmt: skip
