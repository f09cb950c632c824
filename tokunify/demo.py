"""`tokunify demo`: the offline end-to-end run, through the same subcommands users run.

corpus (espeak-ng) -> SentencePiece + mel-unit k-means -> tokenize -> extend a from-scratch model ->
train (continue, asr, tts, s2s, text, interleave) -> train a CPU vocoder (unit2mel) -> eval on held-out sentences
(seen voices, and one unseen voice) -> held-out speech-LM minimal pairs (lexical, syntactic, topic) scored
for the trained bundle and the same bundle before training -> samples -> metrics.json + report.html
(tokunify.demo_report).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from tokunify.cli import main as cli
from tokunify.demo_report import write_report

SETTINGS: dict[str, dict[str, Any]] = {
    # ~2.5 minutes on a 2-core CPU: the CI smoke run.
    "quick": dict(
        utts=400,
        test=40,
        k=64,
        preset="llama-tiny",
        steps=250,
        steps_bf16=250,
        batch=8,
        seq_len=256,
        lr=3e-3,
        voc_minutes=0.4,
        voc_steps=200,
        eval_utts=30,
        voices=6,
        lda_dim=32,
        s2s_pairs=10,
        slm_lexical=40,
        slm_syntactic=10,
        slm_topic=20,
        budget_s=0,
        after_train_s=0,
    ),
    # <= 10 minutes on a 2-core CPU.
    "default": dict(
        utts=16000,
        test=200,
        k=128,
        preset="llama-small",
        steps=800,
        steps_bf16=1000,
        batch=8,
        seq_len=512,
        lr=2e-3,
        voc_minutes=1.0,
        voc_steps=20000,
        eval_utts=100,
        voices=16,
        lda_dim=32,
        s2s_pairs=50,
        # ~60 CPU-s for synthesis + scoring of both bundles (200/50/100 pairs took 103 CPU-s)
        slm_lexical=120,
        slm_syntactic=30,
        slm_topic=60,
        # The whole demo's wall-clock budget: training gets what the stages before it left, less
        # after_train_s for everything after its loop (its setup and final save, the 1-minute
        # vocoder, evals, minimal pairs, samples), so a slower CPU trains fewer steps (to the same
        # LR floor) instead of overrunning. See demo_train_budget.
        budget_s=600,
        after_train_s=125,
    ),
}
MIXTURE = {"asr": 0.35, "tts": 0.4, "s2s": 0.08, "continue": 0.05, "text": 0.05, "interleave": 0.07}


@dataclass
class DemoArgs:
    """The offline end-to-end demo: builds a corpus, trains everything, evaluates, writes a report."""

    out: str = "demo_out"
    """Output directory (metrics.json, report.html, samples/, bundle/)."""
    quick: bool = False
    """The ~3-minute version (smaller corpus, model and budgets)."""
    seed: int = 0
    """Seed."""
    units: Literal["lda", "ssl"] = "lda"
    """Unit front end: lda (MFCC + LDA on espeak's phone alignment, supervised) or ssl (HuBERT
    iterations on the audio alone, no alignment: tokunify/demo_ssl.py)."""
    instruct: bool = False
    """Run the instruct demo instead (chat, instructions, modal invariance, few-shot ASR; its own
    budget: tokunify/demo_instruct.py)."""


def run_demo(args: DemoArgs) -> dict[str, Any]:
    import torch

    if args.instruct:
        from tokunify.demo_instruct import run_instruct_demo

        return run_instruct_demo(args)
    t0 = time.perf_counter()
    s = SETTINGS["quick" if args.quick else "default"]
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    times: dict[str, float] = {}
    step = make_step(times)
    front_end(step, out, s, args)
    corpus = out / "corpus"
    # bf16 autocast where the CPU computes bf16 natively (1.6x tokens/s here, same losses): more
    # steps fit the time budget. Elsewhere fp32 with fewer steps.
    from tokunify.train.loop import cpu_has_native_bf16

    precision = "bf16" if cpu_has_native_bf16() else "no"
    steps = s["steps_bf16"] if precision == "bf16" else s["steps"]
    # the SSL stages of --units ssl are outside the budget (README)
    train_s = demo_train_budget(s, time.perf_counter() - t0 - times.get("ssl units", 0.0))
    train_cfg = {
        "bundle": str(out / "bundle_init"), "out": str(out / "lm"), "steps": steps, "batch_size": s["batch"], "seed": args.seed,
        "eval_every": max(50, steps // 5), "save_every": 0, "log_every": 10, "progress": False,
        "data": {"stores": [str(out / "stores" / "train")], "eval_stores": [str(out / "stores" / "test_seen")], "seq_len": s["seq_len"], "mixture": MIXTURE},
        "optim": {"lr": s["lr"], "warmup_steps": max(20, steps // 20), "weight_decay": 0.01}, "mixed_precision": precision,
        "eval_examples": 32, "budget_minutes": train_s / 60,
    }  # fmt: skip
    (out / "train.yaml").write_text(yaml.safe_dump(train_cfg, sort_keys=False))
    step("train", ["train", str(out / "train.yaml")])
    step("train vocoder", ["train-vocoder", str(out / "stores" / "train"), "--out", str(out / "vocoder"), "--arch", "unit2mel",
                            "--steps", str(s["voc_steps"]), "--max-minutes", str(s["voc_minutes"]), "--max-utterances", "3000",
                            "--batch-size", "16", "--segment-frames", "64", "--lr", "2e-3", "--log-every", "50", "--save-every", "100000"])  # fmt: skip
    bundle = out / "bundle"
    shutil.copytree(out / "lm" / "final", bundle)
    step("attach vocoder", ["attach-vocoder", str(bundle), str(out / "vocoder" / "vocoder")])
    torch.manual_seed(args.seed)
    step("eval", ["eval", str(bundle), "--store", str(out / "stores" / "test_seen"), str(out / "stores" / "test_unseen"),
                  "--out", str(out / "eval"), "--max-utts", str(s["eval_utts"]), "--tasks", "asr", "tts", "resynth"])  # fmt: skip
    step("eval s2s", ["eval", str(bundle), "--store", str(out / "stores" / "test_s2s"), "--out", str(out / "eval_s2s"),
                      "--max-utts", str(2 * s["s2s_pairs"]), "--tasks", "s2s"])  # fmt: skip
    slm = slm_benchmarks(out, s, corpus, step)
    results = json.loads((out / "eval" / "eval.json").read_text())
    results.update(json.loads((out / "eval_s2s" / "eval.json").read_text()))
    t = time.perf_counter()
    baseline = griffin_lim_baseline(out, s["eval_utts"])
    times["baseline"] = time.perf_counter() - t
    t = time.perf_counter()
    samples = write_samples(out, bundle, corpus)
    times["samples"] = time.perf_counter() - t
    log = [json.loads(line) for line in (out / "lm" / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in log if "loss" in r]
    seen, unseen, s2s = results["test_seen"], results["test_unseen"], results["test_s2s"]
    from tokunify.store import TokenStore

    metrics = {
        "asr_wer": seen.get("asr_wer"), "asr_cer": seen.get("asr_cer"), "asr_wer_unseen_voice": unseen.get("asr_wer"),
        "tts_roundtrip_wer": seen.get("tts_roundtrip_wer"), "resynth_unit_error": seen.get("resynth_unit_error"),
        "resynth_frame_error": seen.get("resynth_frame_error"), "s2s_exact_match": s2s.get("s2s_exact_match"), "s2s_wer": s2s.get("s2s_wer"),
        "baseline_resynth_unit_error": baseline["unit_error"], "baseline_resynth_frame_error": baseline["frame_error"],
        "train_loss_first": train_rows[0]["loss"], "train_loss_last": train_rows[-1]["loss"],
        "elapsed_s": time.perf_counter() - t0, "train_steps": train_rows[-1]["step"], "train_steps_max": steps,
        "train_budget_s": train_s, "train_seconds": train_rows[-1]["train_seconds"],
        "n_train_utts": len(TokenStore(out / "stores" / "train")), "n_test_utts": seen["n_utts"] + unseen["n_utts"] + s2s["n_utts"],
        "mode": "quick" if args.quick else "default", "units": args.units, "precision": precision, "stage_seconds": times, "eval": results,
        **slm,
    }  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(out, metrics, log, samples)
    print(f"\n=== done in {metrics['elapsed_s']:.0f} s: {out}/report.html")
    for k in (
        "asr_wer",
        "asr_cer",
        "asr_wer_unseen_voice",
        "tts_roundtrip_wer",
        "resynth_unit_error",
        "baseline_resynth_unit_error",
        "s2s_exact_match",
        "slm_lexical_acc",
        "baseline_slm_lexical_acc",
        "slm_syntactic_acc",
        "baseline_slm_syntactic_acc",
        "slm_topic_acc",
        "baseline_slm_topic_acc",
    ):
        print(
            f"  {k}: {metrics[k]:.3f}" if isinstance(metrics[k], float) else f"  {k}: {metrics[k]}"
        )
    return metrics


def corpus_workers(quick: bool) -> int:
    """Processes for synth-corpus: up to 4 on the default corpus (63 s -> 37 s measured on 2
    cores), 1 on --quick's small one (spawning would cost more than it saves)."""
    return 1 if quick else min(4, os.cpu_count() or 1)


