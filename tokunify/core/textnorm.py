"""Transcript normalisers: the one Whisper normaliser that eval scores with and `prepare` can apply."""

from __future__ import annotations

import re


def normalize(text: str) -> str:
    """Whisper's ``BasicTextNormalizer`` as transformers ships it (lower case, punctuation and
    symbols to spaces, any script kept), then runs of spaces collapse."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer  # start-up cost

    return re.sub(r"\s+", " ", BasicTextNormalizer()(text or "")).strip()
