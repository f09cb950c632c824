"""Issue 16's A/B: do synthetic interleaved documents of text-only facts lift spoken QA (toy scale)?

The corpus grammar's question-answer facts (:mod:`tokunify.data.corpus.facts`) are split into A and B.
A is spoken (espeak, training voices: ASR, TTS, S2S question -> answer pairs, real interleaving);
A and B are both in a text-only corpus (one "question answer" document per fact, trained with the
``synth_interleave`` task at speech ratio 0, i.e. as plain text documents). Two models, same
initialisation, steps, batch and sequence length (so the same number of training tokens):

- ``text``: the speech corpus + the text-only documents;
- ``synth``: the same + B turned into synthetic interleaved documents by ``tokunify
  synth-interleave`` with a TTS bundle trained on the speech corpus (units, nothing vocoded).

Both are scored on B facts (and, for reference, on A facts) with questions spoken by a held-out
voice. Each question is multiple choice over every answer of its kind (21 numbers, 20 numbers,
7 colors, 5 leg counts), by mean log-likelihood (:func:`tokunify.eval.slm.scoring.score_sequences`):

- ``S2S``: spoken question -> spoken answer candidates (held-out voice), the s2s task (the
  spoken-QA task both models learn from A);
- ``S->T``: spoken question -> text answer, ``synth_interleave`` task (the format the synthetic
  documents teach);
- ``T->T``: text question -> text answer (both models saw B in text: the sanity check);
- ``sWUGGY``: held-out lexical minimal pairs (``synth-minimal-pairs`` + ``eval-slm``, continue task).

Every stage runs through the CLI functions (``synth-corpus``'s speaker, ``train-text-tokenizer``,
``train-kmeans``, ``tokenize``, ``extend``, ``train``, ``synth-interleave``, ``eval-slm``).

Run (about 40 min on 2 shared CPU cores with OMP_NUM_THREADS=1; the full run goes under the
heavy lock; --preset/--tts-steps/--steps/--seq-len/--batch override the setting):
    OMP_NUM_THREADS=1 flock /tmp/tokunify-heavy.lock python benchmarks/synth_interleave_ab.py --work ab_out
    python benchmarks/synth_interleave_ab.py --work /tmp/ab --tiny   # the test's one-minute run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tokunify.cli import main as cli
from tokunify.core.vocab import DEFAULT_TASKS
from tokunify.data.corpus.facts import Fact, all_facts, candidates, split_facts

SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": dict(facts_per_kind=2, statements=8, voices=2, fact_voices=1, text_vocab=320, k=16,
                 lda_dim=8, preset="llama-tiny", tts_steps=4, steps=4, batch=2, seq_len=128,
                 lr=3e-3, synth_copies=1, ratio=0.5, verify=0.5, lexical=2, units_per_word=6),
    "demo": dict(facts_per_kind=0, statements=300, voices=4, fact_voices=2, text_vocab=512, k=64,
                 lda_dim=32, preset="llama-small", tts_steps=1200, steps=600, batch=8, seq_len=256,
                 lr=2e-3, synth_copies=3, ratio=0.5, verify=0.2, lexical=60, units_per_word=40),
}  # fmt: skip
MIXTURE = {"asr": 0.2, "tts": 0.2, "s2s": 0.15, "continue": 0.05, "interleave": 0.05,
           "synth_interleave": 0.35}  # fmt: skip
TTS_MIXTURE = {"tts": 0.6, "asr": 0.4}
ARMS = ("text", "synth")


def step(name: str, argv: list[str], times: dict[str, float], done: Path | None = None) -> None:
    """Run one CLI stage (skipped when ``done`` exists: a resumed run)."""
    if done is not None and done.exists():
        print(f"\n=== {name}: done ({done})", flush=True)
        return
    t = time.perf_counter()
    print(f"\n=== {name}: tokunify {' '.join(argv)}", flush=True)
    if cli(argv) != 0:
        raise RuntimeError(f"stage {name!r} failed")
    times[name] = times.get(name, 0.0) + time.perf_counter() - t


# ---- data ---------------------------------------------------------------------------------------
def facts_for(s: dict[str, Any]) -> tuple[list[Fact], list[Fact], list[Fact]]:
    """(all facts used, A, B): the first ``facts_per_kind`` of each kind (0: all)."""
    facts = all_facts()
    if s["facts_per_kind"]:
        kinds = dict.fromkeys(f.kind for f in facts)
        facts = [f for k in kinds for f in [g for g in facts if g.kind == k][: s["facts_per_kind"]]]
    a, b = split_facts(facts, 0.5, seed=0)
    return facts, a, b


def build_corpus(work: Path, s: dict[str, Any]) -> dict[str, Any]:
    """Speech manifests (train: statements + A question/answer pairs; test: every question and
    every candidate answer, held-out voice) and the text documents."""
    import soundfile as sf

    from tokunify.data.corpus.espeak import Espeak
    from tokunify.data.corpus.grammar import Grammar
    from tokunify.data.corpus.synth import HELDOUT_VOICE, TRAIN_VOICES, _speak
    from tokunify.data.manifest import write_manifest

    facts, a, b = facts_for(s)
    corpus = work / "corpus"
    answers = sorted({c for f in facts for c in candidates(f, facts)})
    data = {"facts": facts, "a": a, "b": b, "answers": answers, "corpus": corpus}
    if (corpus / "docs_b.txt").exists():  # --resume: spoken already
        return data
    (corpus / "wavs").mkdir(parents=True, exist_ok=True)
    engine, grammar, rng = Espeak(), Grammar(1), np.random.default_rng(0)
    voices = TRAIN_VOICES[: s["voices"]]
    train = []
    for i in range(s["statements"]):
        text = grammar.statement()
        train.append(
            _speak(engine, text, voices[i % len(voices)], corpus, f"st{i:05d}", 16000, {}, sf)
        )
    for i, f in enumerate(a):
        for j in rng.permutation(len(voices))[: s["fact_voices"]]:
            q, ans = f"fa{i:04d}v{j}", f"fa{i:04d}v{j}a"
            train.append(
                _speak(engine, f.question, voices[j], corpus, q, 16000, {"s2s_target": ans}, sf)
            )
            train.append(
                _speak(engine, f.answer, voices[j], corpus, ans, 16000, {"answer_to": q}, sf)
            )
    test = []
    for i, f in enumerate(facts):
        test.append(_speak(engine, f.question, HELDOUT_VOICE, corpus, f"q{i:04d}", 16000, {}, sf))
    for i, c in enumerate(answers):
        test.append(_speak(engine, c, HELDOUT_VOICE, corpus, f"c{i:04d}", 16000, {}, sf))
    write_manifest(train, corpus / "train.jsonl")
    write_manifest(test, corpus / "test.jsonl")
    texts = [e.text for e in train] + [f.document for f in facts]
    (corpus / "train_texts.txt").write_text("".join(t + "\n" for t in texts))
    (corpus / "docs_text.txt").write_text("".join(f.document + "\n" for f in facts))  # A and B
    (corpus / "docs_b.txt").write_text("".join(f.document + "\n" for f in b) * s["synth_copies"])
    return data


def build_setup(work: Path, s: dict[str, Any], times: dict[str, float]) -> dict[str, Any]:
    """Corpus, tokenizers, stores, the initial bundle and the TTS bundle."""
    data = build_corpus(work, s)
    corpus = data["corpus"]
    step("text tokenizer", ["train-text-tokenizer", str(corpus / "train_texts.txt"), "--out", str(work / "text_tokenizer"),
                            "--vocab-size", str(s["text_vocab"])], times, work / "text_tokenizer")  # fmt: skip
    feats = work / "mel_units.yaml"
    feats.write_text(yaml.safe_dump({"kind": "mel_units", "dedup": True, "features": {
        "kind": "mfcc", "n_mfcc": 20, "deltas": False, "cmvn": "utterance", "splice": 4}}))  # fmt: skip
    step("unit k-means", ["train-kmeans", str(corpus / "train.jsonl"), "--tokenizer", str(feats), "--k", str(s["k"]),
                          "--out", str(work / "units"), "--lda-dim", str(s["lda_dim"])], times, work / "units" / "tokenizer.yaml")  # fmt: skip
    units = work / "units" / "tokenizer.yaml"
    for split in ("train", "test"):
        step(f"tokenize {split}", ["tokenize", str(corpus / f"{split}.jsonl"), "--out", str(work / "stores" / split),
                                   "--tokenizer", f"units={units}", "--text-tokenizer", str(work / "text_tokenizer"),
                                   "--no-progress"], times)  # fmt: skip
    step("extend", ["extend", f"scratch:{s['preset']}", "--text-tokenizer", str(work / "text_tokenizer"), "--units",
                    str(s["k"]), "--speech-tokenizer", f"units={units}", "--out", str(work / "bundle_init"),
                    "--tasks", *DEFAULT_TASKS, "synth_interleave"], times, work / "bundle_init")  # fmt: skip
    tts = work / "tts" / "final"
    if not tts.exists():
        train(work, s, "tts", [work / "stores" / "train"], TTS_MIXTURE, s["tts_steps"], 0, times)
    step("text-only documents", ["synth-interleave", str(corpus / "docs_text.txt"), "--bundle", str(tts), "--out",
                                 str(work / "stores" / "text"), "--speech-ratio", "0", "--no-progress"], times)  # fmt: skip
    step("synthetic interleaved B", ["synth-interleave", str(corpus / "docs_b.txt"), "--bundle", str(tts), "--out",
                                     str(work / "stores" / "synth"), "--speech-ratio", str(s["ratio"]),
                                     "--verify-fraction", str(s["verify"]), "--max-units-per-word",
                                     str(s["units_per_word"]), "--no-progress"], times)  # fmt: skip
    from tokunify.data.corpus.synth import TRAIN_VOICES

    step("minimal pairs", ["synth-minimal-pairs", "--out", str(work / "pairs"), "--exclude", str(corpus / "train_texts.txt"),
                           "--voices", *TRAIN_VOICES[:2], "--lexical", str(s["lexical"]), "--syntactic", "1",
                           "--topic", "1"], times, work / "pairs")  # fmt: skip
    return data


def train(work: Path, s: dict[str, Any], name: str, stores: list[Path], mixture: dict[str, float],
          steps: int, seed: int, times: dict[str, float]) -> Path:  # fmt: skip
    cfg = {"bundle": str(work / "bundle_init"), "out": str(work / name), "steps": steps, "batch_size": s["batch"],
           "seed": seed, "eval_every": 0, "save_every": 0, "log_every": max(1, steps // 5), "progress": False,
           "data": {"stores": [str(p) for p in stores], "seq_len": s["seq_len"], "mixture": mixture,
                    "eval_fraction": 0.0},
           "optim": {"lr": s["lr"], "warmup_steps": max(1, steps // 20), "weight_decay": 0.01}}  # fmt: skip
    if (work / name).exists():
        shutil.rmtree(work / name)
    (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    step(f"train {name}", ["train", str(work / f"{name}.yaml")], times)
    return work / name / "final"


# ---- scoring ------------------------------------------------------------------------------------
def pair_sequence(vocab: Any, task: str, context: tuple[str, np.ndarray], ending: tuple[str, np.ndarray]) -> Any:  # fmt: skip
    """``[bos, task:T, SEG(context), SEG(ending)]``, the ending's body scored."""
    from tokunify.eval.slm.scoring import ScoredSequence
    from tokunify.tasks import encode_segment

    head = np.array([vocab.bos, vocab.task(task)], dtype=np.int64)
    a, b = encode_segment(vocab, *context), encode_segment(vocab, *ending)
    ids = np.concatenate([head, a, b]).astype(np.int64)
    return ScoredSequence(ids, len(head) + len(a) + 1, len(ids) - 1, ending[0])