MIN_TRAIN_S = 120.0
"""The least training time the default demo gives itself, however slow the stages before were."""


def demo_train_budget(s: dict[str, Any], elapsed_s: float) -> float:
    """Seconds of training loop (train's ``budget_minutes``) that keep the demo within its budget
    after ``elapsed_s`` spent before training; 0 (no budget: the fixed steps) where the setting
    has none (--quick). The caller leaves out the time of ``--units ssl``'s SSL stages, which
    that option adds to the budget (README)."""
    if not s["budget_s"]:
        return 0.0
    return max(MIN_TRAIN_S, s["budget_s"] - elapsed_s - s["after_train_s"])


Step = Callable[[str, list[str]], None]


def make_step(times: dict[str, float]) -> Step:
    """``step(name, argv)``: run one `tokunify` subcommand, fail loudly, record its seconds."""

    def step(name: str, argv: list[str]) -> None:
        t = time.perf_counter()
        print(f"\n=== {name}: tokunify {' '.join(argv)}")
        if cli(argv) != 0:
            raise RuntimeError(f"demo step {name!r} failed")
        times[name] = time.perf_counter() - t

    return step


def front_end(step: Step, out: Path, s: dict[str, Any], args: DemoArgs) -> None:
    """corpus -> text tokenizer -> units -> stores (train, test_seen, test_unseen, test_s2s) ->
    the untrained bundle ``out/bundle_init`` (also the front end of ``demo --instruct``)."""
    from tokunify.corpus.synth import TRAIN_VOICES

    corpus = out / "corpus"
    workers = corpus_workers(args.quick)
    step("corpus", ["synth-corpus", "--out", str(corpus), "--utterances", str(s["utts"]), "--test-utterances", str(s["test"]),
                    "--voices", *TRAIN_VOICES[: s["voices"]], "--s2s-pairs", str(s["s2s_pairs"]), "--seed", str(args.seed),
                    "--workers", str(workers)])  # fmt: skip
    step(
        "text tokenizer",
        [
            "train-text-tokenizer",
            str(corpus / "train_texts.txt"),
            "--out",
            str(out / "text_tokenizer"),
            "--vocab-size",
            "512",
        ],
    )
    if args.units == "ssl":
        from tokunify.demo_ssl import build_ssl_units

        build_ssl_units(step, corpus, out, args.quick, args.seed, s["k"])
    else:
        feats = out / "mel_units.yaml"
        feats.write_text(
            yaml.safe_dump(
                {
                    "kind": "mel_units",
                    "features": {
                        "kind": "mfcc",
                        "n_mfcc": 20,
                        "deltas": False,
                        "cmvn": "utterance",
                        "splice": 4,
                    },
                    "dedup": True,
                }
            )
        )
        step(
            "unit k-means",
            [
                "train-kmeans",
                str(corpus / "train.jsonl"),
                "--tokenizer",
                str(feats),
                "--k",
                str(s["k"]),
                "--out",
                str(out / "units"),
                "--max-utterances",
                "1500",
                "--lda-dim",
                str(s["lda_dim"]),
            ],
        )
    units_cfg = out / "units" / "tokenizer.yaml"
    for split in ("train", "test_seen", "test_unseen", "test_s2s"):
        step(f"tokenize {split}", ["tokenize", str(corpus / f"{split}.jsonl"), "--out", str(out / "stores" / split), "--tokenizer", f"units={units_cfg}",
                                   "--text-tokenizer", str(out / "text_tokenizer"), "--chunk-size", "500", "--no-progress"])  # fmt: skip
    step("extend", ["extend", f"scratch:{s['preset']}", "--text-tokenizer", str(out / "text_tokenizer"), "--units", str(s["k"]),
                    "--speech-tokenizer", f"units={units_cfg}", "--out", str(out / "bundle_init")])  # fmt: skip


