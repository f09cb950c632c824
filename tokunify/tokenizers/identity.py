"""Tokenizer identity: content hashes that say whether two tokenizers give the same ids.

A store records the hash of every tokenizer that made it; a bundle records the hash of its own.
Training and merging compare them, so a store is never read with a tokenizer that did not make it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tokunify.core.fsio import content_hash, file_hash

# Config keys that name files: the hash covers the file's bytes, not its path.
FILE_KEYS = ("centroids",)
# Config keys that describe the tokenizer but do not change its ids.
IGNORED_KEYS = ("frame_rate", "sample_rate")


def tokenizer_hash(config: dict[str, Any], base_dir: str | Path | None = None) -> str:
    """Content hash of a speech tokenizer: its config, with file references replaced by their bytes' hash."""
    cfg = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
    src = cfg.get("source")
    if isinstance(src, str) and src:  # a local encoder directory: its bytes, not where it lies
        d = Path(src) if Path(src).is_absolute() or base_dir is None else Path(base_dir) / src
        if d.is_dir():
            cfg["source"] = "sha256-dir:" + content_hash(d)
    for key in FILE_KEYS:
        if cfg.get(key):
            p = Path(cfg[key])
            p = p if p.is_absolute() or base_dir is None else Path(base_dir) / p
            cfg[key] = "sha256:" + file_hash(p) if p.is_file() else str(cfg[key])
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def text_tokenizer_hash(tokenizer: Any, size: int | None = None) -> str:
    """Hash of the base text vocabulary (ids ``< size``): same pieces, same ids."""
    n = len(tokenizer) if size is None else size
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    return hashlib.sha256("\n".join(map(str, pieces)).encode()).hexdigest()[:16]
