"""Continuous (encoder-input) streams in the task formats: a frame count in, placeholders in the
sequence, the count back; hybrid input; input only (never a target, never under the loss)."""

from __future__ import annotations

import numpy as np
import pytest
from chat_helpers import base_tokenizer

from tokunify.core.vocab import UnifiedVocab, continuous_stream, units_stream
from tokunify.data.store.schema import Record
from tokunify.model.extend import add_vocab_tokens
from tokunify.tasks import (
    FormatError,
    TaskOptions,
    Utterance,
    encode_segment,
    get_format,
    make_task,
    parse_sequence,
)
from tokunify.tasks.conversation import Conversation, Message, SpeechPart
from tokunify.tasks.reply import ReplyGrammar

K = 12
N = 5  # adapter frames of the test utterance


@pytest.fixture
def vocab() -> UnifiedVocab:
    return UnifiedVocab(100, (units_stream("units", K), continuous_stream("enc")))


def record(streams: dict, text: str = "the cat") -> Record:
    return Record("r0", None, text, 1.0, np.array([5, 6], np.uint32), streams, {}, None, {})


def test_segment_expands_the_count_and_parses_it_back(vocab):
    p = vocab.placeholder("enc")
    seg = encode_segment(vocab, "enc", np.asarray(N))
    assert seg.tolist() == [vocab.stream_start("enc"), *[p] * N, vocab.stream_end("enc")]
    assert encode_segment(vocab, "enc", 0).tolist() == [seg[0], seg[-1]]
    parsed = parse_sequence(vocab, np.concatenate([vocab.prefix("asr"), seg, [vocab.eos]]))
    (s,) = parsed.segments
    assert s.modality == "enc" and s.ids.ndim == 0 and int(s.ids) == N
    with pytest.raises(FormatError, match="'enc' is continuous: its speech is a frame count"):
        encode_segment(vocab, "enc", np.zeros(3, np.int64))
    with pytest.raises(FormatError, match="enc"):  # a unit id inside a continuous segment
        parse_sequence(vocab, [vocab.stream_start("enc"), p, vocab.to_global("units", [1])[0]])


def test_asr_hears_a_continuous_stream(vocab):
    fmt = get_format("asr", vocab, stream="enc")
    utt = Utterance(text=np.array([5, 6]), speech={"enc": np.asarray(N)})
    ids, mask = fmt.build(utt)
    p = vocab.placeholder("enc")
    assert (ids == p).sum() == N and not mask[ids == p].any()
    assert ids[vocab.prefix_len] == vocab.stream_start("enc")
    assert mask.sum() == 2 + 2 + 1  # text_start, 2 text ids, text_end, eos
    back = fmt.parse(ids)
    assert int(back.speech["enc"]) == N and back.text.tolist() == [5, 6]
    prompt = fmt.prompt(utt)
    assert prompt[-1] == vocab.text_start and (prompt == p).sum() == N
    assert fmt.eligible(record({"enc": np.asarray(N)}))
    assert not fmt.eligible(record({"enc": np.asarray(0)}))
    # even with loss on the input side, placeholders and their markers are never targets
    ids, mask = get_format("asr", vocab, stream="enc", loss_on_input=True).build(utt)
    assert not mask[np.isin(ids, vocab.input_only_ids())].any()


def test_hybrid_input_units_and_encoder_frames(vocab):
    opts = TaskOptions(stream="units", input_streams=("units", "enc"))
    fmt = make_task("asr", vocab, opts)
    utt = Utterance(text=np.array([5]), speech={"units": np.array([3, 7]), "enc": np.asarray(N)})
    ids, mask = fmt.build(utt)
    assert mask.sum() == 4 and mask[-4:].all()  # text_start, T:5, text_end, eos
    back = parse_sequence(vocab, ids)
    assert [s.modality for s in back.segments] == ["units", "enc", "text"]
    assert back.segments[0].ids.tolist() == [3, 7] and int(back.segments[1].ids) == N
    assert fmt.eligible(record({"units": np.array([3, 7]), "enc": np.asarray(N)}))
    assert not fmt.eligible(record({"units": np.array([3, 7])}))  # no encoder frames
    # s2s: encoder frames in, units out (LLaMA-Omni)
    s2s = make_task("s2s", vocab, TaskOptions(stream="units", input_streams=("enc",)))
    tgt = Utterance(speech={"units": np.array([1, 2, 2])})
    ids, _ = s2s.build(Utterance(speech={"enc": np.asarray(N)}), tgt)
    src, out = s2s.parse(ids)
    assert int(src.speech["enc"]) == N and out.speech["units"].tolist() == [1, 2, 2]
    src_record = record({"enc": np.asarray(N)})
    src_record.meta["s2s_target"] = "r1"
    assert s2s.eligible(src_record)
    assert s2s.pair_eligible(record({"units": np.array([1])}))
    assert not s2s.pair_eligible(record({"enc": np.asarray(N)}))


def test_a_continuous_stream_is_never_an_output(vocab):
    for task in ("tts", "speech", "continue", "s2s"):
        with pytest.raises(FormatError, match="'enc' is continuous"):
            get_format(task, vocab, stream="enc")
    with pytest.raises(FormatError, match="continue: the prompt is the head"):
        make_task("continue", vocab, TaskOptions(input_streams=("enc",)))
    grammar = ReplyGrammar(vocab, "any", [vocab.eos], structured=True)
    banned = vocab.input_only_ids()
    assert not grammar.allowed([]).take(banned).any()
    free = ReplyGrammar(vocab, "any", [vocab.eos], structured=False)
    assert not free.allowed([]).take(banned).any() and free.allowed([])[vocab.stream_start()]


@pytest.mark.parametrize("family", ["none", "llama3"])
def test_instruct_asr_renders_encoder_frames(family):
    tok = base_tokenizer(family)
    vocab = UnifiedVocab(len(tok), (units_stream("units", K), continuous_stream("enc")))
    add_vocab_tokens(tok, vocab)
    fmt = make_task("instruct_asr", vocab, TaskOptions(stream="enc", tokenizer=tok))
    r = record({"enc": np.asarray(N)}, text="the red cat")
    assert fmt.eligible(r)
    utt = Utterance(text=np.asarray(tok.encode("the red cat", add_special_tokens=False)),
                    speech={"enc": np.asarray(N)})  # fmt: skip
    ids, mask = fmt.build_record(r, None, lambda _: utt, rng=np.random.default_rng(0))
    p = vocab.placeholder("enc")
    at = np.flatnonzero(ids == p)
    assert len(at) == N and np.all(np.diff(at) == 1)
    assert ids[at[0] - 1] == vocab.stream_start("enc")
    assert ids[at[-1] + 1] == vocab.stream_end("enc")
    assert mask.any() and not mask[at].any()
    conv = fmt.template.parse(vocab, tok, ids)
    (part,) = [q for m in conv.messages for q in m.speech]
    assert part.stream == "enc" and part.frames == N


def test_conversation_record_keeps_frame_counts():
    conv = Conversation(
        [
            Message("user", ["hear this ", SpeechPart("enc", np.asarray(3))]),
            Message("assistant", "ok"),
            Message("user", [SpeechPart("enc", np.asarray(5)), " and this"]),
        ]
    )
    r = conv.to_record("c0")
    assert int(r.streams["enc"]) == 8
    back = Conversation.from_record(r)
    assert [p.frames for m in back.messages for p in m.speech] == [3, 5]
    assert back == conv