# Minimal-pair sets of synth-minimal-pairs -> (eval-slm benchmark, path under the pairs dir)
SLM_SETS = {
    "lexical": ("swuggy", "."),
    "syntactic": ("sblimp", "."),
    "topic": ("tstorycloze", "tstorycloze"),
}
SLM_TASK = "continue"  # the demo trains no unconditional `speech` task; `continue` is its speech LM


def slm_benchmarks(out: Path, s: dict[str, Any], corpus: Path, step: Any) -> dict[str, Any]:
    """Held-out minimal pairs (no text of train_texts.txt), scored for the trained bundle and for
    the same bundle before training (the chance-level baseline)."""
    from tokunify.corpus.synth import TRAIN_VOICES

    pairs = out / "minimal_pairs"
    step("minimal pairs", ["synth-minimal-pairs", "--out", str(pairs), "--exclude", str(corpus / "train_texts.txt"),
                           "--voices", *TRAIN_VOICES[: min(4, s["voices"])], "--lexical", str(s["slm_lexical"]),
                           "--syntactic", str(s["slm_syntactic"]), "--topic", str(s["slm_topic"])])  # fmt: skip
    res: dict[str, Any] = {}
    for prefix, bundle in (("", out / "bundle"), ("baseline_", out / "bundle_init")):
        for name, (bench, sub) in SLM_SETS.items():
            path = out / "slm" / f"{prefix or 'trained_'}{name}.json"
            step(f"slm {prefix}{name}", ["eval-slm", str(bundle), "--benchmark", bench, "--data", str(pairs / sub),
                                         "--task", SLM_TASK, "--out", str(path)])  # fmt: skip
            r = json.loads(path.read_text())
            res[f"{prefix}slm_{name}_acc"] = r["accuracy"]
            res.setdefault("slm_n_pairs", {})[name] = r["n_pairs"]
            res["slm_conventions"] = r["conventions"]
            if name == "syntactic":
                res[f"{prefix}slm_syntactic_by_type"] = {
                    k: v["accuracy"] for k, v in r["by_type"].items()
                }
    return res


