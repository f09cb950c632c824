"""`tokunify synth-minimal-pairs`: offline, regenerable speech-LM minimal pairs with espeak-ng.

Three sets, each in the layout of the published benchmark it imitates, so ``eval-slm`` reads both:

- ``lexical/dev`` (sWUGGY-like, ZeroSpeech 2021 gold.csv): real words of the lexicon vs pseudo-words
  made by swapping one onset, nucleus or coda (spelling chunks) for one that occurs in the same
  position of another lexicon word, so the pseudo-word keeps the lexicon's phonotactics.
- ``syntactic/dev`` (sBLIMP-like): grammatical sentences vs minimally different ungrammatical ones,
  labelled by phenomenon (``type``): subject-verb agreement, word order, determiner (numeral)-noun
  agreement, argument structure. Built from the English corpus grammar.
- ``tstorycloze`` (tStoryCloze-like): a sentence's beginning with its own ending vs the ending of a
  sentence of another template (another context); ``texts.jsonl`` and ``crossmodal/`` (context and
  endings spoken alone) enable the S->T, T->S and T->T variants.

Both members of a pair are spoken by the same voice with the same settings. Texts listed in
``--exclude`` (e.g. the demo's ``train_texts.txt``) are never used, so every item is held out of
training. With ``--lexicon`` and ``--sentences`` the lexical and topic sets work for any espeak
language (``--voices`` picks it); the syntactic set needs the built-in English grammar.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tokunify.core.fsio import atomic_dir
from tokunify.data.audio import resample
from tokunify.data.corpus import grammar as g
from tokunify.data.corpus.espeak import Espeak

_CHUNK = re.compile(r"[aeiouy]+|[^aeiouy]+")
_SAFE = re.compile(r"[^A-Za-z0-9]+")


@dataclass
class MinimalPairsArgs:
    """Synthesize lexical, syntactic and topic minimal pairs (published layouts) with espeak-ng."""

    out: str
    """Output directory (lexical/, syntactic/, tstorycloze/)."""
    voices: list[str] = field(default_factory=lambda: ["en-us"])
    """espeak voices, cycled over pairs (both members of a pair share one)."""
    lexical: int = 200
    """Word / pseudo-word pairs."""
    syntactic: int = 50
    """Sentence pairs per phenomenon."""
    topic: int = 100
    """Story pairs."""
    exclude: str = ""
    """Text file of training utterances (one per line): never used, and the word counts fill gold.csv's frequency."""
    lexicon: str = ""
    """Word list (one per line) for the lexical set (default: the corpus grammar's lexicon)."""
    sentences: str = ""
    """Sentences (one per line) for the topic set (default: the corpus grammar)."""
    sample_rate: int = 16000
    """Output sample rate."""
    seed: int = 0
    """Seed."""


# ---- lexical -----------------------------------------------------------------------------------
def _chunks(word: str) -> list[str]:
    return _CHUNK.findall(word)


def _slot(chunks: list[str], i: int) -> tuple[bool, str]:
    """(is vowel, position class) of chunk ``i``: the slot a replacement must come from."""
    pos = "initial" if i == 0 else "final" if i == len(chunks) - 1 else "medial"
    return chunks[i][0] in "aeiouy", pos


def chunk_inventory(lexicon: list[str]) -> dict[tuple[bool, str], list[str]]:
    """Every onset/nucleus/coda spelling chunk of the lexicon, by slot (sorted, deterministic)."""
    inv: dict[tuple[bool, str], set[str]] = {}
    for w in lexicon:
        c = _chunks(w)
        for i in range(len(c)):
            inv.setdefault(_slot(c, i), set()).add(c[i])
    return {k: sorted(v) for k, v in inv.items()}


def pseudo_word(
    word: str, lexicon: set[str], inventory: dict[tuple[bool, str], list[str]], rng: random.Random
) -> str | None:
    """``word`` with one chunk swapped for another of the same slot; not a lexicon word."""
    c = _chunks(word)
    for _ in range(50):
        i = rng.randrange(len(c))
        options = [x for x in inventory.get(_slot(c, i), []) if x != c[i]]
        if not options:
            continue
        cand = "".join([*c[:i], rng.choice(options), *c[i + 1 :]])
        if cand not in lexicon and len(cand) >= 3:
            return cand
    return None


