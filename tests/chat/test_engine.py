"""The conversation engine: a reply depends on (bundle, conversation, decoding, seed) only, alone
or in any batch, greedy or sampled; refused conversations; the per-row sampler; Decoding."""

from __future__ import annotations

import time
from itertools import pairwise

import numpy as np
import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tokunify.chat.engine import ChatEngine
from tokunify.chat.session import ChatSession
from tokunify.generate.decoding import Decoding, SeededSampler
from tokunify.tasks import FormatError, TTSFormat
from tokunify.tasks.conversation import Conversation, Message, SpeechPart

HOT = Decoding(temperature=1.5, top_p=1.0, max_new_tokens=14)  # sample widely


@pytest.fixture(scope="module")
def engine(voc_bundle) -> ChatEngine:
    return ChatEngine(voc_bundle)


def conversations() -> list[Conversation]:
    """Prompts of different lengths (so the batch pads them), text and speech turns."""
    units = SpeechPart("units", np.array([1, 5, 5, 9, 2, 7]))
    return [
        Conversation([Message("user", "hello there")]),
        Conversation([Message("system", "be brief"), Message("user", ["say it: ", units])]),
        Conversation(
            [
                Message("user", "what is two plus three"),
                Message("assistant", "five"),
                Message("user", "and a big dog ran to the green house?"),
            ]
        ),
    ]


@pytest.mark.parametrize("reply", ["any", "text", "speech"])
@pytest.mark.parametrize("decoding", [Decoding.greedy_with(14), HOT], ids=["greedy", "sampled"])
def test_batch_and_single_give_the_same_reply(engine, decoding, reply):
    convs = conversations()
    batch = engine.reply(convs, decoding, seed=3, reply=reply)
    for c, r in zip(convs, batch, strict=True):
        one = engine.reply([c], decoding, seed=3, reply=reply)[0]
        assert one.ids == r.ids and one.content == r.content
        assert one.prompt.tolist() == r.prompt.tolist()
    # reversed, and batched two by two: a row's reply does not depend on its neighbours
    again = engine.reply(convs[::-1], decoding, seed=3, reply=reply, batch_size=2)[::-1]
    assert [r.ids for r in again] == [r.ids for r in batch]


def test_per_row_seeds_and_sampling_varies_with_the_seed(engine):
    conv = conversations()[0]
    draws = engine.reply([conv] * 6, HOT, seed=list(range(6)))
    assert len({tuple(r.ids) for r in draws}) > 1  # the seed matters when sampling...
    for s, r in enumerate(draws):  # ...and each row is its seed's reply alone
        assert engine.reply([conv], HOT, seed=s)[0].ids == r.ids
    greedy = engine.reply([conv] * 3, Decoding.greedy_with(14), seed=[0, 1, 2])
    assert len({tuple(r.ids) for r in greedy}) == 1  # greedy ignores the seed
    with pytest.raises(ValueError, match="2 conversations but 3 seeds"):
        engine.reply([conv, conv], HOT, seed=[1, 2, 3])


def test_reply_stops_parses_and_vocodes(engine):
    v = engine.vocab
    (r,) = engine.reply(conversations()[:1], Decoding(max_new_tokens=30), reply="speech", vocode=True)  # fmt: skip
    stops = engine.template.stop_ids(v, engine.tokenizer)
    assert r.hit_limit or (r.ids[-1] in stops and not set(r.ids[:-1]) & set(stops))
    assert r.speech and r.text == "" and r.audio is not None and r.audio.size > 0
    assert r.sample_rate == engine.gen.sample_rate
    head = engine.template.prompt(v, engine.tokenizer, conversations()[0])
    assert r.prompt.tolist() == head.tolist()  # the default template has no forced prefix


def test_a_refused_conversation_refuses_the_whole_call(engine):
    bad = Conversation([Message("user", "hello <|eos|> there")])
    with pytest.raises(FormatError, match="'<\\|eos\\|>'"):
        engine.reply([conversations()[0], bad], Decoding.greedy_with(4))


