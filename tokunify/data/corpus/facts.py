"""The question-answer facts of the sentence grammar (:mod:`tokunify.data.corpus.grammar`), enumerated.

:meth:`Grammar.question` samples four kinds of facts: arithmetic (``what is two plus three`` ->
``five``), the number after another, the color of a thing and the legs of an animal. Here every
fact of each kind is listed once, in a fixed order, so that experiments can split them into
disjoint sets (:func:`split_facts`) and score an answer against the other answers of its kind
(:func:`candidates`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tokunify.data.corpus.grammar import ANIMALS, THINGS, number


@dataclass(frozen=True)
class Fact:
    """One question and its answer, both spoken text, and the kind of fact it is."""

    kind: str  # "plus", "after", "color", "legs"
    question: str
    answer: str

    @property
    def document(self) -> str:
        """The fact as one line of text: the question followed by its answer."""
        return f"{self.question} {self.answer}"


def all_facts() -> list[Fact]:
    """Every fact the grammar can ask, in a fixed order (kind by kind)."""
    out = [
        Fact("plus", f"what is {number(a)} plus {number(b)}", number(a + b))
        for a in range(11)
        for b in range(11)
    ]
    out += [Fact("after", f"what number comes after {number(n)}", number(n + 1)) for n in range(20)]
    out += [Fact("color", f"what color is the {t}", f"the {t} is {c}") for t, c in THINGS.items()]
    out += [
        Fact("legs", f"how many legs does a {a} have", f"a {a} has {number(n)} legs")
        for a, n in ANIMALS.items()
    ]
    return out


def _key(fact: Fact, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{fact.question}".encode()).hexdigest()


def split_facts(
    facts: list[Fact], b_share: float = 0.5, seed: int = 0
) -> tuple[list[Fact], list[Fact]]:
    """``(A, B)``: within each kind, the facts sorted by a seeded hash; the first
    ``round(b_share * n)`` go to B, the rest to A. Disjoint, deterministic, every kind in both."""
    a: list[Fact] = []
    b: list[Fact] = []
    for kind in dict.fromkeys(f.kind for f in facts):
        group = sorted((f for f in facts if f.kind == kind), key=lambda f: _key(f, seed))
        k = round(b_share * len(group))
        b += group[:k]
        a += group[k:]
    return a, b


def candidates(fact: Fact, facts: list[Fact]) -> list[str]:
    """The answers a multiple-choice question about ``fact`` chooses from: every answer of its
    kind the grammar can say (for colors and legs, about the same thing or animal), the true one
    included, sorted."""
    if fact.kind in ("plus", "after"):
        return sorted({f.answer for f in facts if f.kind == fact.kind})
    if fact.kind == "color":
        thing = fact.question.rsplit(" ", 1)[-1]
        return sorted({f"the {thing} is {c}" for c in THINGS.values()})
    animal = fact.question.split()[-2]
    return sorted({f"a {animal} has {number(n)} legs" for n in ANIMALS.values()})
