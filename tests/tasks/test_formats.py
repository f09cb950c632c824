from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from tokunify.core.vocab import UnifiedVocab, codec_stream, units_stream
from tokunify.tasks import (
    FORMATS,
    FormatError,
    InterleaveFormat,
    TaskOptions,
    Utterance,
    Word,
    align_words,
    find_task,
    generation_tasks,
    get_format,
    make_task,
    parse_sequence,
    register_task,
)

TEXT_SIZE = 300
K = 40
N_Q, C = 3, 8


def make_vocab(layout: str = "flatten") -> UnifiedVocab:
    return UnifiedVocab(
        TEXT_SIZE, (units_stream("units", K), codec_stream("codec", N_Q, C, layout))
    )


def utt(seed: int = 0, t: int = 9) -> Utterance:
    rng = np.random.default_rng(seed)
    return Utterance(
        text=rng.integers(0, TEXT_SIZE, size=5),
        speech={"units": rng.integers(0, K, size=t), "codec": rng.integers(0, C, size=(N_Q, t))},
    )


def assert_same(a: Utterance, b: Utterance, keys: list[str]) -> None:
    for k in keys:
        if k == "text":
            assert np.array_equal(a.text, b.text)
        else:
            assert np.array_equal(a.speech[k], b.speech[k]), k


def test_asr_worked_example():
    v = make_vocab()
    u = Utterance(text=np.array([5]), speech={"units": np.array([3, 7])})
    ids, mask = get_format("asr", v).build(u)
    g = v.to_global("units", np.array([3, 7]))
    assert ids.tolist() == [
        v.bos,
        v.task("asr"),
        v.stream_start("units"),
        g[0],
        g[1],
        v.stream_end("units"),
        v.text_start,
        5,
        v.text_end,
        v.eos,
    ]
    assert mask.astype(int).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_tts_worked_example_and_loss_on_input():
    v = make_vocab()
    u = Utterance(text=np.array([5]), speech={"units": np.array([3, 7])})
    ids, mask = get_format("tts", v).build(u)
    assert ids[:5].tolist() == [v.bos, v.task("tts"), v.text_start, 5, v.text_end]
    assert mask.astype(int).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    _, mask_all = get_format("tts", v, loss_on_input=True).build(u)
    assert mask_all.astype(int).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("layout", ["flatten", "delay", "first"])
@pytest.mark.parametrize("stream", ["units", "codec"])
@pytest.mark.parametrize("task", ["asr", "tts", "speech", "continue"])
def test_round_trip(task, stream, layout):
    v = make_vocab(layout)
    u = utt()
    fmt = get_format(task, v, stream=stream)
    ids, mask = fmt.build(u, rng=np.random.default_rng(1))
    assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == mask.shape
    back = fmt.parse(ids)
    if stream == "codec" and layout == "first":
        assert np.array_equal(back.speech["codec"], u.speech["codec"][:1])
        keys = ["text"] if task in ("asr", "tts") else []
    else:
        keys = [stream] + (["text"] if task in ("asr", "tts") else [])
    assert_same(back, u, keys)
    # the prompt is a prefix of the training sequence ending with the target's start marker,
    # which is the first training target
    prompt = fmt.prompt(u)
    if task != "continue":
        assert np.array_equal(ids[: len(prompt)], prompt)
        assert not mask[: len(prompt) - 1].any()
        assert mask[len(prompt) - 1 :].all()


def test_text_format():
    v = make_vocab()
    u = Utterance(text=np.array([5, 6]))
    ids, mask = get_format("text", v).build(u)
    assert ids.tolist() == [v.bos, v.task("text"), v.text_start, 5, 6, v.text_end, v.eos]
    assert mask.astype(int).tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert get_format("text", v).parse(ids).text.tolist() == [5, 6]


def test_s2s_round_trip():
    v = make_vocab()
    src, tgt = utt(1, t=4), utt(2, t=6)
    fmt = get_format("s2s", v)
    ids, mask = fmt.build(src, tgt)
    a, b = fmt.parse(ids)
    assert np.array_equal(a.speech["units"], src.speech["units"])
    assert np.array_equal(b.speech["units"], tgt.speech["units"])
    assert mask.sum() == len(tgt.speech["units"]) + 3  # target segment with markers, and eos
    with pytest.raises(FormatError, match="target"):
        fmt.build(src)


