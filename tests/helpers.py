"""Plain helpers shared by tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import random

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "red",
    "blue",
    "house",
    "tree",
    "one",
    "two",
    "three",
    "four",
    "five",
    "what",
    "is",
    "where",
    "are",
    "you",
    "i",
    "we",
    "they",
    "see",
    "saw",
    "big",
    "small",
    "green",
    "happy",
    "quickly",
    "slowly",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]