def test_a_refused_turn_leaves_the_session_unchanged(voc_bundle, tmp_path):
    chat = ChatSession(voc_bundle, system="be brief", decoding=Decoding.greedy_with(8))
    first = chat.say("hello there")
    before = [(m.role, list(m.content)) for m in chat.conversation.messages]
    with pytest.raises(FormatError, match="'<\\|eos\\|>'"):
        chat.say("ignore that <|eos|> and this")
    with pytest.raises(FileNotFoundError):
        chat.say(str(tmp_path / "missing.wav"))
    assert [(m.role, list(m.content)) for m in chat.conversation.messages] == before
    second = chat.say("what is two plus three")  # the next valid turn works
    roles = [m.role for m in chat.conversation.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert len(chat.prompts) == 2 and second.prompt.tolist() == chat.prompts[1].tolist()
    # the session's reply is the engine's reply to the same history with the same seed
    msgs = chat.conversation.messages
    for reply, upto in ((first, 2), (second, 4)):
        again = chat.engine.reply([Conversation(msgs[:upto])], chat.decoding, chat.seed)[0]
        assert again.ids == reply.ids


def test_seeded_sampler_rows_are_independent():
    """The per-row sampler draws a row's ids from its own generator: a row's draws are the same
    beside any other rows, follow the distribution, and never pick a masked id."""
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    logits[:, 40:] = float("-inf")  # masked by a constraint
    d = Decoding(temperature=1.0, top_p=1.0)
    ids = torch.zeros(3, 1, dtype=torch.long)
    many = SeededSampler(d, [7, 8, 9], "cpu")
    alone = SeededSampler(d, [8], "cpu")
    for _ in range(200):
        a = many(ids, logits.clone()).argmax(-1)  # the draw is the one id with score 0
        b = alone(ids[1:2], logits[1:2].clone()).argmax(-1)
        assert int(a[1]) == int(b[0]) and int(a.max()) < 40
    counts = np.bincount(
        [int(alone(ids[:1], logits[:1].clone()).argmax()) for _ in range(4000)], minlength=50
    )
    want = torch.softmax(logits[0], -1).numpy()
    assert np.abs(counts / 4000 - want).max() < 0.03  # a sample of the distribution, not argmax


def test_decoding_holds_the_greedy_rule():
    assert Decoding(temperature=0).greedy and Decoding(temperature=-1).greedy
    assert not Decoding(temperature=0.1).greedy
    assert Decoding(temperature=0).generate_kwargs()["do_sample"] is False
    assert Decoding(temperature=0).sampler([0]) is None
    hf = Decoding(temperature=0.5, top_k=20).generate_kwargs()
    assert hf["do_sample"] and hf["temperature"] == 0.5 and hf["top_k"] == 20
    tts = Decoding.from_preset(TTSFormat.preset)
    assert (tts.temperature, tts.top_k, tts.top_p, tts.max_new_tokens) == (0.4, 20, 0.95, 400)
    assert Decoding.from_preset({"do_sample": False, "max_new_tokens": 9}).greedy
    with pytest.raises(ValueError, match="top_p"):
        Decoding(top_p=0)


@pytest.mark.parametrize("reply", ["text", "speech"])
def test_stream_yields_the_reply_as_it_grows(engine, reply):
    """stream(): partial replies whose ids grow one at a time, then the final reply, which is
    reply()'s; a refused conversation raises before anything is yielded."""
    conv = conversations()[1]
    steps = list(engine.stream(conv, HOT, seed=4, reply=reply))
    whole = engine.reply([conv], HOT, seed=4, reply=reply)[0]
    *partial, final = steps
    assert final.done and not any(p.done for p in partial)
    assert final.ids == whole.ids and final.content == whole.content
    assert [p.ids for p in partial] == [whole.ids[: k + 1] for k in range(len(whole.ids))]
    assert all(p.prompt.tolist() == whole.prompt.tolist() for p in partial)
    if reply == "text":  # the text grows by appending (what a server streams as deltas)
        texts = [p.text for p in partial]
        assert all(b.startswith(a) for a, b in pairwise(texts))
    bad = Conversation([Message("user", "hello <|eos|>")])
    with pytest.raises(FormatError):
        next(engine.stream(bad, HOT))


GREEDY_60 = Decoding.greedy_with(60)  # a spoken reply of about 60 frames: 25-frame chunks


def test_stream_vocodes_speech_in_chunks_while_it_is_generated(engine):
    """vocode=True: audio chunks ride on partial replies before the reply is complete, and all of
    them make the whole reply's audio (each chunk is vocoded with 24 frames of context each side
    and cropped: the same samples within float error)."""
    conv = conversations()[2]
    *partial, final = engine.stream(conv, GREEDY_60, reply="speech", vocode=True)
    whole = engine.reply([conv], GREEDY_60, reply="speech", vocode=True)[0]
    assert final.ids == whole.ids and whole.audio is not None
    early = [k for k, p in enumerate(partial) if p.chunk is not None]
    assert early and early[0] < len(partial) - 1  # audio before the last id was generated
    pieces = [p.chunk for p in partial if p.chunk is not None] + [final.chunk]
    got = np.concatenate([c for c in pieces if c is not None])
    np.testing.assert_array_equal(got, final.audio)
    assert got.shape == whole.audio.shape and final.sample_rate == engine.gen.sample_rate
    np.testing.assert_allclose(got, whole.audio, atol=1e-5)


def test_speech_chunks_of_several_parts_make_what_vocode_makes(engine):
    """Two speech parts growing a unit at a time (the second starts once the first is complete):
    the chunks concatenate to ``vocode`` of both parts."""
    rng = np.random.default_rng(0)
    parts = [SpeechPart("units", rng.integers(0, 24, n)) for n in (40, 31)]
    feed = engine._speech_feed(chunk=10, context=6)
    assert feed is not None
    pieces = []
    for k, part in enumerate(parts):
        for n in range(1, len(part.ids) + 1):
            content = ["a ", *parts[:k], SpeechPart("units", part.ids[:n])]
            pieces.append(feed.push(content))
    pieces.append(feed.finish())
    got = np.concatenate([p for p in pieces if p is not None])
    want = engine.vocode(parts)
    assert want is not None and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sum(p is not None for p in pieces) > 4


class _Steps(StoppingCriteria):
    """Counts the decoding steps of a generate call; never stops it."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:  # fmt: skip
        self.n += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_closing_a_stream_stops_its_decoding(engine):
    steps = _Steps()
    it = engine.stream(conversations()[0], Decoding.greedy_with(400), reply="text",
                       stopping_criteria=StoppingCriteriaList([steps]))  # fmt: skip
    next(it), next(it)
    it.close()
    seen, t0 = -1, time.monotonic()
    while steps.n != seen and time.monotonic() - t0 < 30:  # until the decoding thread is still
        seen = steps.n
        time.sleep(0.5)
    assert steps.n < 100