@pytest.mark.parametrize("layout", ["flatten", "delay"])
def test_continue_split(layout):
    v = make_vocab(layout)
    u = utt(t=10)
    fmt = get_format("continue", v, stream="codec", prompt_fraction=0.3)
    _, mask = fmt.build(u)
    first = int(np.flatnonzero(mask)[0])
    assert first == 3 + 3 * N_Q  # bos, task, start, then 3 frames of n_q codes
    prompt = fmt.prompt(u)
    assert prompt[-1] != v.stream_end("codec")
    assert len(prompt) == 3 + 10 * N_Q
    rng_masks = {
        int(np.flatnonzero(fmt.build(u, rng=np.random.default_rng(s))[1])[0]) for s in range(20)
    }
    assert len(rng_masks) > 1  # random split points under an rng


def test_parse_generated_without_end():
    v = make_vocab()
    fmt = get_format("tts", v)
    u = utt()
    ids, _ = fmt.build(u)
    cut = ids[:-3]  # generation stopped before units_end/eos
    parsed = parse_sequence(v, cut)
    assert not parsed.ended and not parsed.segments[-1].closed
    assert np.array_equal(parsed.segments[-1].ids, u.speech["units"][:-1])


def test_parse_errors():
    v = make_vocab()
    fmt = get_format("asr", v, stream="codec")
    ids, _ = fmt.build(utt())
    end = int(np.flatnonzero(ids == v.stream_end("codec"))[0])
    bad = np.delete(ids, end - 1)  # codec segment loses one code
    with pytest.raises(FormatError, match="not a multiple of n_q=3"):
        fmt.parse(bad)
    with pytest.raises(FormatError, match="task tag 'asr'"):
        get_format("tts", v).parse(ids)
    with pytest.raises(FormatError, match="expected a segment start"):
        parse_sequence(v, [v.bos, v.task("asr"), 5])


def test_unknown_task():
    with pytest.raises(FormatError, match="unknown task 'sing'"):
        get_format("sing", make_vocab())
    v = UnifiedVocab(TEXT_SIZE, (units_stream("units", K),), tasks=("asr",))
    with pytest.raises(ValueError, match="unknown task tag 'tts'"):
        get_format("tts", v)


def test_every_task_has_a_format():
    assert set(FORMATS) == {"text", "speech", "asr", "tts", "s2s", "continue", "interleave",
                            "synth_interleave", "chat", "instruct_asr", "instruct_tts",
                            "instruct_s2s", "instruct_continue"}  # fmt: skip


def words_utt(n: int = 12) -> Utterance:
    rng = np.random.default_rng(3)
    words = [
        Word(
            text=rng.integers(0, TEXT_SIZE, size=rng.integers(1, 3)),
            speech={"units": rng.integers(0, K, size=rng.integers(1, 5))},
        )
        for _ in range(n)
    ]
    return Utterance(words=words)


def test_interleave_spans_switch_at_word_boundaries():
    v = make_vocab()
    u = words_utt()
    fmt = InterleaveFormat(v, span_words=(1, 3))
    rng = np.random.default_rng(7)
    ids, mask = fmt.build(u, rng=rng)
    assert mask[2:].all() and not mask[:2].any()
    segs = fmt.parse(ids)
    spans = fmt.spans(len(u.words), np.random.default_rng(7))
    assert [s.modality for s in segs] == [m for _, _, m in spans]
    assert len({s.modality for s in segs}) == 2 or len(segs) == 1
    for seg, (a, b, m) in zip(segs, spans, strict=True):
        want = np.concatenate([w.text if m == "text" else w.speech["units"] for w in u.words[a:b]])
        assert np.array_equal(seg.ids, want)
        assert 1 <= b - a <= 3
    # modalities alternate
    assert all(x.modality != y.modality for x, y in itertools.pairwise(segs))


def test_interleave_needs_words():
    with pytest.raises(FormatError, match="word alignments"):
        InterleaveFormat(make_vocab()).build(utt())


def test_align_words_with_durations():
    # 4 units lasting 2, 3, 1, 4 frames -> start frames 0, 2, 5, 6; frame rate 10 Hz
    units = np.array([9, 8, 7, 6])
    durations = np.array([2, 3, 1, 4])
    alignment = [("hi", 0.0, 0.4), ("there", 0.5, 1.0)]
    words = align_words(alignment, [[1], [2, 3]], "units", units, 10.0, durations)
    assert words[0].speech["units"].tolist() == [9, 8]
    assert words[1].speech["units"].tolist() == [7, 6]
    assert words[1].text.tolist() == [2, 3]
    with pytest.raises(FormatError, match="durations"):
        align_words(alignment, [[1], [2]], "units", units, 10.0, durations[:2])


