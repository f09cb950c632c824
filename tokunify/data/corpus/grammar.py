"""A small English sentence grammar for the offline corpus: statements, numbers, and questions with
deterministic spoken answers (the speech-to-speech pairs). A few hundred words, all spelled out."""

from __future__ import annotations

import random

NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
NAMES = [
    "anna",
    "ben",
    "carla",
    "david",
    "emma",
    "frank",
    "grace",
    "henry",
    "iris",
    "jack",
    "kate",
    "leo",
    "maria",
    "nick",
    "olivia",
    "paul",
    "rosa",
    "sam",
    "tina",
    "victor",
]
ANIMALS = {
    "cat": 4,
    "dog": 4,
    "bird": 2,
    "horse": 4,
    "duck": 2,
    "spider": 8,
    "fish": 0,
    "cow": 4,
    "chicken": 2,
    "snake": 0,
    "ant": 6,
    "goat": 4,
}
THINGS = {
    "sky": "blue",
    "grass": "green",
    "snow": "white",
    "sun": "yellow",
    "coal": "black",
    "banana": "yellow",
    "tomato": "red",
    "orange": "orange",
    "leaf": "green",
    "cloud": "white",
    "sea": "blue",
    "cherry": "red",
}
NOUNS = [
    "house",
    "tree",
    "car",
    "book",
    "table",
    "chair",
    "garden",
    "river",
    "window",
    "door",
    "road",
    "bridge",
    "city",
    "school",
    "kitchen",
    "market",
    "boat",
    "train",
    "apple",
    "lamp",
]
PLURAL = {n: n + "s" for n in NOUNS} | {"bus": "buses", "box": "boxes", "city": "cities"}
ADJECTIVES = [
    "big",
    "small",
    "old",
    "new",
    "red",
    "green",
    "blue",
    "yellow",
    "happy",
    "quiet",
    "bright",
    "dark",
    "warm",
    "cold",
    "tall",
    "short",
    "clean",
    "busy",
]
VERBS_PAST = [
    "walked",
    "ran",
    "drove",
    "looked",
    "jumped",
    "waited",
    "slept",
    "sat",
    "played",
    "worked",
]
PLACES = [
    "park",
    "station",
    "library",
    "beach",
    "museum",
    "forest",
    "village",
    "office",
    "hospital",
    "garden",
    "bakery",
    "harbor",
]
PREPS = ["to", "near", "behind", "into", "across", "around", "past", "toward"]
TIMES = [
    "today",
    "yesterday",
    "tomorrow",
    "tonight",
    "this",
    "morning",
    "every",
    "day",
    "on",
    "monday",
    "on",
    "friday",
]
FOODS = ["bread", "soup", "rice", "cheese", "pasta", "salad", "cake", "tea", "coffee", "milk"]
VERBS_PRESENT = ["likes", "wants", "needs", "buys", "makes", "cooks", "finds", "brings"]


def number(n: int) -> str:
    return NUMBERS[n]


class Grammar:
    """Sentences and question/answer pairs from a seeded RNG."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def _c(self, xs):  # type: ignore[no-untyped-def]
        return self.rng.choice(list(xs))

    def statement(self) -> str:
        r = self.rng.randrange(6)
        if r == 0:
            return f"the {self._c(ADJECTIVES)} {self._c(ANIMALS)} {self._c(VERBS_PAST)} {self._c(PREPS)} the {self._c(PLACES)}"
        if r == 1:
            return f"{self._c(NAMES)} has {number(self.rng.randint(2, 20))} {self._c(ADJECTIVES)} {PLURAL[self._c(NOUNS)]}"
        if r == 2:
            return f"{self._c(NAMES)} {self._c(VERBS_PRESENT)} {self._c(FOODS)} {self._c(TIMES)}"
        if r == 3:
            return f"we saw {number(self.rng.randint(2, 12))} {self._c(ADJECTIVES)} {PLURAL[self._c(NOUNS)]} near the {self._c(PLACES)}"
        if r == 4:
            return f"my {self._c(ADJECTIVES)} {self._c(NOUNS)} is {self._c(PREPS)} the {self._c(NOUNS)}"
        return f"{self._c(NAMES)} and {self._c(NAMES)} {self._c(VERBS_PAST)} to the {self._c(PLACES)} {self._c(TIMES)}"

    def question(self) -> tuple[str, str]:
        """A question and its answer, both as spoken text."""
        r = self.rng.randrange(4)
        if r == 0:
            a, b = self.rng.randint(0, 10), self.rng.randint(0, 10)
            return f"what is {number(a)} plus {number(b)}", number(a + b)
        if r == 1:
            n = self.rng.randint(0, 19)
            return f"what number comes after {number(n)}", number(n + 1)
        if r == 2:
            thing = self._c(THINGS)
            return f"what color is the {thing}", f"the {thing} is {THINGS[thing]}"
        animal = self._c(ANIMALS)
        return (
            f"how many legs does a {animal} have",
            f"a {animal} has {number(ANIMALS[animal])} legs",
        )


def vocabulary() -> set[str]:
    words = (
        set(NUMBERS)
        | set(NAMES)
        | set(ANIMALS)
        | set(THINGS)
        | set(THINGS.values())
        | set(NOUNS)
        | set(PLURAL.values())
    )
    words |= (
        set(ADJECTIVES)
        | set(VERBS_PAST)
        | set(PLACES)
        | set(PREPS)
        | set(FOODS)
        | set(VERBS_PRESENT)
    )
    words |= {w for t in TIMES for w in t.split()}
    words |= set(
        [
            "the",
            "a",
            "my",
            "we",
            "saw",
            "has",
            "is",
            "and",
            "to",
            "what",
            "plus",
            "number",
            "comes",
            "after",
            "color",
            "how",
            "many",
            "legs",
            "does",
            "have",
        ]
    )
    return words
