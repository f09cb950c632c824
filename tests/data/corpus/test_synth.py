from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from tokunify.cli import main
from tokunify.data.corpus.espeak import Espeak, EspeakError
from tokunify.data.corpus.grammar import Grammar, vocabulary
from tokunify.data.manifest import read_manifest


def test_espeak_synthesis_and_word_times():
    e = Espeak()
    s = e.synthesize("the big dog ran home. what is seven plus two?", "en-us+m3")
    assert s.sample_rate == 22050 and len(s.audio) > s.sample_rate and np.abs(s.audio).max() > 0.05
    words = [w for w, _, _ in s.words]
    assert words == ["the", "big", "dog", "ran", "home", "what", "is", "seven", "plus", "two"]
    starts = [a for _, a, _ in s.words]
    assert starts == sorted(starts) and s.words[-1][2] <= len(s.audio) / s.sample_rate + 1e-6
    # phone alignment from phoneme events: ordered, contiguous, stress marks dropped
    phones = [p for p, _, _ in s.phones]
    assert len(phones) > 20 and {"b", "d", "g"} <= set(phones)
    assert not any("'" in p or "," in p for p in phones)
    assert all(a <= b for _, a, b in s.phones) and s.phones[-1][2] == len(s.audio) / s.sample_rate
    assert all(s.phones[i][2] == s.phones[i + 1][1] for i in range(len(s.phones) - 1))
    try:
        e.synthesize("x", "no-such-voice")
    except EspeakError as err:
        assert "no-such-voice" in str(err)
    else:
        raise AssertionError("unknown voice accepted")


def test_grammar():
    g = Grammar(1)
    assert len(vocabulary()) >= 200
    qa = [g.question() for _ in range(200)]
    assert any(q.startswith("what is") for q, _ in qa) and any("legs" in q for q, _ in qa)
    for q, a in qa:
        if q.startswith("what is") and "plus" in q:
            assert a  # spelled-out sum
    assert all(w in vocabulary() for s in [g.statement() for _ in range(300)] for w in s.split())


def test_synth_corpus_splits(tmp_path):
    assert (
        main(
            [
                "synth-corpus",
                "--out",
                str(tmp_path),
                "--utterances",
                "60",
                "--test-utterances",
                "12",
                "--voices",
                "en-us",
                "en-us+f2",
                "--heldout-voice",
                "en-us+m8",
            ]
        )
        == 0
    )
    train = list(read_manifest(tmp_path / "train.jsonl"))
    seen = list(read_manifest(tmp_path / "test_seen.jsonl"))
    unseen = list(read_manifest(tmp_path / "test_unseen.jsonl"))
    assert len(train) >= 60 and len(seen) >= 12 and len(unseen) >= 12
    train_texts = {e.text for e in train}
    assert (
        not {e.text for e in seen + unseen if "answer_to" not in e.extra} & train_texts
    )  # held-out sentences
    assert {e.speaker for e in train} <= {"en-us", "en-us+f2"} and {e.speaker for e in unseen} == {
        "en-us+m8"
    }
    ids = {e.id: e for e in train}
    pairs = [(e, ids[e.extra["s2s_target"]]) for e in train if "s2s_target" in e.extra]
    assert pairs and all(q.speaker == a.speaker for q, a in pairs)
    # test_s2s: training questions with their answers, spoken by the held-out voice only
    s2s = list(read_manifest(tmp_path / "test_s2s.jsonl"))
    s2s_ids = {e.id for e in s2s}
    questions = [e for e in s2s if "s2s_target" in e.extra]
    assert questions and len(s2s) == 2 * len(questions)
    assert all(q.extra["s2s_target"] in s2s_ids and q.text in train_texts for q in questions)
    assert {e.speaker for e in s2s} == {"en-us+m8"}
    wav, sr = sf.read(train[0].audio)
    assert sr == 16000 and train[0].words and train[0].words[-1][2] <= len(wav) / sr + 0.05
    assert (tmp_path / "train_texts.txt").read_text().count("\n") == len(train)
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["audio"].startswith(
        "wavs/"
    )
    assert all(len(e.extra["phones"]) > len(e.words) for e in train[:5])  # phone spans per row


def test_workers_write_the_planned_corpus(tmp_path):
    """The corpus is planned before it is synthesized: 2 worker processes write the same rows
    (ids, texts, voices, pairs, words) as 1, and every wav. (espeak's audio is not bit-identical
    from run to run even in one process, so the samples are not compared.)"""

    def run(name: str, workers: str) -> tuple[list[dict], list[str]]:
        out = tmp_path / name
        args = ["synth-corpus", "--out", str(out), "--utterances", "24", "--test-utterances", "4",
                "--voices", "en-us", "en-us+f2", "--s2s-pairs", "3", "--workers", workers]  # fmt: skip
        assert main(args) == 0
        rows = [json.loads(x) for s in ("train", "test_seen", "test_unseen", "test_s2s")
                for x in (out / f"{s}.jsonl").read_text().splitlines()]  # fmt: skip
        assert all(sf.info(out / r["audio"]).frames > 0 for r in rows)
        return rows, sorted(p.name for p in (out / "wavs").iterdir())

    one, two = run("a", "1"), run("b", "2")
    keys = ("id", "text", "speaker", "audio", "voice", "s2s_target", "answer_to")
    plan = [tuple(r.get(k) for k in keys) for r in one[0]]
    assert len(plan) >= 30 and plan == [tuple(r.get(k) for k in keys) for r in two[0]]
    assert [[w for w, _, _ in r["words"]] for r in one[0]] == [
        [w for w, _, _ in r["words"]] for r in two[0]
    ]
    assert one[1] == two[1] and len(one[1]) == len(plan)
