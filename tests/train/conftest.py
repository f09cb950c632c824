"""Helpers for the training tests (the store and bundle fixtures live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import yaml


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
