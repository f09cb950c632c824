"""Instruction pools (package and user YAML) and tasks as instruction-following chat turns."""

from __future__ import annotations

import numpy as np
import pytest
from chat_helpers import build_tokenizer

import tokunify
from tokunify.data.store import TokenStore
from tokunify.tasks import TaskOptions, make_task
from tokunify.tasks.conversation import SpeechPart
from tokunify.tasks.instructions import (
    InstructionError,
    InstructionPool,
    drop_words,
    fill,
    instruction_conversation,
)
from tokunify.tasks.templates import DefaultTemplate
from tokunify.train.config import DataConfig
from tokunify.train.data import Formatter

TASKS = ("asr", "tts", "s2s", "continue", "spoken_qa", "interleave")


def test_package_pool_has_20_phrasings_per_task_split_train_dev_heldout():
    pool = InstructionPool.load()
    assert set(TASKS) <= set(pool.tasks())
    for t in TASKS:
        splits = [pool.phrasings(t, s) for s in ("train", "dev", "heldout")]
        train, dev, held = splits
        assert len(train) + len(dev) + len(held) >= 20 and len(dev) >= 5 and len(held) >= 5
        assert len(set().union(*splits)) == sum(map(len, splits))  # no phrasing twice
    assert "Repeat after me." in pool.phrasings("s2s") and "Read this aloud." in pool.phrasings(
        "tts"
    )


def test_sample_is_seeded_from_the_split_and_fills_placeholders():
    pool = InstructionPool.load()
    a = [pool.sample("asr", "heldout", np.random.default_rng(5)) for _ in range(3)]
    assert len(set(a)) == 1 and a[0] in {fill(x) for x in pool.phrasings("asr", "heldout")}
    seen = {pool.sample("s2s", "train", np.random.default_rng(i)) for i in range(200)}
    assert "Repeat after me in English." in seen and not any("{" in s for s in seen)
    assert pool.sample("s2s", "train", np.random.default_rng(0), language="French") in {
        s.replace("English", "French") for s in seen
    } | set(pool.phrasings("s2s"))


def test_user_yaml(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("asr:\n  train: [Tell me the words.]\n  heldout: [Words please.]\n")
    pool = InstructionPool.load(p)
    assert pool.tasks() == ["asr"] and pool.sample("asr") == "Tell me the words."
    with pytest.raises(InstructionError, match="no instructions for task 'tts'"):
        pool.sample("tts")
    bad = {
        "overlap.yaml": ("asr:\n  train: [A.]\n  heldout: [A.]\n", "both train and heldout"),
        "overlap_dev.yaml": ("asr:\n  dev: [A.]\n  heldout: [B., A.]\n", "both dev and heldout"),
        "split.yaml": ("asr:\n  test: [A.]\n", "splits among"),
        "field.yaml": ("asr:\n  train: ['Say it in {dialect}.']\n", "placeholders"),
        "yaml.yaml": ("asr: [unclosed\n", "not valid YAML"),
    }
    for name, (text, msg) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InstructionError, match=msg):
            InstructionPool.load(tmp_path / name)


def test_drop_words_keeps_an_ordered_nonempty_subset():
    text = "Give a short reply to what was asked."
    words = text.split()
    assert drop_words(text, 0.0, np.random.default_rng(0)) == text
    outs = [drop_words(text, 0.3, np.random.default_rng(i)) for i in range(300)]
    for o in outs:
        kept = o.split()
        assert kept and all(w in words for w in kept)
        assert [words.index(w) for w in kept] == sorted(words.index(w) for w in kept)
    share = 1 - np.mean([len(o.split()) for o in outs]) / len(words)
    assert 0.25 < share < 0.35 and len(set(outs)) > 50
    assert all(
        len(drop_words(text, 0.99, np.random.default_rng(i)).split()) >= 1 for i in range(50)
    )


def test_instruction_turn_with_and_without_the_task_tag():
    tok, vocab = build_tokenizer("none")
    speech = SpeechPart("units", np.array([1, 2]))
    t = DefaultTemplate()
    tagged = instruction_conversation(
        "asr", "Transcribe the audio.", speech, "the cat", task_tag=True
    )
    plain = instruction_conversation("asr", "Transcribe the audio.", speech, "the cat")
    assert tagged.messages == plain.messages
    assert [m.role for m in plain.messages] == ["user", "assistant"]
    assert plain.messages[0].content == ["Transcribe the audio. ", speech]
    ids_tagged, _ = t.render(vocab, tok, tagged)
    ids_plain, _ = t.render(vocab, tok, plain)
    assert vocab.task("asr") in ids_tagged.tolist() and vocab.task("asr") not in ids_plain.tolist()


def test_instruct_tasks_build_from_utterance_records(train_bundle, train_store):
    b = tokunify.load(train_bundle, with_model=False)
    fmt = Formatter(
        b.vocab,
        b.tokenizer,
        DataConfig(mixture={"instruct_asr": 1.0, "instruct_tts": 1.0}),
        "units",
        50.0,
    )
    store = TokenStore(train_store)
    r = next(store[i] for i in range(len(store)) if store[i].text)
    pool = InstructionPool.load()
    t = fmt.formats["instruct_asr"].template
    for task, base in (("instruct_asr", "asr"), ("instruct_tts", "tts")):
        assert fmt.eligible(task, r)
        ids, mask = fmt.build(task, r, None, np.random.default_rng(3))
        conv = t.parse(b.vocab, b.tokenizer, ids)
        user, assistant = conv.messages
        assert any(user.text.startswith(p + " ") for p in pool.phrasings(base, "train"))
        if base == "asr":
            assert user.content[1] == SpeechPart("units", r.streams["units"])
            assert assistant.content[0].strip() == r.text
        else:
            assert r.text in user.text and assistant.content == [
                SpeechPart("units", r.streams["units"])
            ]
        # the loss is on the assistant turn only: the rendered assistant turn's tail
        _, want = t.render(b.vocab, b.tokenizer, conv)
        assert mask.tolist() == want.tolist() and not mask[: len(ids) // 3].any()
    held = make_task("instruct_asr", b.vocab, TaskOptions(stream="units", tokenizer=b.tokenizer))
    held.split = "heldout"
    conv = held.conversation_of(fmt.utterance(r), None, np.random.default_rng(0))
    assert conv.meta["instruction"] in {fill(x) for x in pool.phrasings("asr", "heldout")}
    # the train config's instruction_word_dropout reaches the task: words of a training phrasing
    cfg = DataConfig(mixture={"instruct_asr": 1.0}, instruction_word_dropout=0.5)
    fmt = Formatter(b.vocab, b.tokenizer, cfg, "units", 50.0)
    said = [
        fmt.formats["instruct_asr"].conversation_of(
            fmt.utterance(r), None, np.random.default_rng(i)
        )
        for i in range(40)
    ]
    instructions = [c.meta["instruction"] for c in said]
    train = {fill(p) for p in pool.phrasings("asr", "train")}
    assert all(set(x.split()) <= {w for p in train for w in p.split()} for x in instructions)
    assert sum(x not in train for x in instructions) > 20