def lexical_pairs(
    lexicon: list[str], n: int, rng: random.Random, exclude: set[str] | None = None
) -> list[tuple[str, str]]:
    """(word, pseudo-word) pairs; a word that is a whole utterance of ``exclude`` (a one-word
    answer such as ``five``) is skipped, so no item repeats a training utterance."""
    exclude = exclude or set()
    inv, known = chunk_inventory(sorted(set(lexicon))), set(lexicon)
    words = sorted({w for w in lexicon if len(w) >= 3 and w.isalpha() and w not in exclude})
    rng.shuffle(words)
    out = []
    for w in words:
        nw = pseudo_word(w, known, inv, rng)
        if nw is not None:
            out.append((w, nw))
        if len(out) >= n:
            break
    return out


# ---- syntactic ---------------------------------------------------------------------------------
def _agreement(rng: random.Random) -> tuple[str, str]:
    name, n, adj, noun = (rng.choice(g.NAMES), g.number(rng.randint(2, 20)), rng.choice(g.ADJECTIVES),
                          g.PLURAL[rng.choice(g.NOUNS)])  # fmt: skip
    return f"{name} has {n} {adj} {noun}", f"{name} have {n} {adj} {noun}"


def _word_order(rng: random.Random) -> tuple[str, str]:
    adj, animal, verb, prep, place = (rng.choice(g.ADJECTIVES), rng.choice(list(g.ANIMALS)), rng.choice(g.VERBS_PAST),
                                      rng.choice(g.PREPS), rng.choice(g.PLACES))  # fmt: skip
    tail = f"{verb} {prep} the {place}"
    return f"the {adj} {animal} {tail}", f"the {animal} {adj} {tail}"


def _determiner_noun(rng: random.Random) -> tuple[str, str]:
    n, adj, noun, place = (g.number(rng.randint(2, 12)), rng.choice(g.ADJECTIVES), rng.choice(g.NOUNS),
                           rng.choice(g.PLACES))  # fmt: skip
    return (f"we saw {n} {adj} {g.PLURAL[noun]} near the {place}",
            f"we saw {n} {adj} {noun} near the {place}")  # fmt: skip


_INTRANSITIVE = ["slept", "sat", "waited", "jumped", "ran", "walked"]


def _argument_structure(rng: random.Random) -> tuple[str, str]:
    name, verb, food, time = (rng.choice(g.NAMES), rng.choice(g.VERBS_PRESENT), rng.choice(g.FOODS),
                              rng.choice(["today", "yesterday", "tomorrow", "tonight"]))  # fmt: skip
    return f"{name} {verb} {food} {time}", f"{name} {rng.choice(_INTRANSITIVE)} {food} {time}"


PHENOMENA: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "agreement": _agreement,  # subject-verb: has / have
    "word_order": _word_order,  # adjective-noun order
    "determiner_noun": _determiner_noun,  # numeral + plural noun / singular noun
    "argument_structure": _argument_structure,  # transitive verb + object / intransitive + object
}


def syntactic_pairs(n: int, rng: random.Random, exclude: set[str]) -> list[tuple[str, str, str]]:
    """``(phenomenon, grammatical, ungrammatical)``, ``n`` distinct pairs per phenomenon."""
    out = []
    for name, make in PHENOMENA.items():
        seen: set[str] = set()
        for _ in range(200 * n):
            if len(seen) >= n:
                break
            good, bad = make(rng)
            if good in exclude or bad in exclude or good in seen:
                continue
            seen.add(good)
            out.append((name, good, bad))
    return out


# ---- topic -------------------------------------------------------------------------------------
def _template(sentence: str) -> str:
    """Which grammar template made a statement (its fixed words), to draw endings from others."""
    w = sentence.split()
    if w[0] in ("the", "we", "my"):
        return w[0]
    return w[1] if w[1] in ("has", "and") else "present"


def _word_class(word: str) -> str:
    """The grammar's word class of ``word`` (``other`` outside it): a foreign ending must start
    with another class than the true one, or it may fit the context as well (``ran | past the
    park`` vs ``ran | near the lake``)."""
    classes = {"prep": g.PREPS, "number": g.NUMBERS, "adj": g.ADJECTIVES, "name": g.NAMES,
               "food": g.FOODS, "noun": [*g.NOUNS, *g.PLURAL.values(), *g.PLACES, *g.ANIMALS],
               "verb": [*g.VERBS_PAST, *g.VERBS_PRESENT], "time": g.TIMES}  # fmt: skip
    return next((k for k, ws in classes.items() if word in ws), "other")