def griffin_lim_baseline(out: Path, n: int) -> dict[str, float]:
    """Resynthesis error of the no-training baseline (mean log-mel per unit + the same Griffin-Lim
    as the trained unit2mel vocoder), on the same test utterances as `eval`."""
    from tokunify.audio import load as load_audio
    from tokunify.generate.evaluate import frame_error, unit_edit_error
    from tokunify.store import TokenStore
    from tokunify.tokenizers.base import tokenizer_from_config
    from tokunify.vocoder.griffinlim import MeanMelVocoder

    train, test = TokenStore(out / "stores" / "train"), TokenStore(out / "stores" / "test_seen")
    items = []
    for i in range(min(len(train), 600)):
        r = train[i]
        items.append((r.streams["units"], r.durations["units"], load_audio(r.audio, 16000)))
    k = train.meta.streams["units"].cardinality
    voc = MeanMelVocoder.fit(items, k)
    recs = [test[i] for i in range(min(n, len(test)))]
    units = [r.streams["units"].astype(np.int64) for r in recs]
    durs = [r.durations["units"].astype(np.int64) for r in recs]
    wavs = voc(units, durs)
    cfg = yaml.safe_load((out / "units" / "tokenizer.yaml").read_text())
    tok = tokenizer_from_config(cfg, base_dir=out / "units")
    res = tok.encode(wavs, sample_rate=16000)
    hyp_u = [x.numpy() for x in res.ids]
    hyp_d = [x.numpy() for x in res.durations]
    return {
        "unit_error": unit_edit_error(units, hyp_u),
        "frame_error": frame_error(
            [np.repeat(u, d) for u, d in zip(units, durs, strict=True)],
            [np.repeat(u, d) for u, d in zip(hyp_u, hyp_d, strict=True)],
        ),
    }


