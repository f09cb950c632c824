"""`tokunify synth-interleave`: span policies, the store it writes (spans, units, words, QC,
metadata), resume/slices, `inspect`, and training on it with the `synth_interleave` task."""

from __future__ import annotations

import json
import os
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import UNITS_K, sentences
from tokunify.cli import main
from tokunify.core.vocab import DEFAULT_TASKS, UnifiedVocab, units_stream
from tokunify.data.spans import SPAN_POLICIES, make_policy, read_documents, word_bounds
from tokunify.data.store import StoreMeta, TokenStore
from tokunify.tasks import TaskOptions, Utterance, Word, make_task

DOCS = 10


@pytest.fixture(scope="module")
def synth_bundle(unit_tokenizer, sp_dir, tmp_path_factory) -> Path:
    """A tiny random bundle whose vocab has the synth_interleave tag (its TTS draws random units)."""
    out = tmp_path_factory.mktemp("synth-bundle") / "bundle"
    argv = ["extend", "scratch:llama-tiny", "--text-tokenizer", str(sp_dir), "--units", str(UNITS_K),
            "--speech-tokenizer", f"units={unit_tokenizer}", "--out", str(out),
            "--tasks", *DEFAULT_TASKS, "synth_interleave"]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    lines = sentences(DOCS, seed=3)
    lines[2] = "   "  # empty: rejected
    lines[5] = " ".join(["word"] * 50)  # over --max-words: rejected
    p = tmp_path_factory.mktemp("text") / "docs.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def synth(corpus: Path, bundle: Path, out: Path, *extra: str) -> int:
    return main(["synth-interleave", str(corpus), "--bundle", str(bundle), "--out", str(out),
                 "--chunk-size", "4", "--max-words", "20", "--max-units-per-word", "12",
                 "--no-progress", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def store(corpus, synth_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "store"
    assert synth(corpus, synth_bundle, out, "--verify-fraction", "0.5", "--max-wer", "0.9") == 0
    return out


@pytest.mark.parametrize("kind", sorted(SPAN_POLICIES))
def test_span_policies_alternate_cover_and_hit_the_speech_ratio(kind):
    rng = np.random.default_rng(0)
    for ratio in (0.2, 0.5, 0.8):
        policy = make_policy(kind, speech_ratio=ratio, mean=3.0, min=1, max=5)
        spoken = total = 0
        for _ in range(400):
            spans = policy.spans(40, rng)
            assert spans[0][0] == 0 and spans[-1][1] == 40
            assert all(a[1] == b[0] for a, b in pairwise(spans))
            assert all(a[2] != b[2] for a, b in pairwise(spans))
            spoken += sum(b - a for a, b, m in spans if m == "speech")
            total += 40
        assert abs(spoken / total - ratio) < 0.08, (kind, ratio, spoken / total)
    for start in ("text", "speech"):
        assert make_policy(kind, start=start).spans(9, rng)[0][2] == start
    assert make_policy(kind, speech_ratio=0.0).spans(5, rng) == [(0, 5, "text")]
    assert make_policy(kind, speech_ratio=1.0).spans(5, rng) == [(0, 5, "speech")]
    with pytest.raises(ValueError, match="speech-ratio"):
        make_policy(kind, speech_ratio=1.5)


def test_poisson_span_lengths_follow_the_mean():
    policy = make_policy("poisson", speech_ratio=0.5, mean=4.0, start="speech")
    rng = np.random.default_rng(1)
    lengths = [
        b - a for _ in range(300) for a, b, m in policy.spans(200, rng)[:-1] if m == "speech"
    ]
    assert abs(np.mean(lengths) - 4.0) < 0.3


def test_word_bounds_give_every_word_a_unit():
    b = word_bounds(("a", "elephant", "is"), 7)
    assert b[0] == 0 and b[-1] == 7 and np.all(np.diff(b) >= 1)
    assert np.diff(b)[1] == max(np.diff(b))  # the long word gets the spare units
    assert word_bounds(("x", "y"), 2).tolist() == [0, 1, 2]


def test_synth_interleave_task_follows_the_stored_spans():
    vocab = UnifiedVocab(text_size=20, streams=(units_stream("units", 10),),
                         tasks=(*DEFAULT_TASKS, "synth_interleave"))  # fmt: skip
    task = make_task("synth_interleave", vocab, TaskOptions())
    words = [Word(np.array([5]), {"units": np.zeros(0, np.int64)}),
             Word(np.array([6]), {"units": np.array([2, 2])}),
             Word(np.array([7]), {"units": np.array([4])}),
             Word(np.array([8]), {"units": np.zeros(0, np.int64)})]  # fmt: skip
    ids, mask = task.build(Utterance(words=words))
    v = vocab
    want = [v.bos, v.task("synth_interleave"), v.text_start, 5, v.text_end,
            v.stream_start("units"), *v.to_global("units", np.array([2, 2, 4])), v.stream_end("units"),
            v.text_start, 8, v.text_end, v.eos]  # fmt: skip
    assert ids.tolist() == [int(x) for x in want]
    assert mask[v.prefix_len :].all() and not mask[: v.prefix_len].any()


def test_store_records_spans_units_words_and_metadata(store, synth_bundle, capsys):
    st = TokenStore(store)
    meta = StoreMeta.load(store).provenance["synth_interleave"]
    assert len(st) == DOCS - 2 and st.rejects == 2
    rejects = "".join(p.read_text() for p in store.glob("rejects-*.jsonl"))
    assert "empty document" in rejects and "> --max-words 20" in rejects
    assert len(meta["bundle_hash"]) == 16 and meta["policy"]["kind"] == "poisson"
    assert meta["verify_fraction"] == 0.5 and meta["max_wer"] == 0.9
    assert StoreMeta.load(store).extra["synth_interleave"]["bundle"] == str(synth_bundle.resolve())
    stats = StoreMeta.load(store).extra["synth_interleave"]["stats"]
    assert stats["documents"] == DOCS - 2 and 0 < stats["speech_ratio"] < 1
    assert stats["verified_spans"] > 0 and 0 <= stats["kept_share"] <= 1
    vocab = UnifiedVocab.load(synth_bundle)
    rate = st.meta.streams["units"].frame_rate
    for r in st:
        units = r.streams["units"]
        spans = r.meta["spans"]
        assert r.meta["doc_kind"] == "synth_interleave" and r.text == " ".join(
            w for w, _, _ in r.words
        )
        assert spans[0][0] == 0 and spans[-1][1] == len(r.words)
        assert sum(s[4] - s[3] for s in spans) == len(units) and units.max(initial=0) < UNITS_K
        for a, b, m, u0, u1, _ in spans:
            pos = np.round(np.array([(s, e) for _, s, e in r.words[a:b]]) * rate)
            if m == "text":
                assert np.all(pos == u0)
            else:
                assert pos[0, 0] == u0 and pos[-1, 1] == u1 and np.all(pos[:, 1] > pos[:, 0])
        for name in ("tts", "asr", "text", "speech", "continue", "interleave"):
            assert not make_task(name, vocab).eligible(r)  # a synthetic document is no utterance
        assert make_task("synth_interleave", vocab).eligible(r)
    out = main(["inspect", str(store), "--examples", "0"])
    text = capsys.readouterr().out
    assert out == 0 and "synthetic interleaved documents: 8" in text
    assert f"speech ratio {stats['speech_ratio']:.3f}" in text and "per spoken word" in text


def test_max_wer_drops_spans_back_to_text(corpus, synth_bundle, tmp_path):
    out = tmp_path / "strict"
    assert synth(corpus, synth_bundle, out, "--verify-fraction", "1", "--max-wer", "0") == 0
    stats = StoreMeta.load(out).extra["synth_interleave"]["stats"]
    # a random TTS model: its ASR gets nothing right, so every verified span goes back to text
    assert stats["verified_spans"] > 0 and stats["speech_spans"] == 0
    assert stats["kept_share"] == 0 and stats["speech_ratio"] == 0
    assert all(len(r.streams["units"]) == 0 for r in TokenStore(out))


def test_slices_and_resume_give_the_single_run_store(corpus, synth_bundle, tmp_path, capsys):
    single, sliced = tmp_path / "single", tmp_path / "sliced"
    fast = ("--max-units-per-word", "4")  # short generations: this test is about the job
    assert synth(corpus, synth_bundle, single, *fast) == 0
    assert synth(corpus, synth_bundle, sliced, *fast, "--shard", "1/2") == 0
    assert "stats" not in StoreMeta.load(sliced).extra["synth_interleave"]  # not complete yet
    assert synth(corpus, synth_bundle, sliced, *fast, "--shard", "0/2") == 0
    files = sorted(p.name for p in single.iterdir())
    assert files == sorted(p.name for p in sliced.iterdir())
    assert all((single / f).read_bytes() == (sliced / f).read_bytes() for f in files)
    assert synth(corpus, synth_bundle, sliced, *fast) == 0  # a rerun of a complete store: no-op
    assert all((single / f).read_bytes() == (sliced / f).read_bytes() for f in files)
    # other settings, other documents (as many), another bundle on the same --out: refused in one line
    capsys.readouterr()
    assert synth(corpus, synth_bundle, sliced, *fast, "--speech-ratio", "0.3") != 0
    edited = tmp_path / "docs.txt"
    lines = corpus.read_text().splitlines()
    edited.write_text("\n".join([*lines[:-1], "an edited last document"]) + "\n")
    assert synth(edited, synth_bundle, sliced, *fast) != 0
    other = tmp_path / "other-bundle"
    shutil.copytree(synth_bundle, other)
    (other / "generation_config.json").write_text('{"note": "edited"}')
    assert synth(corpus, other, sliced, *fast) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith(f"tokunify synth-interleave: error: {sliced}: exists, made from other inputs") for e in err)  # fmt: skip
    assert "provenance.synth_interleave.policy.speech_ratio (0.5 -> 0.3)" in err[0]
    assert "provenance.manifest (" in err[1] and "synth_interleave" not in err[1]
    assert "provenance.synth_interleave.bundle_hash (" in err[2] and "manifest" not in err[2]
    shutil.copytree(synth_bundle, tmp_path / "same-bundle")  # a copy elsewhere: the same content
    assert synth(corpus, tmp_path / "same-bundle", sliced, *fast) == 0


def test_invalid_utf8_is_a_reject_naming_the_line(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_bytes(b"good words here\nbad \xff byte\nmore good words\n")
    rows = read_documents(p, "text", 20)
    assert [type(r).__name__ for r in rows] == ["Doc", "Reject", "Doc"]
    assert rows[1].reason == "line 2: not UTF-8 (invalid start byte at byte 4 of the line)"
    assert rows[2].words == ("more", "good", "words")
    j = tmp_path / "docs.jsonl"
    j.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    rows = read_documents(j, "text", 20)
    assert rows[0].words == ("fine",) and rows[1].reason.startswith("line 2: not UTF-8")


def test_store_trains_with_the_synth_interleave_task(store, synth_bundle, tmp_path):
    cfg = {"bundle": str(synth_bundle), "out": str(tmp_path / "run"), "steps": 3, "batch_size": 2,
           "save_every": 0, "eval_every": 0, "log_every": 1, "progress": False,
           "data": {"stores": [str(store)], "seq_len": 128, "eval_fraction": 0.0,
                    "mixture": {"synth_interleave": 1.0}},
           "optim": {"lr": 0.003, "warmup_steps": 1}}  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "train.yaml")]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    rows = [r for r in log if "loss" in r]
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    assert (tmp_path / "run" / "final" / "tokunify.json").is_file()


def test_ab_benchmark_runs_its_pipeline_on_a_tiny_setting(tmp_path):
    """benchmarks/synth_interleave_ab.py end to end (corpus, tokenizers, TTS bundle, both stores,
    both arms trained and scored) on its tiny setting, as a user runs it."""
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    work = tmp_path / "ab"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "synth_interleave_ab.py"), "--tiny",
         "--work", str(work), "--seeds", "0"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((work / "ab.json").read_text())
    rows = {r["arm"]: r for r in res["rows"]}
    assert set(rows) == {"text", "synth"} and res["n_facts"]["A"] > 0 and res["n_facts"]["B"] > 0
    for r in rows.values():
        for key in ("A S2S", "B S2S", "A S->T", "B S->T", "A T->T", "B T->T", "sWUGGY"):
            assert 0.0 <= r[key] <= 1.0
    assert rows["text"]["train tokens"] == rows["synth"]["train tokens"]  # the same budget
    assert res["synth_store"]["documents"] == res["n_facts"]["B"]
    assert "| synth | mean ± half-range |" in proc.stdout


def test_bad_input_is_one_line(corpus, synth_bundle, tmp_path, capsys):
    assert synth(tmp_path / "missing.txt", synth_bundle, tmp_path / "o") == 1
    assert synth(corpus, synth_bundle, tmp_path / "o", "--span-mean", "0.5") == 1
    assert synth(corpus, synth_bundle, tmp_path / "o", "--max-wer", "0.3") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("tokunify synth-interleave: error: ") for e in err)
    assert "missing.txt" in err[0] and "--span-mean" in err[1] and "--verify-fraction" in err[2]
