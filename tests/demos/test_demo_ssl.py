"""`tokunify demo --units ssl`: the recipe it writes is a valid ssl-units config with no alignment
input, and (slow) the quick demo runs end to end on SSL units."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tokunify.cli import main
from tokunify.core.config import from_dict
from tokunify.demos.ssl import SSL_SETTINGS, ssl_units_config
from tokunify.train.ssl import PRESETS, build_encoder
from tokunify.train.ssl_recipe import SSLIteration, SSLUnitsConfig


@pytest.mark.parametrize("quick", [True, False])
def test_demo_recipe_is_a_valid_ssl_units_config(tmp_path, quick):
    cfg = from_dict(SSLUnitsConfig, ssl_units_config(tmp_path / "c", tmp_path / "o", quick, 0, 64))
    iters = [SSLIteration(**it) for it in cfg.iterations]
    s = SSL_SETTINGS["quick" if quick else "default"]
    assert [it.steps for it in iters] == list(s["steps"])
    assert iters[-1].k == 64  # the final units have the demo's K
    layers = build_encoder(cfg.model, 0).config.num_hidden_layers
    assert all(1 <= it.layer <= layers for it in iters)
    # the iteration-0 targets are plain MFCC k-means: no LDA, nothing read from the alignment
    assert cfg.mfcc["kind"] == "mfcc" and "lda" not in json.dumps(cfg.mfcc)
    assert cfg.manifest.endswith("train.jsonl") and cfg.model in PRESETS


@pytest.mark.slow
def test_quick_demo_on_ssl_units(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--units", "ssl"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["units"] == "ssl"
    for k in ("asr_wer", "asr_wer_unseen_voice", "tts_roundtrip_wer", "resynth_unit_error"):
        assert isinstance(m[k], float) and np.isfinite(m[k]) and m[k] >= 0, k
    units = yaml.safe_load((out / "units" / "tokenizer.yaml").read_text())
    assert units["kind"] == "ssl_units" and "ssl" in units["source"]
    assert m["train_loss_last"] < m["train_loss_first"]
