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

import numpy as np

from tokunify.audio import resample
from tokunify.corpus.espeak import Espeak
from tokunify.corpus.grammar import Grammar
from tokunify.manifest import Entry, write_manifest

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


def run_synth_corpus(args: SynthCorpusArgs) -> dict[str, Path]:
    import soundfile as sf

    out = Path(args.out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    engine = Espeak()
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
    manifests = {}
    for split, (rows, voices) in splits.items():
        entries = []
        for i, (text, answer) in enumerate(rows):
            voice = voices[int(rng.integers(len(voices)))]
            uid = f"{split}-{i:05d}"
            extra = {"voice": voice}
            if answer is not None:
                extra["s2s_target"] = uid + "a"
            entries.append(_speak(engine, text, voice, out, uid, args.sample_rate, extra, sf))
            if answer is not None:
                entries.append(
                    _speak(
                        engine,
                        answer,
                        voice,
                        out,
                        uid + "a",
                        args.sample_rate,
                        {"voice": voice, "answer_to": uid},
                        sf,
                    )
                )
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