def text_sequence(vocab: Any, task: str, question: np.ndarray, answer: np.ndarray) -> Any:
    """``[bos, task:T, text_start, question answer, text_end]``, the answer scored (a text-only
    document as the text corpus has them)."""
    from tokunify.eval.slm.scoring import ScoredSequence
    from tokunify.tasks import encode_segment

    head = np.array([vocab.bos, vocab.task(task)], dtype=np.int64)
    ids = np.concatenate([head, encode_segment(vocab, "text", np.concatenate([question, answer]))])
    start = len(head) + 1 + len(question)
    return ScoredSequence(ids.astype(np.int64), start, start + len(answer), "text")


def qa_accuracy(bundle_dir: Path, work: Path, data: dict[str, Any]) -> dict[str, float]:
    """Multiple-choice accuracy per set (A, B) and variant (S2S, S->T, T->T)."""
    import tokunify
    from tokunify.data.store import TokenStore
    from tokunify.eval.slm.scoring import Conventions, score_sequences

    b = tokunify.load(bundle_dir)
    vocab, tok, stream = b.vocab, b.tokenizer, b.vocab.default_stream
    test = {
        r.text: r.streams[stream].astype(np.int64) for r in TokenStore(work / "stores" / "test")
    }

    def text_ids(t: str) -> np.ndarray:
        return np.asarray(tok.encode(t, add_special_tokens=False), dtype=np.int64)

    facts = data["facts"]
    variants = {
        "S2S": lambda f, c: pair_sequence(vocab, "s2s", (stream, test[f.question]), (stream, test[c])),
        "S->T": lambda f, c: pair_sequence(vocab, "synth_interleave", (stream, test[f.question]), ("text", text_ids(c))),
        "T->T": lambda f, c: text_sequence(vocab, "synth_interleave", text_ids(f.question), text_ids(c)),
    }  # fmt: skip
    out: dict[str, float] = {}
    for name, build in variants.items():
        seqs, owner = [], []
        for i, f in enumerate(facts):
            for c in candidates(f, facts):
                seqs.append(build(f, c))
                owner.append((i, c))
        scores = score_sequences(b.model, vocab, seqs, Conventions(normalize="mean"), batch_size=64)
        best: dict[int, tuple[float, str]] = {}
        for (i, c), sc in zip(owner, scores, strict=True):
            if i not in best or sc > best[i][0]:
                best[i] = (float(sc), c)
        right = {f.question: best[i][1] == f.answer for i, f in enumerate(facts)}
        for set_name in ("a", "b"):
            out[f"{set_name.upper()} {name}"] = float(
                np.mean([right[f.question] for f in data[set_name]])
            )
    chance = [1 / len(candidates(f, facts)) for f in data["b"]]
    out["B chance"] = float(np.mean(chance))
    return out


