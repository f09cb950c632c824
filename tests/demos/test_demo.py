"""The quick demo end to end: every artifact, metrics in range, loss fell, TTS audio plausible."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import yaml

from tokunify.cli import main
from tokunify.demos.common import corpus_workers
from tokunify.demos.default import MIN_TRAIN_S, SETTINGS, demo_train_budget

KEYS = ["asr_wer", "asr_cer", "asr_wer_unseen_voice", "tts_roundtrip_wer", "resynth_unit_error", "s2s_exact_match",
        "s2s_wer", "baseline_resynth_unit_error", "elapsed_s", "train_steps", "n_train_utts", "n_test_utts"]  # fmt: skip


def test_quick_demo(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in KEYS:
        assert isinstance(m[k], (int, float)) and np.isfinite(m[k]) and m[k] >= 0, k
    assert m["s2s_exact_match"] <= 1 and m["n_train_utts"] >= 300 and m["n_test_utts"] >= 60
    assert m["eval"]["test_s2s"]["s2s_pairs"] == 10  # every test_s2s question was asked
    assert (
        json.loads((out / "bundle" / "tokunify.json").read_text())["vocoders"]["units"]["kind"]
        == "unit2mel"
    )
    assert m["train_loss_last"] < 0.6 * m["train_loss_first"]
    # --quick trains its fixed steps (no time budget); the config says so
    assert m["train_budget_s"] == 0 and m["train_steps"] == m["train_steps_max"]
    assert yaml.safe_load((out / "train.yaml").read_text())["budget_minutes"] == 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4  # loss curves + 3 spectrograms (matplotlib)
    assert "<audio" in html and "asr_wer" in html and "untrained (chance)" in html
    # speech-LM minimal pairs: trained and untrained bundle, per-phenomenon table, held-out texts
    for k in ("slm_lexical_acc", "slm_syntactic_acc", "slm_topic_acc"):
        assert 0.0 <= m[k] <= 1.0 and 0.0 <= m["baseline_" + k] <= 1.0, k
    assert len(m["slm_syntactic_by_type"]) >= 4 and m["slm_n_pairs"]["lexical"] == 40
    assert m["slm_conventions"]["task"] == "continue"
    train_texts = set((out / "corpus" / "train_texts.txt").read_text().splitlines())
    gold = (out / "minimal_pairs" / "syntactic" / "dev" / "gold.csv").read_text().splitlines()[1:]
    assert gold and not {row.split(",")[5] for row in gold} & train_texts
    samples = json.loads((out / "samples" / "samples.json").read_text())
    tts = [s for s in samples if s["kind"] == "tts"]
    assert len(tts) == 3
    for s in tts:
        wav, sr = sf.read(out / "samples" / s["wav"])
        seconds = len(wav) / sr
        words = len(s["text"].split())
        assert 0.1 * words < seconds < 2.0 * words, (s, seconds)  # espeak speaks ~0.3 s per word
        assert np.sqrt(np.mean(wav**2)) > 1e-3  # not silent
    assert (out / "bundle" / "vocab.json").is_file() and (
        out / "bundle" / "vocoders" / "units" / "config.json"
    ).is_file()
    assert (
        main(
            [
                "generate",
                str(out / "bundle"),
                "--task",
                "tts",
                "--input",
                "the cat",
                "--out",
                str(tmp_path / "g"),
                "--max-new-tokens",
                "50",
            ]
        )
        == 0
    )


def test_default_demo_trains_for_what_its_budget_leaves():
    """The default demo's training time: its 600-s budget less the stages before training and the
    reserve for those after it, never under MIN_TRAIN_S; --quick has no budget (fixed steps)."""
    s = SETTINGS["default"]
    assert s["budget_s"] == 600
    assert demo_train_budget(s, 80.0) == pytest.approx(600 - 80 - s["after_train_s"])
    assert demo_train_budget(s, 550.0) == MIN_TRAIN_S
    assert demo_train_budget(SETTINGS["quick"], 80.0) == 0


def test_default_demo_synthesizes_its_corpus_in_up_to_4_processes():
    assert corpus_workers(quick=False) == min(4, os.cpu_count() or 1)
    assert corpus_workers(quick=True) == 1
