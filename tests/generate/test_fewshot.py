"""In-context examples in `generate`: the prompt holds the k pairs in order, generation parses,
store ids resolve through the task, bad specs are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokunify.cli import main
from tokunify.data.store import TokenStore
from tokunify.generate.fewshot import Example, examples_from_store
from tokunify.generate.generator import Generator
from tokunify.tasks import FormatError, parse_sequence

MAX_NEW = 12


@pytest.fixture(scope="module")
def gen(voc_bundle) -> Generator:
    return Generator(voc_bundle)


@pytest.fixture(scope="module")
def wavs(speech_manifest) -> dict[str, Path]:
    rows = [json.loads(x) for x in speech_manifest.read_text().splitlines()]
    return {r["id"]: speech_manifest.parent / r["audio"] for r in rows}


@pytest.fixture(scope="module")
def texts(speech_manifest) -> dict[str, str]:
    rows = [json.loads(x) for x in speech_manifest.read_text().splitlines()]
    return {r["id"]: r["text"] for r in rows}


def _segments(gen: Generator, prompt: np.ndarray) -> list[tuple[str, list[int]]]:
    parsed = parse_sequence(gen.vocab, prompt)
    return [(s.modality, np.asarray(s.ids).tolist()) for s in parsed.segments]


def _text(gen: Generator, s: str) -> list[int]:
    return gen.bundle.tokenizer.encode(s, add_special_tokens=False)


def test_asr_prompt_holds_the_pairs_in_order(gen, wavs, texts):
    ids = ["u0_0", "u2_1", "u4_2"]
    examples = [Example(wavs[u], texts[u]) for u in ids]
    query = wavs["u1_0"]
    prompt = gen.prompts("asr", [query], examples=examples)[0]
    units = gen.encode_audio([wavs[u] for u in ids] + [query])
    v = gen.vocab
    assert prompt[: v.prefix_len].tolist() == v.prefix("asr").tolist()
    assert prompt[-1] == v.text_start  # the query's target start marker ends the prompt
    want = []
    for u, x in zip(ids, units, strict=False):
        want += [("units", x.tolist()), ("text", _text(gen, texts[u]))]
    want.append(("units", units[-1].tolist()))
    assert _segments(gen, prompt[:-1]) == want
    # the same examples in another order give another prompt (order is kept, not sorted)
    other = gen.prompts("asr", [query], examples=examples[::-1])[0]
    assert _segments(gen, other[:-1])[0] == ("units", units[2].tolist())
    # zero examples: the plain prompt
    assert (
        gen.prompts("asr", [query], examples=[])[0].tolist()
        == gen.prompts("asr", [query])[0].tolist()
    )


def test_tts_and_s2s_prompts_and_generation_parse(gen):
    rng = np.random.default_rng(0)
    k = gen.vocab.stream("units").size
    u1, u2, q = (rng.integers(0, k, n) for n in (5, 7, 4))
    # text -> speech: the target side as local ids
    prompt = gen.prompts(
        "tts", ["the red cat"], examples=[Example("a dog", u1), Example("two", u2)]
    )[0]
    segs = _segments(gen, prompt[:-1])
    assert [m for m, _ in segs] == ["text", "units", "text", "units", "text"]
    assert segs[1][1] == u1.tolist() and segs[3][1] == u2.tolist()
    assert segs[0][1] == _text(gen, "a dog") and segs[4][1] == _text(gen, "the red cat")
    # speech -> speech
    prompt = gen.prompts("s2s", [q], examples=[Example(u1, u2)])[0]
    assert _segments(gen, prompt[:-1]) == [
        ("units", u1.tolist()),
        ("units", u2.tolist()),
        ("units", q.tolist()),
    ]
    for task, inputs, examples, modality in [
        ("tts", ["the red cat", "a dog"], [Example("a dog", u1), Example("two", u2)], "units"),
        ("s2s", [q], [Example(u1, u2)], "units"),
        ("asr", [q, u1], [Example(u2, "a dog")], "text"),
    ]:
        results = gen.generate(
            task, inputs, examples=examples, max_new_tokens=MAX_NEW, do_sample=False, vocode=False
        )
        prompts = gen.prompts(task, inputs, examples=examples)
        for p, r in zip(prompts, results, strict=True):
            full = parse_sequence(
                gen.vocab, np.concatenate([p, r.ids])
            )  # raises if it does not parse
            assert full.task == task and len(full.segments) == 2 * len(examples) + 2
            assert full.segments[-1].modality == modality
            assert (r.text is not None) if modality == "text" else (r.units is not None)
        # batched == one at a time (left padding does not disturb the examples)
        one = gen.generate(
            task,
            inputs[:1],
            examples=examples,
            max_new_tokens=MAX_NEW,
            do_sample=False,
            vocode=False,
        )
        assert one[0].ids == results[0].ids


def test_examples_from_store_follow_the_task(gen, train_store, texts):
    store = TokenStore(train_store)
    by_id = {r: store[i] for i, r in enumerate(store.ids())}
    asr = examples_from_store(gen.task("asr"), store, ["u1_1", "u0_0"])
    assert [e.target for e in asr] == [texts["u1_1"], texts["u0_0"]]
    assert np.array_equal(asr[0].input, by_id["u1_1"].streams["units"])
    tts = examples_from_store(gen.task("tts"), store, ["u3_2"])
    assert tts[0].input == texts["u3_2"] and np.array_equal(
        tts[0].target, by_id["u3_2"].streams["units"]
    )
    s2s = examples_from_store(gen.task("s2s"), store, ["u0_1"])  # u0_1 is paired with u1_1
    assert np.array_equal(s2s[0].input, by_id["u0_1"].streams["units"])
    assert np.array_equal(s2s[0].target, by_id["u1_1"].streams["units"])
    with pytest.raises(FormatError, match="u1_1.*s2s"):
        examples_from_store(gen.task("s2s"), store, ["u1_1"])  # odd rows have no pair
    with pytest.raises(FormatError, match="no record 'nope'"):
        examples_from_store(gen.task("asr"), store, ["nope"])


def test_generate_cli_with_file_and_store_examples(voc_bundle, train_store, wavs, texts, tmp_path):
    txt = tmp_path / "u0_0.txt"
    txt.write_text(texts["u0_0"] + "\n")
    out = tmp_path / "g"
    argv = ["generate", str(voc_bundle), "--task", "asr", "--input", str(wavs["u1_0"]), str(wavs["u2_0"]),
            "--examples", f"{wavs['u0_0']}={txt}", "--example-store", str(train_store), "--example-ids", "u3_1",
            "--out", str(out), "--max-new-tokens", str(MAX_NEW), "--greedy"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["text"], str) for r in rows)
    # the CLI's answer is the Python API's with the same two examples
    g = Generator(voc_bundle)
    store = TokenStore(train_store)
    ex = [
        Example(wavs["u0_0"], texts["u0_0"]),
        *examples_from_store(g.task("asr"), store, ["u3_1"]),
    ]
    want = g.generate("asr", [wavs["u1_0"]], examples=ex, max_new_tokens=MAX_NEW, do_sample=False)
    assert rows[0]["text"] == want[0].text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--examples", "missing.wav=TXT"], "no such file missing.wav"),
        (["--examples", "WAV"], "expected INPUT=TARGET"),
        (["--examples", "WAV=notes.md"], "neither an audio file nor a .txt file"),
        (["--examples", "TXT=WAV"], "takes speech as input, got text"),
        (["--examples", "WAV=WAV"], "takes text as target, got speech"),
        (["--examples", "WAV=EMPTY"], "is empty"),
        (["--example-ids", "u0_0"], "--example-ids needs --example-store"),
        (["--example-store", "STORE", "--example-ids", "zzz"], "no record 'zzz'"),
        (["--task", "continue", "--examples", "WAV=WAV"], "takes no in-context examples"),
    ],
)
def test_bad_example_specs_are_one_line_errors(
    voc_bundle, train_store, wavs, tmp_path, capsys, extra, message
):
    (tmp_path / "a.txt").write_text("a red cat\n")
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "notes.md").write_text("x")
    subst = {"WAV": str(wavs["u0_0"]), "TXT": str(tmp_path / "a.txt"), "EMPTY": str(tmp_path / "empty.txt"),
             "STORE": str(train_store), "notes.md": str(tmp_path / "notes.md")}  # fmt: skip

    def fill(a: str) -> str:
        return "=".join(subst.get(side, side) for side in a.split("="))

    task = [] if "--task" in extra else ["--task", "asr"]
    argv = ["generate", str(voc_bundle), *task, "--input", str(wavs["u1_0"]), "--out", str(tmp_path / "g"),
            *[fill(a) for a in extra]]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [
        x for x in err.splitlines() if x.strip() and not x.startswith("Loading weights")
    ]  # transformers' bar
    assert (
        len(lines) == 1
        and lines[0].startswith("tokunify generate: error: ")
        and message in lines[0]
    ), err