def slm_accuracy(bundle_dir: Path, work: Path, name: str, times: dict[str, float]) -> float:
    path = work / "slm" / f"{name}.json"
    step(f"slm {name}", ["eval-slm", str(bundle_dir), "--benchmark", "swuggy", "--data", str(work / "pairs"),
                         "--task", "continue", "--out", str(path)], times)  # fmt: skip
    return float(json.loads(path.read_text())["accuracy"])


# ---- the experiment -----------------------------------------------------------------------------
def run(
    work: Path, tiny: bool, seeds: list[int], resume: bool = False, **over: Any
) -> dict[str, Any]:
    s = {**SETTINGS["tiny" if tiny else "demo"], **{k: v for k, v in over.items() if v is not None}}
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_setup(work, s, times)
    stores = {"text": [work / "stores" / "train", work / "stores" / "text"]}
    stores["synth"] = [*stores["text"], work / "stores" / "synth"]
    rows = []
    for seed in seeds:
        for arm in ARMS:
            name = f"{arm}_seed{seed}"
            final = train(work, s, name, stores[arm], MIXTURE, s["steps"], seed, times)
            res = qa_accuracy(final, work, data)
            res["sWUGGY"] = slm_accuracy(final, work, name, times)
            res["train tokens"] = s["steps"] * s["batch"] * s["seq_len"]  # packed rows: same budget
            rows.append({"arm": arm, "seed": seed, **res})
    synth_stats = json.loads((work / "stores" / "synth" / "store.json").read_text())["extra"]
    result = {"settings": s, "mixture": MIXTURE, "seeds": seeds, "rows": rows,
              "synth_store": synth_stats["synth_interleave"].get("stats"),
              "n_facts": {"A": len(data["a"]), "B": len(data["b"])}, "stage_seconds": times,
              "elapsed_s": time.perf_counter() - t0}  # fmt: skip
    (work / "ab.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return result


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    cols = [k for k in rows[0] if k not in ("arm", "seed")]
    lines = ["| arm | seed | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        cells = []
        for c in cols:
            v = np.array([r[c] for r in mine], dtype=np.float64)
            cells.append(f"{_fmt(v.mean())} ± {_fmt((v.max() - v.min()) / 2)}")
        lines.append(f"| {arm} | mean ± half-range | " + " | ".join(cells) + " |")
    st = result.get("synth_store") or {}
    lines.append(f"\nA facts {result['n_facts']['A']}, B facts {result['n_facts']['B']}; synthetic store: "
                 f"speech ratio {_fmt(st.get('speech_ratio'))}, {_fmt(st.get('units_per_word'))} units/word, "
                 f"verified WER {_fmt(st.get('verified_wer_mean'))}, kept share {_fmt(st.get('kept_share'))}; "
                 f"{result['elapsed_s']:.0f} s")  # fmt: skip
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="ab_out", help="working directory (replaced unless --resume)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--tiny", action="store_true", help="the test's tiny setting")
    p.add_argument(
        "--resume", action="store_true", help="keep the finished set-up stages of --work"
    )
    for key in ("preset", "tts_steps", "steps", "seq_len", "batch"):
        p.add_argument("--" + key.replace("_", "-"), type=str if key == "preset" else int, default=None,
                       help=f"override the setting's {key}")  # fmt: skip
    a = p.parse_args(argv)
    run(Path(a.work), a.tiny, a.seeds, a.resume, preset=a.preset, tts_steps=a.tts_steps,
        steps=a.steps, seq_len=a.seq_len, batch=a.batch)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
