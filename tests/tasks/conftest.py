"""Fixtures of the chat-template tests; the tokenizers they build are in tests/chat_helpers.py."""

from __future__ import annotations

import pytest
from chat_helpers import FAMILIES, build_tokenizer


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_tokenizer(request):
    tok, vocab = build_tokenizer(request.param, ("units", "codec"))
    return request.param, tok, vocab