def write_samples(out: Path, bundle: Path, corpus: Path) -> list[dict[str, Any]]:
    import soundfile as sf
    import torch

    from tokunify.generate.generator import Generator
    from tokunify.manifest import read_manifest

    torch.manual_seed(0)
    gen = Generator(bundle)
    d = out / "samples"
    d.mkdir(exist_ok=True)
    test = list(read_manifest(corpus / "test_seen.jsonl"))
    statements = [e for e in test if "s2s_target" not in e.extra and "answer_to" not in e.extra][:3]
    questions = [e for e in read_manifest(corpus / "test_s2s.jsonl") if "s2s_target" in e.extra][:2]
    samples: list[dict[str, Any]] = []
    for i, e in enumerate(statements):
        r = gen.generate("tts", [e.text])[0]
        name = f"tts_{i}.wav"
        sf.write(
            d / name,
            r.audio if r.audio is not None else np.zeros(1600, np.float32),
            gen.sample_rate,
        )
        samples.append({"kind": "tts", "text": e.text, "wav": name})
    for i, e in enumerate(statements[:2]):
        shutil.copy(e.audio, d / f"input_{i}.wav")
        units = gen.encode_audio([e.audio])[0]
        wav = gen.decode([units])[0]  # predicted durations
        sf.write(d / f"resynth_{i}.wav", wav, gen.sample_rate)
        asr = gen.generate("asr", [e.audio])[0].text
        samples.append({"kind": "input", "text": e.text, "wav": f"input_{i}.wav", "asr": asr})
        samples.append({"kind": "resynthesis", "text": e.text, "wav": f"resynth_{i}.wav"})
    for i, e in enumerate(questions):
        shutil.copy(e.audio, d / f"question_{i}.wav")
        r = gen.generate("s2s", [e.audio])[0]
        sf.write(
            d / f"answer_{i}.wav",
            r.audio if r.audio is not None else np.zeros(1600, np.float32),
            gen.sample_rate,
        )
        heard = (
            gen.generate("asr", [r.units])[0].text if r.units is not None and len(r.units) else ""
        )
        samples.append({"kind": "question", "text": e.text, "wav": f"question_{i}.wav"})
        samples.append(
            {"kind": "answer", "text": f"(ASR of the answer) {heard}", "wav": f"answer_{i}.wav"}
        )
    (d / "samples.json").write_text(json.dumps(samples, indent=2) + "\n")
    return samples
