"""The `chat` task: a conversation store trains through `tokunify train`, loss on assistant turns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_config

import tokunify
from tokunify.chat.session import ChatSession
from tokunify.cli import main
from tokunify.data.store import TokenStore
from tokunify.generate.decoding import Decoding
from tokunify.tasks import FORMATS, FormatError, TaskOptions, make_task
from tokunify.tasks.conversation import Conversation
from tokunify.train.config import DataConfig
from tokunify.train.data import Formatter, RecordSource, TaskData
from tokunify.train.packing import IGNORE


def test_chat_is_a_registered_task():
    assert "chat" in FORMATS
    task = make_task("chat", tokunify.UnifiedVocab(text_size=10), TaskOptions())
    with pytest.raises(FormatError, match="tokenizer"):
        _ = task.template


def test_packed_batches_train_on_assistant_turns_only(train_bundle, train_store, chat_store):
    b = tokunify.load(train_bundle, with_model=False)
    cfg = DataConfig(mixture={"chat": 1.0}, seq_len=256, eval_fraction=0.0)
    fmt = Formatter(b.vocab, b.tokenizer, cfg, "units", 50.0)
    # the conversation store and the utterance store it refers to, as `tokunify train` reads them
    source = RecordSource([TokenStore(chat_store), TokenStore(train_store)])
    ref_conv = next(source[i] for i in range(len(source)) if source[i].id == "conv0")
    usable, resolved = fmt.pair("chat", ref_conv, source.lookup)  # its user speech is a reference
    assert usable and resolved.streams["units"].size > ref_conv.streams["units"].size
    data = TaskData(source, fmt, cfg, seed=0)
    batch = data.next_batch(4)
    texts = {r.text for r in (source[i] for i in range(len(source))) if r.text}
    v, tok = b.vocab, b.tokenizer
    n_turns = 0
    for row, labels, spans in zip(batch.input_ids, batch.labels, batch.bounds(), strict=True):
        for a, z in spans:
            ids, lab = row[a:z].numpy(), labels[a:z].numpy()
            on = lab != IGNORE
            runs = np.split(np.flatnonzero(on), np.flatnonzero(np.diff(np.flatnonzero(on)) > 1) + 1)
            runs = [r for r in runs if r.size]
            # two assistant turns per conversation (a document cut at seq_len may hold fewer)
            assert 1 <= len(runs) <= 2
            asr = ids[runs[0]]
            assert asr[0] == v.text_start and asr[-2:].tolist() == [v.text_end, v.eos]
            assert tok.decode(asr[1:-2].tolist()).strip() in texts  # the transcript, nothing else
            if len(runs) == 2:
                tts = ids[runs[1]]
                assert tts[0] == v.stream_start("units") and tts[-1] == v.eos
            # user turns (their speech, their instruction text) never carry loss
            user_units = ids[: runs[0][0]]
            assert (v.modality_of(user_units) == v.modality_code("units")).any()
            n_turns += len(runs)
    assert n_turns >= 4


def test_conversation_store_trains_with_tokunify_train(train_bundle, chat_store, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml", train_bundle, chat_store, tmp_path / "run",
        steps=4, save_every=0, eval_every=0, log_every=1,
    )  # fmt: skip
    assert (
        main(["train", str(cfg), "--data.mixture", '{"chat": 1.0}', "--data.eval_fraction", "0.2"])
        == 0
    )
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss/chat"] for r in rows if "loss/chat" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
    # ...and the trained bundle chats: a spoken question from the store, a text reply
    chat = ChatSession(
        tmp_path / "run" / "final", reply="text", decoding=Decoding(max_new_tokens=8)
    )
    speech = Conversation.from_record(TokenStore(chat_store)[1]).messages[0].speech[0]
    reply = chat.say(speech)
    assert not reply.speech and (reply.hit_limit or reply.ids[-1] == chat.vocab.eos)
    assert [m.role for m in chat.conversation.messages] == ["user", "assistant"]
