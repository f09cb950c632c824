"""Every shipped tokenizer config builds, keeps its fields, and encodes to its stream kind's shape.

Hub sources are swapped for tiny random models of the same class (no downloads); everything else
in the file is used as written, so a misspelt or unknown field, a layer the model lacks or a
bandwidth/codebook count the kind refuses fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SSL_COMMON, build_codec

from tokunify.core.config import read_data_file
from tokunify.tokenizers.base import tokenizer_class, tokenizer_from_config
from tokunify.tokenizers.kmeans import KMeans

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "tokenizers").rglob("*.yaml"))


def tiny_model(kind: str, cfg: dict, out: Path) -> Path:
    """A tiny random model that the config's fields fit (codebooks, bandwidth, layer)."""
    import transformers

    torch.manual_seed(0)
    if kind in ("mimi", "dac"):
        fields = {"num_quantizers" if kind == "mimi" else "n_codebooks": cfg["num_codebooks"]}
        return build_codec(kind, out, **fields)
    if kind == "encodec":
        tiny = dict(sampling_rate=8000, num_filters=4, upsampling_ratios=[4, 4], hidden_size=16)
        tiny.update(codebook_dim=16, num_residual_layers=1, target_bandwidths=[cfg["bandwidth"]])
        model = transformers.EncodecModel(transformers.EncodecConfig(**tiny))
    else:  # ssl_units: a HuBERT with enough layers for the configured one
        common = {**SSL_COMMON, "num_hidden_layers": int(cfg["layer"])}
        model = transformers.HubertModel(transformers.HubertConfig(**common))
    model.save_pretrained(out)
    return out


def test_there_are_shipped_configs_of_every_stream_kind():
    kinds = {tokenizer_class(read_data_file(f)["kind"]).stream_kind for f in CONFIGS}
    assert kinds == {"units", "codec"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_builds_and_encodes(path, tmp_path):
    cfg = read_data_file(path)
    cls = tokenizer_class(cfg["kind"])
    built = dict(cfg)
    if "source" in cfg:
        built["source"] = str(tiny_model(cfg["kind"], cfg, tmp_path / "model"))
    tok = tokenizer_from_config(built)
    assert isinstance(tok, cls)
    wav = (0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 8000)).astype(np.float32)
    if cls.stream_kind == "units":  # shipped unit configs come without centroids: fit a few
        x = tok.features(*_batch(tok, wav))[0]  # [T, D]
        tok.kmeans = KMeans.fit(x, 4, seed=0)
    full = tok.to_config()
    for key, value in cfg.items():  # every field of the file is kept (sources may be swapped)
        if key != "source":
            got = full[key]
            if isinstance(value, dict):
                got = {k: got[k] for k in value}
            assert got == value, (path.name, key)
    assert full["sample_rate"] == tok.sample_rate and full["frame_rate"] == tok.frame_rate
    ids = tok.encode([wav], sample_rate=8000).ids[0]
    if cls.stream_kind == "codec":
        assert ids.ndim == 2 and ids.shape[0] == tok.num_codebooks == full["num_codebooks"]
    else:
        assert ids.ndim == 1 and int(ids.max()) < tok.cardinality
    assert ids.shape[-1] > 0


def _batch(tok, wav):
    import soxr

    x = soxr.resample(wav, 8000, tok.sample_rate).astype(np.float32)
    return torch.from_numpy(x)[None], torch.tensor([len(x)])