# ---- the task objects: which records, pairing, generation facts --------------------------------
@dataclass
class Rec:
    """A store record as tasks see it (tokunify.tasks.RecordLike)."""

    id: str
    text: str | None = None
    text_ids: np.ndarray | None = None
    streams: dict = field(default_factory=dict)
    words: list | None = None
    meta: dict = field(default_factory=dict)


RECS = {
    "text_only": Rec("a", text="hi"),
    "ids_only": Rec("b", text_ids=np.array([3])),
    "one_frame": Rec("c", streams={"units": np.array([4])}),
    "speech": Rec("d", streams={"units": np.array([4, 5])}),
    "speech_text": Rec("e", text="hi", streams={"units": np.array([4, 5])}),
    "words": Rec("f", text="hi", streams={"units": np.array([4, 5])}, words=[("hi", 0, 1)]),
    "question": Rec("g", streams={"units": np.array([4])}, meta={"answer": "d"}),
    "empty_speech": Rec("h", text="hi", streams={"units": np.zeros(0, np.int64)}),
}
ELIGIBLE = {
    "text": {"text_only", "ids_only", "speech_text", "words", "empty_speech"},
    "speech": {"one_frame", "speech", "speech_text", "words", "question"},
    "continue": {"speech", "speech_text", "words"},
    "asr": {"speech_text", "words"},
    "tts": {"speech_text", "words"},
    "s2s": {"question"},
    "interleave": {"words"},
}


@pytest.mark.parametrize("task", sorted(ELIGIBLE))
def test_each_task_says_which_records_it_uses(task):
    fmt = make_task(task, make_vocab(), TaskOptions(stream="units", pair_key="answer"))
    assert {k for k, r in RECS.items() if fmt.eligible(r)} == ELIGIBLE[task]


def test_pairing_uses_the_configured_key_in_one_place():
    v = make_vocab()
    s2s = make_task("s2s", v, TaskOptions(pair_key="answer"))
    q = RECS["question"]
    assert s2s.find_pair(q, {"d": RECS["speech"]}.get) == (True, RECS["speech"])
    assert s2s.find_pair(q, {}.get) == (False, None)  # the pair is not in the store
    assert s2s.find_pair(q, {"d": RECS["text_only"]}.get) == (False, None)  # no speech
    assert s2s.reference_text(q, RECS["speech_text"]) == "hi"  # scored against the answer
    assert not make_task("s2s", v).eligible(q)  # default key s2s_target: not a question
    assert make_task("asr", v).find_pair(q, {}.get) == (True, None)  # single-record task


def test_generation_facts_come_from_the_task():
    v = make_vocab()
    assert generation_tasks() == ["text", "continue", "asr", "tts", "s2s"]
    assert find_task("speech", "text", v) == "asr" and find_task("text", "speech", v) == "tts"
    untagged = ["chat", "instruct_asr", "instruct_tts", "instruct_s2s", "instruct_continue"]
    # synth_interleave needs its own tag, which this vocab lacks
    outputs = {t: make_task(t, v).output_modality for t in [*v.tasks, *untagged]}
    assert outputs == {"text": "text", "speech": "speech", "continue": "speech", "asr": "text",
                       "tts": "speech", "s2s": "speech", "interleave": None, "chat": None,
                       "instruct_asr": None, "instruct_tts": None, "instruct_s2s": None,
                       "instruct_continue": None}  # fmt: skip
    u = utt()
    cont = make_task("continue", v, TaskOptions(stream="codec"))
    p = cont.prompt(u)
    assert cont.target_offset(p) == len(p) - v.prefix_len - 1 > 0  # prompt ends inside the target
    for t in ("asr", "tts", "s2s"):
        assert make_task(t, v).target_offset(make_task(t, v).prompt(u)) == 0
    text = make_task("text", v)  # the given text opens the target: the model continues it
    p = text.prompt(u)
    assert (
        text.target_offset(p) == len(u.text) > 0 and p[-len(u.text) :].tolist() == u.text.tolist()
    )
    asr = make_task("asr", v)
    ids, _ = asr.build(u)
    prompt = asr.prompt(u)
    seg = asr.parse_output(prompt, ids[len(prompt) :])
    assert seg.modality == "text" and seg.ids.tolist() == u.text.tolist()


def test_register_refuses_a_clash_and_a_missing_tag():
    class Other(InterleaveFormat):
        task = "asr"

    with pytest.raises(FormatError, match="already registered"):
        register_task(Other)

    class NoTag(InterleaveFormat):
        task = ""

    with pytest.raises(FormatError, match="needs a `task` tag"):
        register_task(NoTag)
    assert FORMATS["asr"].__name__ == "ASRFormat"
