"""The vocoder training entry point: architectures registered once, sample rate from the store."""

from __future__ import annotations

import pytest

from tokunify.data.store import TokenStore
from tokunify.train.vocoder import ARCHS, VocoderTrainConfig
from tokunify.train.vocoder.data import stream_sample_rate


def test_every_arch_choice_is_registered():
    import typing

    hints = typing.get_type_hints(VocoderTrainConfig)
    assert set(typing.get_args(hints["arch"])) == set(ARCHS)


def test_sample_rate_comes_from_the_store(train_store):
    store = TokenStore(train_store)
    sr = store.meta.streams["units"].tokenizer["sample_rate"]
    assert stream_sample_rate(store, "units") == sr
    cfg = VocoderTrainConfig(store=str(train_store), out="o", arch="unit2mel")
    assert ARCHS["unit2mel"].hop(cfg, 22050, 50.0) == 441
    with pytest.raises(ValueError, match="not a whole number"):
        ARCHS["unit2mel"].hop(cfg, 22050, 48.0)
    with pytest.raises(ValueError, match="no stream 'codes'"):
        stream_sample_rate(store, "codes")
