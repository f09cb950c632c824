"""Conversations as store records: to_record/from_record, written and read by the normal store."""

from __future__ import annotations

import numpy as np
import pytest

from tokunify.data.store import StoreMeta, StreamInfo, TokenStore
from tokunify.tasks.conversation import (
    Conversation,
    ConversationError,
    Message,
    SpeechPart,
    is_conversation,
    write_conversation_store,
)


def store_meta() -> StoreMeta:
    def info(name, kind, card, n_q):
        return StreamInfo(name, kind, card, n_q, 50.0, False, {"kind": "test"}, f"hash-{name}")

    return StoreMeta(
        streams={"units": info("units", "units", 12, 1), "codec": info("codec", "codec", 8, 2)},
        text_tokenizer=None,
        manifest="m.jsonl",
        manifest_rows=3,
        chunk_size=2,
    )


def conversations() -> list[tuple[str, Conversation]]:
    a = Conversation(
        [
            Message("system", "be brief"),
            Message(
                "user", ["what does the speaker say? ", SpeechPart("units", np.array([3, 7, 7]))]
            ),
            Message("assistant", "the cat"),
            Message(
                "user",
                [
                    SpeechPart("codec", np.array([[1, 2], [3, 4]])),
                    SpeechPart("units", np.array([1])),
                ],
            ),
            Message("assistant", [SpeechPart("units", np.array([5, 6]), ref="utt-9")]),
        ],
        {"task": "spoken_qa", "source": "test"},
    )
    b = Conversation(
        [Message("user", [SpeechPart("units", ref="utt-3")]), Message("assistant", "ok")]
    )
    c = Conversation([Message("user", "hi"), Message("assistant", "hello")])
    return [("a", a), ("b", b), ("c", c)]


def test_record_round_trip():
    for cid, conv in conversations():
        r = conv.to_record(cid)
        assert is_conversation(r)
        assert Conversation.from_record(r) == conv
    r = conversations()[0][1].to_record("a")
    assert r.streams["units"].tolist() == [3, 7, 7, 1, 5, 6]  # speech parts concatenated in order
    assert r.streams["codec"].shape == (2, 2)


def test_store_round_trip_through_the_normal_writer_and_reader(tmp_path):
    write_conversation_store(tmp_path / "s", conversations(), store_meta(), chunk_size=2)
    store = TokenStore(tmp_path / "s")
    assert len(store) == 3 and store.meta.extra["kind"] == "conversations"
    got = {store[i].id: Conversation.from_record(store[i]) for i in range(len(store))}
    assert got == dict(conversations())


def test_resolve_fills_references():
    class R:
        def __init__(self):
            self.streams = {"units": np.array([9, 9, 4])}

    conv = conversations()[1][1]
    assert conv.refs() == ["utt-3"]
    done = conv.resolve(lambda i: R() if i == "utt-3" else None)
    assert done.refs() == [] and done.messages[0].content[0].ids.tolist() == [9, 9, 4]
    with pytest.raises(ConversationError, match="utt-3"):
        conv.resolve(lambda i: None)


def test_message_normalises_content_and_refuses_bad_input():
    m = Message("user", ["a", "", "b", SpeechPart("units", np.array([1])), "c"])
    assert m.content[0] == "ab" and m.content[2] == "c" and m.text == "abc"
    assert Message("user", "hi").content == ["hi"]
    with pytest.raises(ConversationError, match="role"):
        Message("bot", "hi")
    with pytest.raises(ConversationError, match="neither"):
        SpeechPart("units")


def test_record_with_too_few_frames_is_refused():
    r = conversations()[0][1].to_record("a")
    r.streams["units"] = r.streams["units"][:2]
    with pytest.raises(ConversationError, match="frames"):
        Conversation.from_record(r)
