"""synth-minimal-pairs: published layouts that eval-slm reads, held-out texts, valid pseudo-words."""

from __future__ import annotations

import csv
import json
import random

import soundfile as sf

from tokunify.cli import main
from tokunify.data.corpus import grammar
from tokunify.data.corpus.minimal_pairs import (
    PHENOMENA,
    lexical_pairs,
    syntactic_pairs,
    topic_pairs,
)
from tokunify.eval.slm.benchmarks import read_benchmark


def test_pseudo_words_keep_slots_and_leave_the_lexicon():
    lexicon = sorted(grammar.vocabulary())
    pairs = lexical_pairs(lexicon, 80, random.Random(0))
    assert len(pairs) == 80
    for w, nw in pairs:
        assert nw not in lexicon and nw != w and len(nw) >= 3
        assert (w[0] in "aeiouy") == (nw[0] in "aeiouy")  # the first slot keeps its kind


def test_one_word_training_utterances_are_not_lexical_items():
    lexicon = sorted(grammar.vocabulary())
    words = {
        w for w, _ in lexical_pairs(lexicon, 10_000, random.Random(0), exclude={"five", "seven"})
    }
    assert "five" not in words and "seven" not in words and "eight" in words


def test_syntactic_pairs_cover_four_phenomena_and_skip_excluded():
    rng = random.Random(1)
    first = syntactic_pairs(5, rng, set())
    exclude = {good for _, good, _ in first}
    pairs = syntactic_pairs(5, random.Random(1), exclude)
    assert sorted({p for p, _, _ in pairs}) == sorted(PHENOMENA) and len(PHENOMENA) >= 4
    assert not exclude & {good for _, good, _ in pairs}
    for _, good, bad in pairs:
        assert good != bad and abs(len(good.split()) - len(bad.split())) <= 1


def test_topic_endings_come_from_other_templates():
    g = grammar.Grammar(3)
    sents = [g.statement() for _ in range(300)]
    for ctx, end, foreign in topic_pairs(sents, 30, random.Random(0), set(), by_template=True):
        assert f"{ctx} {end}" in sents and end != foreign


def test_synth_minimal_pairs_layouts_and_hold_out(tmp_path):
    g = grammar.Grammar(0)
    train = [g.statement() for _ in range(400)] + [
        "five",
        "the sky is blue",
    ]  # one-word answers exist
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    out = tmp_path / "mp"
    assert main(["synth-minimal-pairs", "--out", str(out), "--lexical", "6", "--syntactic", "2", "--topic", "4",
                 "--voices", "en-us", "en-us+f2", "--exclude", str(tmp_path / "train.txt")]) == 0  # fmt: skip
    lex = read_benchmark("swuggy", out)
    syn = read_benchmark("sblimp", out)
    top = read_benchmark("tstorycloze", out / "tstorycloze")
    assert (len(lex), len(syn), len(top)) == (6, 8, 4)
    assert sorted({p.groups["type"] for p in syn}) == sorted(PHENOMENA)
    train_set, counts = set(train), {w for t in train for w in t.split()}
    rows = list(csv.DictReader((out / "lexical" / "dev" / "gold.csv").read_text().splitlines()))
    for r in rows:  # frequency = the word's count in the excluded training texts
        if r["correct"] == "1":
            assert (int(r["frequency"]) > 0) == (r["word"] in counts)
    for p in [*lex, *syn]:
        assert p.pos_text not in train_set and p.neg_text not in train_set
    stories = [
        json.loads(x) for x in (out / "tstorycloze" / "texts.jsonl").read_text().splitlines()
    ]
    for s in stories:
        assert f"{s['context']} {s['correct']}" not in train_set
    # both members of a pair: the same voice (same gold voice; same sample rate)
    for p in [*lex, *syn]:
        assert p.pos.name.split("_")[1] == p.neg.name.split("_")[1]
        assert sf.info(p.pos).samplerate == sf.info(p.neg).samplerate == 16000
    assert top[0].context_audio is not None and top[0].neg_ending_audio is not None


def test_a_benchmark_of_zero_pairs_is_left_out(tmp_path):
    out = tmp_path / "mp"
    assert main(["synth-minimal-pairs", "--out", str(out), "--lexical", "2", "--syntactic", "0",
                 "--topic", "1", "--voices", "en-us"]) == 0  # fmt: skip
    assert len(read_benchmark("swuggy", out)) == 2
    assert not (out / "syntactic").exists()
    assert (out / "tstorycloze" / "texts.jsonl").is_file()
