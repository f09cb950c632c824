"""`tokunify demo`: the offline end-to-end run, through the same subcommands users run.

corpus (espeak-ng) -> SentencePiece + mel-unit k-means -> tokenize -> extend a from-scratch model ->
train (continue, asr, tts, s2s, text, interleave) -> train a CPU vocoder (unit2mel) -> eval on held-out sentences
(seen voices, and one unseen voice) -> held-out speech-LM minimal pairs (lexical, syntactic, topic) scored
for the trained bundle and the same bundle before training -> samples -> metrics.json + report.html
(tokunify.demos.report).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tokunify.data.audio import load as load_audio
from tokunify.data.corpus.synth import TRAIN_VOICES
from tokunify.data.manifest import read_manifest
from tokunify.data.store import TokenStore
from tokunify.demos.common import DemoArgs, front_end, make_step
from tokunify.demos.report import write_report
from tokunify.eval.generative import frame_error, unit_edit_error
from tokunify.generate.generator import Generator
from tokunify.tokenizers.base import tokenizer_from_config
from tokunify.train.setup import cpu_has_native_bf16
from tokunify.vocoder.griffinlim import MeanMelVocoder

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


def run_default_demo(args: DemoArgs) -> dict[str, Any]:
    """``tokunify demo``: corpus -> tokenizers -> train -> eval -> samples and report into ``args.out``."""
    import torch

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
