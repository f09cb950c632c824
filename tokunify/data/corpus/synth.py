"""`tokunify synth-corpus`: an offline speech corpus from espeak-ng and the sentence grammar.

Splits: ``train`` (training voices); ``test_seen`` (held-out sentences, training voices);
``test_unseen`` (held-out sentences, one held-out voice); ``test_s2s`` (question/answer pairs whose
text is in training, spoken by the held-out voice: unseen audio, learnable facts). Questions carry
``s2s_target`` naming their spoken answer (same voice), for speech-to-speech. Audio is 16 kHz mono; every row has word
and phone alignments from espeak's events (``words``; ``phones`` as ``[phone, start_s, end_s]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.data.audio import resample
from tokunify.data.corpus.espeak import Espeak
from tokunify.data.corpus.grammar import Grammar
from tokunify.data.manifest import Entry, write_manifest

TRAIN_VOICES = [
    "en-us", "en-us+m1", "en-us+m2", "en-us+m3", "en-us+m4", "en-us+m5", "en-us+m6", "en-us+m7",
    "en-us+f1", "en-us+f2", "en-us+f3", "en-us+f4", "en", "en+m3", "en+f2", "en+klatt",
]  # fmt: skip
HELDOUT_VOICE = "en-us+m8"


@dataclass
class SynthCorpusArgs:
    """Synthesize an offline corpus (wavs + JSONL manifests with word alignments) with espeak-ng."""

    out: str
    """Output directory."""
    utterances: int = 2000
    """Training utterances (answers of questions included)."""
    test_utterances: int = 200
    """Utterances per test split."""
    voices: list[str] = field(default_factory=lambda: list(TRAIN_VOICES))
    """Training voices (espeak voice names with variants)."""
    heldout_voice: str = HELDOUT_VOICE
    """Voice of the test_unseen split only."""
    question_fraction: float = 0.3
    """Share of question/answer pairs."""
    s2s_pairs: int = 50
    """Question/answer pairs of the test_s2s split (training questions, held-out voice)."""
    sample_rate: int = 16000
    """Output sample rate."""
    seed: int = 0
    """Seed."""
    workers: int = 1
    """Processes that synthesize; the texts, voices and ids are planned first and never depend on
    it (tokunify.data.corpus.synth.speak_all)."""


def run_synth_corpus(args: SynthCorpusArgs) -> dict[str, Path]:
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    out = Path(args.out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    grammar = Grammar(args.seed)

    def items(n: int, avoid: set[str]) -> list[tuple[str, str | None]]:
        """(text, answer-or-None) until ``n`` utterances; texts in ``avoid`` are skipped."""
        got: list[tuple[str, str | None]] = []
        count, tries = 0, 0
        while count < n and tries < 200 * n:
            tries += 1
            if rng.random() < args.question_fraction:
                q, a = grammar.question()
                if q in avoid:
                    continue
                got.append((q, a))
                count += 2
            else:
                s = grammar.statement()
                if s in avoid:
                    continue
                got.append((s, None))
                count += 1
        return got

    train = items(args.utterances, set())
    seen_texts = {t for t, _ in train} | {a for _, a in train if a}
    # S2S answers are facts (what color is an orange), learnable only from training: test_s2s asks
    # training questions, spoken by the held-out voice, so the audio is unseen but the facts are not.
    asked = list(dict.fromkeys((q, a) for q, a in train if a is not None))[: args.s2s_pairs]
    splits = {
        "train": (train, list(args.voices)),
        "test_seen": (items(args.test_utterances, seen_texts), list(args.voices)),
        "test_unseen": (items(args.test_utterances, seen_texts), [args.heldout_voice]),
        "test_s2s": (asked, [args.heldout_voice]),
    }
    # Plan every utterance first (the rng's draws in a fixed order), then synthesize the plan.
    plan: dict[str, list[Job]] = {}
    for split, (rows, voices) in splits.items():
        jobs = plan.setdefault(split, [])
        for i, (text, answer) in enumerate(rows):
            voice = voices[int(rng.integers(len(voices)))]
            uid = f"{split}-{i:05d}"
            extra: dict[str, Any] = {"voice": voice}
            if answer is not None:
                extra["s2s_target"] = uid + "a"
            jobs.append((text, voice, uid, extra))
            if answer is not None:
                jobs.append((answer, voice, uid + "a", {"voice": voice, "answer_to": uid}))
    manifests = {}
    for split, entries in speak_all(plan, out, args.sample_rate, args.workers).items():
        manifests[split] = write_manifest(entries, out / f"{split}.jsonl")
    texts = out / "train_texts.txt"
    texts.write_text(
        "".join(
            json.loads(line)["text"] + "\n" for line in manifests["train"].read_text().splitlines()
        )
    )
    n = {k: len(v.read_text().splitlines()) for k, v in manifests.items()}
    print(f"wrote {out}: " + ", ".join(f"{k} {v} utterances" for k, v in n.items()))
    return {**manifests, "texts": texts}


Job = tuple[str, str, str, dict]
"""(text, voice, utterance id, manifest extras)."""


def _speak_block(jobs: list[Job], out: Path, sr: int) -> list[Entry]:
    """Planned utterances in order, with one fresh espeak engine."""
    import soundfile as sf

    engine = Espeak()
    return [
        _speak(engine, text, voice, out, uid, sr, extra, sf) for text, voice, uid, extra in jobs
    ]


def speak_all(
    plan: dict[str, list[Job]], out: Path, sr: int, workers: int
) -> dict[str, list[Entry]]:
    """Synthesize every split's jobs in ``workers`` contiguous blocks, each in its own spawned
    process with its own engine (1: this one), and return the entries in plan order. The texts,
    voices and ids come from the plan; espeak's audio is not bit-identical from run to run even in
    one process (measured: 18 of 39 wavs differed between two serial runs), so alignments can
    differ by a millisecond between worker counts."""
    jobs = [j for js in plan.values() for j in js]
    if workers == 1:
        done = _speak_block(jobs, out, sr)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        size = -(-len(jobs) // workers)
        blocks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as ex:
            parts = list(ex.map(_speak_block, blocks, [out] * len(blocks), [sr] * len(blocks)))
        done = [e for part in parts for e in part]
    it = iter(done)
    return {split: [next(it) for _ in js] for split, js in plan.items()}


def _speak(
    engine: Espeak, text: str, voice: str, out: Path, uid: str, sr: int, extra: dict, sf
) -> Entry:  # type: ignore[no-untyped-def]
    s = engine.synthesize(text, voice)
    wav = resample(s.audio, s.sample_rate, sr)
    path = out / "wavs" / f"{uid}.wav"
    sf.write(path, wav, sr)
    phones = [[p, round(a, 3), round(b, 3)] for p, a, b in s.phones]
    return Entry(
        id=uid,
        audio=path,
        text=text,
        speaker=voice,
        words=s.words,
        extra={**extra, "phones": phones},
    )
