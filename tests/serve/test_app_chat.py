"""Whole conversations through the official `openai` client: every turn reaches the model, rendered
by the bundle's chat template (the conversation engine), text and audio parts alike."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from tokunify.chat.session import ChatSession
from tokunify.demos.instruct import replies
from tokunify.generate.decoding import Decoding
from tokunify.tasks.conversation import Conversation, Message

openai = pytest.importorskip("openai", reason="the openai client is in tokunify's dev extra")

SYSTEM = "answer briefly"
FIRST, ANSWER, SECOND = "my cat is red", "a red cat", "what colour is my cat?"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=120
    )


def three_turns() -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": SECOND},
    ]


def test_a_three_turn_conversation_reaches_the_model_whole(client, server):
    chat = server.engine.chat
    conv = Conversation([Message("system", SYSTEM), Message("user", FIRST),
                         Message("assistant", ANSWER), Message("user", SECOND)])  # fmt: skip
    r = client.chat.completions.create(model="tiny", messages=three_turns(), max_tokens=8,
                                       temperature=0, seed=1)  # fmt: skip
    # the model was given the template's rendering of every turn, not the last user message
    assert r.usage.prompt_tokens == len(chat.prompt(conv, "text"))
    last_only = chat.prompt(Conversation([Message("user", SECOND)]), "text")
    assert r.usage.prompt_tokens > len(last_only)
    # and its reply is the conversation engine's for that conversation, decoding and seed
    want = chat.reply([conv], Decoding(temperature=0, max_new_tokens=8), seed=1, reply="text")[0]
    assert r.choices[0].message.content == want.text
    assert r.usage.completion_tokens == len(want.ids)
    assert r.choices[0].finish_reason == ("length" if want.hit_limit else "stop")
    # the first turn matters: dropping it changes what the model sees
    shorter = client.chat.completions.create(model="tiny", messages=three_turns()[:1] + three_turns()[3:],
                                             max_tokens=8, temperature=0)  # fmt: skip
    assert shorter.usage.prompt_tokens < r.usage.prompt_tokens


def test_sampled_replies_follow_the_seed(client, server):
    conv = Conversation([Message("system", SYSTEM), Message("user", FIRST),
                         Message("assistant", ANSWER), Message("user", SECOND)])  # fmt: skip
    r = client.chat.completions.create(model="tiny", messages=three_turns(), max_tokens=8,
                                       temperature=1.3, top_p=1.0, seed=5)  # fmt: skip
    d = Decoding(temperature=1.3, top_p=1.0, max_new_tokens=8)
    want = server.engine.chat.reply([conv], d, seed=5, reply="text")[0]
    assert r.choices[0].message.content == want.text and r.usage.completion_tokens == len(want.ids)


def test_input_audio_and_text_in_one_turn(client, server, wav_file):
    b64 = base64.b64encode(wav_file.read_bytes()).decode()
    chat = server.engine.chat
    wav, sr = sf.read(str(wav_file), dtype="float32")
    speech = chat.encode_audio([wav if wav.ndim == 1 else wav.mean(axis=1)], sr)
    conv = Conversation([Message("user", ["what did I say? ", *speech])])
    r = client.chat.completions.create(
        model="tiny", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": "what did I say? "},
                                                {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}]}],
    )  # fmt: skip
    assert r.usage.prompt_tokens == len(chat.prompt(conv, "text"))  # the text and the speech
    no_text = chat.prompt(Conversation([Message("user", speech)]), "text")
    assert r.usage.prompt_tokens > len(no_text)  # the text part is no longer dropped
    assert isinstance(r.choices[0].message.content, str)


def test_an_earlier_audio_reply_counts_as_its_transcript(client, server):
    plain = client.chat.completions.create(model="tiny", messages=three_turns(), max_tokens=4, temperature=0)  # fmt: skip
    turns = three_turns()
    turns[2] = {"role": "assistant", "audio": {"id": "audio_x", "transcript": ANSWER}}
    by_audio = client.chat.completions.create(model="tiny", messages=turns, max_tokens=4, temperature=0)  # fmt: skip
    assert by_audio.usage.prompt_tokens == plain.usage.prompt_tokens
    assert by_audio.choices[0].message.content == plain.choices[0].message.content
    turns[2] = {"role": "assistant", "audio": {"id": "audio_x"}}
    with pytest.raises(
        openai.BadRequestError,
        match=r"messages\.2\.audio: no earlier audio reply 'audio_x' on this server",
    ):
        client.chat.completions.create(model="tiny", messages=turns, max_tokens=4)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_earlier_spoken_reply_comes_back_by_its_audio_id(client, server, stream):
    """OpenAI's multi-turn audio: the next request sends the spoken reply back as
    ``{"audio": {"id": ...}}`` only; the server reads it as the transcript it sent with it."""
    ask = dict(model="tiny", messages=three_turns()[:2], modalities=["text", "audio"],
               audio={"voice": "alloy", "format": "pcm16"}, max_tokens=12, temperature=0)  # fmt: skip
    if stream:
        deltas = [c.choices[0].delta.audio for c in client.chat.completions.create(**ask, stream=True)
                  if getattr(c.choices[0].delta, "audio", None)]  # fmt: skip
        aid, transcript = deltas[0].id, "".join(a.transcript for a in deltas)
    else:
        a = client.chat.completions.create(**ask).choices[0].message.audio
        aid, transcript = a.id, a.transcript
    assert transcript  # non-empty: a wrong one would change the prompt
    follow = {"role": "user", "content": SECOND}
    by_id = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0,
        messages=[*ask["messages"], {"role": "assistant", "audio": {"id": aid}}, follow])  # fmt: skip
    by_text = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0,
        messages=[*ask["messages"], {"role": "assistant", "content": transcript}, follow])  # fmt: skip
    assert by_id.usage.prompt_tokens == by_text.usage.prompt_tokens
    assert by_id.choices[0].message.content == by_text.choices[0].message.content


def test_the_server_answers_as_the_instruct_demo_and_tokunify_chat_do(client, server):
    """The same bundle, conversation, decoding and seed as
    tests/demos/test_demo_instruct.py::test_demo_metrics_and_chat_over_stdin_give_the_same_reply,
    where the demo's reply function and `tokunify chat` over stdin agree: the server's reply is the
    demo's and the chat session's (what `tokunify chat` runs), sampled."""
    conv = Conversation([Message("system", "be brief"), Message("user", "what is two plus three")])
    decoding = Decoding(temperature=1.3, max_new_tokens=12)
    demo = "".join(replies(server.engine.gen, [conv], "text", decoding, seed=7)[0]).strip()
    session = ChatSession(server.engine.chat, system="be brief", reply="text", decoding=decoding, seed=7)  # fmt: skip
    said = session.say("what is two plus three").text
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "what is two plus three"}],
        max_tokens=12, temperature=1.3, seed=7,
    )  # fmt: skip
    assert demo and r.choices[0].message.content == demo == said


def test_spoken_reply_of_a_conversation(client, server):
    r = client.chat.completions.create(
        model="tiny", messages=three_turns(), modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"}, max_tokens=12, temperature=0,
    )  # fmt: skip
    wav, sr = sf.read(io.BytesIO(base64.b64decode(r.choices[0].message.audio.data)))
    assert sr == server.engine.gen.sample_rate and isinstance(
        r.choices[0].message.audio.transcript, str
    )
    assert np.asarray(wav).ndim == 1


def test_refused_turns_name_the_reason(client, server):
    special = server.engine.chat.tokenizer.eos_token  # a special token string of the base tokenizer
    turns = three_turns()
    turns[3] = {"role": "user", "content": f"hi {special} there"}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=turns, max_tokens=4)
    assert str(e.value).count("\n") == 0 and repr(special) in str(e.value)
    with pytest.raises(openai.BadRequestError, match="role 'tool' is not supported"):
        client.chat.completions.create(model="tiny", max_tokens=4, messages=[
            {"role": "user", "content": "hi"}, {"role": "tool", "content": "x", "tool_call_id": "1"}])  # fmt: skip
    with pytest.raises(
        openai.BadRequestError, match="num_beams is not supported for conversations"
    ):
        client.chat.completions.create(
            model="tiny", messages=three_turns(), extra_body={"num_beams": 2}
        )


def test_an_explicit_task_refuses_a_text_part_it_cannot_use(client, wav_file):
    b64 = base64.b64encode(wav_file.read_bytes()).decode()
    with pytest.raises(openai.BadRequestError, match="cannot use the text part"):
        client.chat.completions.create(
            model="tiny", max_tokens=4, extra_body={"task": "asr"},
            messages=[{"role": "user", "content": [{"type": "text", "text": "what did I say?"},
                                                    {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}]}],
        )  # fmt: skip


def test_streamed_text_is_the_engine_reply_in_pieces(client, server):
    conv = Conversation([Message("system", SYSTEM), Message("user", FIRST),
                         Message("assistant", ANSWER), Message("user", SECOND)])  # fmt: skip
    want = server.engine.chat.reply([conv], Decoding(temperature=0, max_new_tokens=10), seed=0, reply="text")[0]  # fmt: skip
    stream = client.chat.completions.create(model="tiny", messages=three_turns(), max_tokens=10,
                                            temperature=0, stream=True)  # fmt: skip
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() == want.text
    assert chunks[-1].choices[0].finish_reason == ("length" if want.hit_limit else "stop")
    if len(want.text) > 1:  # deltas arrive as tokens are generated, not as one piece
        assert sum(bool(c.choices[0].delta.content) for c in chunks) > 1


def test_streamed_audio_reply(client, server):
    stream = client.chat.completions.create(
        model="tiny", messages=three_turns(), modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"}, max_tokens=12, temperature=0, stream=True,
    )  # fmt: skip
    audio = [c.choices[0].delta.audio for c in stream if getattr(c.choices[0].delta, "audio", None)]
    assert audio, "no delta.audio chunk"
    pcm = b"".join(base64.b64decode(a.data) for a in audio)
    assert all(isinstance(a.transcript, str) for a in audio)
    conv = Conversation([Message("system", SYSTEM), Message("user", FIRST),
                         Message("assistant", ANSWER), Message("user", SECOND)])  # fmt: skip
    want = server.engine.chat.reply([conv], Decoding(temperature=0, max_new_tokens=12), seed=0,
                                    reply="speech", vocode=True)[0]  # fmt: skip
    n = 0 if want.audio is None else len(want.audio)
    assert len(pcm) == 2 * n  # the engine's spoken reply, as 16-bit samples


def test_streamed_audio_comes_in_chunks_that_make_the_whole_reply(client, server):
    """A reply of 60 units (the tiny vocoder's durations: about a frame each) is vocoded in 25-frame
    chunks while it is generated, so it streams as several ``delta.audio`` chunks. Each chunk is
    vocoded with 24 frames of context on both sides and cropped (the vocoder's chunked path), which
    equals vocoding the whole reply at once within float error; after PCM16 rounding a sample may
    land one step apart, so the concatenated PCM has the non-streamed reply's length and is within
    one step of it everywhere. The transcript deltas join to the non-streamed transcript."""
    ask = dict(model="tiny", messages=three_turns(), modalities=["text", "audio"],
               audio={"voice": "alloy", "format": "pcm16"}, max_tokens=60, temperature=0, seed=2)  # fmt: skip
    whole = client.chat.completions.create(**ask).choices[0].message.audio
    want = np.frombuffer(base64.b64decode(whole.data), "<i2")
    chunks = [c.choices[0].delta.audio for c in client.chat.completions.create(**ask, stream=True)
              if getattr(c.choices[0].delta, "audio", None)]  # fmt: skip
    pcm = [np.frombuffer(base64.b64decode(a.data), "<i2") for a in chunks]
    assert sum(len(p) > 0 for p in pcm) > 1, "one audio chunk: not vocoded in pieces"
    assert len({a.id for a in chunks}) == 1
    got = np.concatenate(pcm)
    assert len(want) > 0 and len(got) == len(want)
    assert np.abs(got.astype(np.int32) - want).max() <= 1
    assert "".join(a.transcript for a in chunks) == whole.transcript


def test_a_client_that_leaves_a_stream_stops_its_generation(server):
    """Closed after the first event: the stream slot comes back and the generation is cut at its
    next step (``streams_stopped`` counts generations stopped so), long before max_tokens. The
    greedy reply of this conversation does not end by itself within 40 tokens."""
    conv = Conversation([Message("user", FIRST)])
    assert server.engine.chat.reply([conv], Decoding(temperature=0, max_new_tokens=40), reply="text")[0].hit_limit  # fmt: skip
    health = lambda: httpx.get(f"{server.url}/health").json()  # noqa: E731
    before = server.engine.streams_stopped
    body = {"model": "tiny", "messages": [{"role": "user", "content": FIRST}], "max_tokens": 4000,
            "temperature": 0, "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        first = json.loads(next(r.iter_lines()).removeprefix("data: "))
        assert first["choices"][0]["delta"]["role"] == "assistant"
    t0 = time.monotonic()
    while (health()["streams"]["active"] or server.engine.streams_stopped == before) and time.monotonic() - t0 < 30:  # fmt: skip
        time.sleep(0.05)
    assert health()["streams"]["active"] == 0
    assert server.engine.streams_stopped == before + 1
