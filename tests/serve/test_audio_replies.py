"""The server's memory of its spoken replies' transcripts, by audio id: bounded and expiring."""

from __future__ import annotations

import time

from tokunify.serve.audio_replies import AudioReplies


def test_the_newest_replies_are_kept_until_they_expire():
    keep = AudioReplies(size=2)
    ids = []
    for said in ("one", "two", "three"):
        aid, expires = keep.new()
        assert aid.startswith("audio_") and expires > time.time() + keep.ttl_s - 5
        keep.keep(aid, said, expires)
        ids.append(aid)
    assert [keep.transcript(a) for a in ids] == [None, "two", "three"]  # the oldest was dropped
    keep.keep(ids[1], "two", int(time.time()) - 1)  # expired
    assert keep.transcript(ids[1]) is None and keep.transcript("audio_unknown") is None