def topic_pairs(
    sentences: list[str], n: int, rng: random.Random, exclude: set[str], by_template: bool
) -> list[tuple[str, str, str]]:
    """``(context, ending, foreign ending)``: a sentence split in two, and the ending of a sentence
    of another template (another context)."""
    pool = [s for s in dict.fromkeys(sentences) if s not in exclude and len(s.split()) >= 4]
    rng.shuffle(pool)
    out = []
    for s in pool:
        if len(out) >= n:
            break
        words = s.split()
        k = (len(words) + 1) // 2
        others = [
            o for o in pool if o != s and (_template(o) != _template(s) if by_template else True)
        ]
        if not others:
            continue
        o = rng.choice(others).split()
        ctx, end, foreign = (
            " ".join(words[:k]),
            " ".join(words[k:]),
            " ".join(o[(len(o) + 1) // 2 :]),
        )
        if by_template and _word_class(end.split()[0]) == _word_class(foreign.split()[0]):
            continue
        if end != foreign and f"{ctx} {foreign}" not in exclude:
            out.append((ctx, end, foreign))
    return out


# ---- audio and layouts -------------------------------------------------------------------------
class _Speaker:
    def __init__(self, sample_rate: int):

        self.engine, self.sr = Espeak(), sample_rate

    def write(self, text: str, voice: str, path: Path) -> None:
        import soundfile as sf

        s = self.engine.synthesize(text, voice)
        sf.write(path, resample(s.audio, s.sample_rate, self.sr), self.sr)


def _write_gold(d: Path, rows: list[dict[str, object]]) -> None:
    """``d/gold.csv``; a benchmark asked for 0 pairs leaves no directory (no header-less csv)."""
    if rows:
        (d / "gold.csv").write_text(_csv(rows))
    else:
        d.rmdir()
        d.parent.rmdir()


def _csv(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _lines(path: str) -> list[str]:
    return [x.strip() for x in Path(path).read_text().splitlines() if x.strip()] if path else []


def run_synth_minimal_pairs(args: MinimalPairsArgs) -> dict[str, int]:
    if not args.voices:
        raise ValueError("--voices needs at least one espeak voice")
    rng = random.Random(args.seed)
    exclude = set(_lines(args.exclude))
    counts = Counter(w for t in exclude for w in t.split())
    lexicon = _lines(args.lexicon) or sorted(g.vocabulary())
    custom_sentences = _lines(args.sentences)
    grammar = g.Grammar(args.seed + 1)
    sentences = custom_sentences or [grammar.statement() for _ in range(20 * args.topic + 100)]
    speak = _Speaker(args.sample_rate)
    voice = lambda i: args.voices[i % len(args.voices)]  # noqa: E731
    tag = lambda v: _SAFE.sub("-", v)  # noqa: E731
    n = {}
    with atomic_dir(args.out) as out:
        d = out / "lexical" / "dev"
        d.mkdir(parents=True)
        rows: list[dict[str, object]] = []
        for i, (w, nw) in enumerate(lexical_pairs(lexicon, args.lexical, rng, exclude)):
            v = voice(i)
            freq = counts.get(w, 0) if exclude else 1
            for text, ok in ((w, 1), (nw, 0)):
                fname = f"lex{i:05d}_{tag(v)}_{'w' if ok else 'nw'}"
                speak.write(text, v, d / f"{fname}.wav")
                rows.append({"filename": fname, "id": i, "voice": v, "frequency": freq, "word": text,
                             "phones": "", "length": len(text), "correct": ok})  # fmt: skip
        _write_gold(d, rows)
        n["lexical"] = len(rows) // 2
        d = out / "syntactic" / "dev"
        d.mkdir(parents=True)
        rows = []
        for i, (phen, good, bad) in enumerate(syntactic_pairs(args.syntactic, rng, exclude)):
            v = voice(i)
            for text, ok in ((good, 1), (bad, 0)):
                fname = f"syn{i:05d}_{tag(v)}_{'s' if ok else 'ns'}"
                speak.write(text, v, d / f"{fname}.wav")
                rows.append({"filename": fname, "id": i, "voice": v, "type": phen, "subtype": phen,
                             "transcription": text, "correct": ok})  # fmt: skip
        _write_gold(d, rows)
        n["syntactic"] = len(rows) // 2
        d = out / "tstorycloze"
        (d / "crossmodal").mkdir(parents=True)
        texts = []
        stories = topic_pairs(sentences, args.topic, rng, exclude, by_template=not custom_sentences)
        for i, (ctx, end, foreign) in enumerate(stories):
            v = voice(i)
            speak.write(f"{ctx} {end}", v, d / f"{i}_correct.wav")
            speak.write(f"{ctx} {foreign}", v, d / f"{i}_incorrect.wav")
            for name, text in (("context", ctx), ("correct", end), ("incorrect", foreign)):
                speak.write(text, v, d / "crossmodal" / f"{i}_{name}.wav")
            texts.append(
                {"id": i, "voice": v, "context": ctx, "correct": end, "incorrect": foreign}
            )
        (d / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
        n["topic"] = len(texts)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v} pairs" for k, v in n.items()))
    return n
