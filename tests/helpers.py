"""Plain helpers shared by tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

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


UNITS_K = 24  # units of the session tokenizer/store/bundle fixtures (tests/conftest.py)


def write_config(path: Path, bundle: Path, store: Path, out: Path, **over) -> Path:
    cfg = {
        "bundle": str(bundle),
        "out": str(out),
        "steps": 6,
        "batch_size": 2,
        "save_every": 3,
        "eval_every": 3,
        "log_every": 1,
        "progress": False,
        "data": {
            "stores": [str(store)],
            "seq_len": 128,
            "eval_fraction": 0.15,
            "mixture": {
                "asr": 0.3,
                "tts": 0.3,
                "continue": 0.1,
                "text": 0.1,
                "interleave": 0.1,
                "s2s": 0.1,
            },
        },
        "optim": {"lr": 0.003, "warmup_steps": 2},
    }
    for k, v in over.items():
        node = cfg
        *parents, last = k.split(".")
        for p in parents:
            node = node[p]
        node[last] = v
    path.write_text(yaml.safe_dump(cfg))
    return path
