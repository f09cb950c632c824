"""eval-slm on tiny directories in each published layout (espeak audio): parsing and arithmetic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tokunify.cli import main
from tokunify.data.corpus.espeak import Espeak
from tokunify.eval.slm.benchmarks import BenchmarkError, read_benchmark
from tokunify.eval.slm.scoring import (
    Conventions,
    pair_scores,
    reference_scores,
    speech_sequence,
    text_sequence,
)
from tokunify.model.bundle import load

WORDS = [("cat", "cag", 12), ("house", "hoube", 3), ("garden", "gorden", 0)]
SENTENCES = [("agreement", "anna has two cats", "anna have two cats"),
             ("word_order", "the big dog ran", "the dog big ran")]  # fmt: skip
VOICES = ["en-us", "en-us+m3"]


@pytest.fixture(scope="module")
def speak():
    engine = Espeak()

    def write(text: str, voice: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        s = engine.synthesize(text, voice)
        sf.write(path, s.audio, s.sample_rate)

    return write


def _gold(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def zr2021(tmp_path_factory, speak) -> Path:
    """ZeroSpeech 2021: lexical/dev and syntactic/dev, wavs + gold.csv, two voices per pair."""
    root = tmp_path_factory.mktemp("zr2021")
    lex, syn = root / "lexical" / "dev", root / "syntactic" / "dev"
    rows = []
    for i, (w, nw, freq) in enumerate(WORDS):
        for v in VOICES:
            for text, ok in ((w, 1), (nw, 0)):
                name = f"{text}_{v.replace('+', '')}"
                speak(text, v, lex / f"{name}.wav")
                rows.append(
                    dict(
                        filename=name,
                        id=f"p{i}",
                        voice=v,
                        frequency=freq,
                        word=text,
                        phones="",
                        length=len(text),
                        correct=ok,
                    )
                )
    _gold(lex / "gold.csv", rows)
    rows = []
    for i, (typ, good, bad) in enumerate(SENTENCES):
        for v in VOICES:
            for text, ok in ((good, 1), (bad, 0)):
                name = f"s{i}_{ok}_{v.replace('+', '')}"
                speak(text, v, syn / f"{name}.wav")
                rows.append(
                    dict(
                        filename=name,
                        id=i,
                        voice=v,
                        type=typ,
                        subtype=typ,
                        transcription=text,
                        correct=ok,
                    )
                )
    _gold(syn / "gold.csv", rows)
    return root


@pytest.fixture(scope="module")
def cloze(tmp_path_factory, speak) -> Path:
    root = tmp_path_factory.mktemp("sSC")
    for i, (ctx, good, bad) in enumerate(
        [("the cat sat", "on the mat", "seven blue"), ("we saw", "two dogs", "the the")]
    ):
        speak(f"{ctx} {good}", "en-us", root / f"{i}_correct.wav")
        speak(f"{ctx} {bad}", "en-us", root / f"{i}_incorrect.wav")
        for k, t in (("context", ctx), ("correct", good), ("incorrect", bad)):
            speak(t, "en-us", root / "crossmodal" / f"{i}_{k}.wav")
    (root / "texts.jsonl").write_text("".join(json.dumps({"id": i, "context": c, "correct": g, "incorrect": b}) + "\n"
                                              for i, (c, g, b) in enumerate([("the cat sat", "on the mat", "seven blue"), ("we saw", "two dogs", "the the")])))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def salmon(tmp_path_factory, speak) -> Path:
    root = tmp_path_factory.mktemp("salmon")
    for task in ("gender_consistency", "bg_alignment"):
        for i in range(2):
            speak("hello there", "en-us", root / task / f"sample_{i}_pos.wav")
            speak("hello there", "en-us+f2", root / task / f"sample_{i}_neg.wav")
    return root


def test_readers_parse_each_layout(zr2021, cloze, salmon):
    lex = read_benchmark("swuggy", zr2021)
    assert len(lex) == 6 and {p.key for p in lex} == {"p0", "p1", "p2"}
    assert all(
        p.pos_text in {w for w, _, _ in WORDS} and p.neg_text not in {w for w, _, _ in WORDS}
        for p in lex
    )
    assert [p.groups["vocab"] for p in lex if p.key == "p2"] == ["oov", "oov"]  # frequency 0
    assert {p.groups["vocab"] for p in lex if p.key != "p2"} == {"in_vocab"}
    syn = read_benchmark("sblimp", zr2021, "dev")
    assert sorted({p.groups["type"] for p in syn}) == ["agreement", "word_order"] and len(syn) == 4
    assert all(p.pos.name.split("_")[1] == "1" and p.neg.name.split("_")[1] == "0" for p in syn)
    sc = read_benchmark("sstorycloze", cloze)
    assert [p.pos.name for p in sc] == ["0_correct.wav", "1_correct.wav"] and sc[
        1
    ].context_text == "we saw"
    assert (
        sc[0].pos_ending_audio.name == "0_correct.wav"
        and sc[0].pos_ending_audio.parent.name == "crossmodal"
    )
    sal = read_benchmark("salmon", salmon)
    assert len(sal) == 4 and all(
        p.pos.stem.endswith("pos") for p in sal
    )  # positive first despite sort order
    assert len(read_benchmark("salmon", salmon, "bg_alignment")) == 2


def test_readers_refuse_broken_layouts(tmp_path, zr2021):
    with pytest.raises(BenchmarkError, match="gold.csv"):
        read_benchmark("swuggy", tmp_path)
    d = tmp_path / "lexical" / "dev"
    d.mkdir(parents=True)
    (d / "gold.csv").write_text(
        "filename,id,voice,frequency,correct\nmissing,0,en-us,3,1\nother,0,en-us,3,0\n"
    )
    with pytest.raises(BenchmarkError, match="missing.wav is listed but missing"):
        read_benchmark("swuggy", tmp_path)
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        read_benchmark("glue", tmp_path)


def _sblimp_dir(root: Path, rows: list[tuple[str, str, str, str, int]]) -> Path:
    """A syntactic/dev directory: ``(id, voice, type, subtype, correct)`` rows, a short wav each."""
    d = root / "syntactic" / "dev"
    d.mkdir(parents=True)
    gold = []
    for n, (pid, voice, typ, sub, ok) in enumerate(rows):
        sf.write(d / f"f{n}.wav", np.full(1600, 0.01 * (n + 1), np.float32), 16000)
        gold.append(dict(filename=f"f{n}", id=pid, voice=voice, type=typ, subtype=sub,
                         transcription=f"sentence {n}", correct=ok))  # fmt: skip
    _gold(d / "gold.csv", gold)
    return d


def test_sblimp_keys_pairs_by_type_subtype_and_id(tmp_path):
    """BLiMP ids restart in every subtype: the same id in two subtypes is two pairs (as the
    ZeroSpeech 2021 syntactic evaluator groups them), not one that overwrites the other."""
    rows = [(pid, v, "agreement", sub, ok) for sub in ("det_noun", "subj_verb") for pid in ("0", "1")
            for v in ("en-us", "en-gb") for ok in (1, 0)]  # fmt: skip
    d = _sblimp_dir(tmp_path, rows)
    pairs = read_benchmark("sblimp", tmp_path)
    assert len(pairs) == 8  # 2 subtypes x 2 ids x 2 voices: every row of gold.csv in one pair
    assert {p.pos.name for p in pairs} | {p.neg.name for p in pairs} == {f"f{n}.wav" for n in range(16)}  # fmt: skip
    keys = sorted({p.key for p in pairs})
    assert keys == ["agreement/det_noun/0", "agreement/det_noun/1", "agreement/subj_verb/0", "agreement/subj_verb/1"]  # fmt: skip
    assert all(p.pos_text != p.neg_text for p in pairs) and str(d) in str(pairs[0].pos.parent)


def test_a_duplicate_row_is_refused_naming_the_file_and_row(tmp_path):
    rows = [("0", "en-us", "agreement", "det_noun", 1), ("0", "en-us", "agreement", "det_noun", 0),
            ("0", "en-us", "agreement", "det_noun", 1)]  # fmt: skip
    d = _sblimp_dir(tmp_path / "syn", rows)
    with pytest.raises(BenchmarkError) as err:
        read_benchmark("sblimp", tmp_path / "syn")
    msg = str(err.value)
    assert msg == (
        f"{d / 'gold.csv'}: line 4 repeats the correct row of type 'agreement', subtype 'det_noun', "
        "id '0', voice 'en-us' (line 2); each key and voice has one pair"
    )
    lex = tmp_path / "lex" / "lexical" / "dev"
    lex.mkdir(parents=True)
    for n in range(3):
        sf.write(lex / f"w{n}.wav", np.zeros(1600, np.float32), 16000)
    _gold(lex / "gold.csv", [dict(filename=f"w{n}", id="p0", voice="en-us", frequency=3, correct=ok)
                             for n, ok in enumerate((1, 0, 0))])  # fmt: skip
    with pytest.raises(BenchmarkError, match=r"gold.csv: line 4 repeats the incorrect row of id 'p0', voice 'en-us' \(line 3\)"):  # fmt: skip
        read_benchmark("swuggy", tmp_path / "lex")


def _reference_accuracy(bundle_dir: Path, pairs, conv: Conventions, task: str) -> float:
    """Each file tokenized alone, the slow scorer, then ZeroSpeech averaging (voices, then keys)."""
    b = load(bundle_dir)
    tok = b.speech_tokenizer()
    units = lambda p: tok.encode_files([p]).ids[0].numpy()  # noqa: E731
    seq = lambda p: speech_sequence(b.vocab, "units", units(p), task)  # noqa: E731
    pos = reference_scores(b.model, b.vocab, [seq(p.pos) for p in pairs], conv)
    neg = reference_scores(b.model, b.vocab, [seq(p.neg) for p in pairs], conv)
    s = pair_scores(pos, neg)
    keys = sorted({p.key for p in pairs})
    return float(
        np.mean([np.mean([s[i] for i, p in enumerate(pairs) if p.key == k]) for k in keys])
    )


@pytest.mark.parametrize(
    ("bench", "data", "flags"),
    [
        ("swuggy", "zr2021", []),
        ("sblimp", "zr2021", ["--normalize", "sum"]),
        ("sstorycloze", "cloze", ["--softmax", "modality"]),
        ("salmon", "salmon", ["--task", "continue"]),
    ],
)
def test_eval_slm_matches_the_slow_reference(bench, data, flags, request, train_bundle, tmp_path):
    root = request.getfixturevalue(data)
    out = tmp_path / "r.json"
    assert main(["eval-slm", str(train_bundle), "--benchmark", bench, "--data", str(root), "--out", str(out),
                 "--batch-size", "3", *flags]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    conv = Conventions(
        res["conventions"]["normalize"],
        res["conventions"]["softmax"],
        res["conventions"]["codebooks"],
    )
    assert res["conventions"]["task"] == ("continue" if "--task" in flags else "speech")
    assert (conv.normalize, conv.softmax) == (
        "sum" if "sum" in flags else "mean",
        "modality" if "modality" in flags else "full",
    )
    pairs = read_benchmark(bench, root)
    assert res["n_pairs"] == len(pairs)
    assert res["accuracy"] == pytest.approx(
        _reference_accuracy(train_bundle, pairs, conv, res["conventions"]["task"])
    )
    if bench == "swuggy":
        assert (
            set(res["by_vocab"]) == {"oov", "in_vocab"} and res["by_vocab"]["oov"]["n_pairs"] == 2
        )
    if bench == "sblimp":
        assert set(res["by_type"]) == {"agreement", "word_order"}


@pytest.mark.parametrize("variant", ["speech-text", "text-speech", "text"])
def test_cross_modal_story_cloze(variant, cloze, train_bundle, tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval-slm", str(train_bundle), "--benchmark", "sstorycloze", "--data", str(cloze),
                 "--variant", variant, "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert res["conventions"]["variant"] == variant and res["n_pairs"] == 2
    assert res["conventions"]["task"] == ("text" if variant == "text" else "interleave")
    if (
        variant == "text"
    ):  # T->T against the slow reference: the ending's text ids after the context's
        b, conv = load(train_bundle), Conventions()
        enc = lambda t: np.array(b.tokenizer.encode(" " + t, add_special_tokens=False))  # noqa: E731
        pairs = read_benchmark("sstorycloze", cloze)
        ll = [reference_scores(b.model, b.vocab, [text_sequence(b.vocab, enc(p.context_text), enc(e))], conv)[0]
              for p in pairs for e in (p.pos_text, p.neg_text)]  # fmt: skip
        assert res["accuracy"] == pytest.approx(float(pair_scores(ll[0::2], ll[1::2]).mean()))
    assert 0.0 <= res["accuracy"] <= 1.0


def test_eval_slm_errors_are_one_line(train_bundle, zr2021, tmp_path, capsys):
    assert (
        main(
            [
                "eval-slm",
                str(train_bundle),
                "--benchmark",
                "sblimp",
                "--data",
                str(zr2021),
                "--variant",
                "text",
            ]
        )
        == 1
    )
    assert "story cloze only" in capsys.readouterr().err
    assert (
        main(["eval-slm", str(train_bundle), "--benchmark", "swuggy", "--data", str(tmp_path)]) == 1
    )
    assert "gold.csv" in capsys.readouterr().err
