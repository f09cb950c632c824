"""train-ssl (HuBERT masked prediction) and the ssl-units iteration loop, on tiny random HubertModels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tokunify.cli import main
from tokunify.core.config import from_dict, read_data_file
from tokunify.train.ssl import (
    PRESETS,
    Corpus,
    HubertPretraining,
    HubertPretrainingHead,
    align_targets,
    build_encoder,
    conv_frames,
    frame_units,
    span_mask,
)
from tokunify.train.ssl_recipe import SSLIteration, SSLUnitsConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ssl"
TINY = dict(  # a HubertConfig small enough for seconds of CPU
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=[16, 16, 32],
    conv_kernel=[20, 8, 8],
    conv_stride=[10, 4, 8],
    feat_extract_norm="layer",
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    layerdrop=0.0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
)
K = 12


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ssl") / "hubert.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def train_ssl(manifest: Path, targets: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["train-ssl", str(manifest), "--targets", str(targets), "--out", str(out), "--model", str(model),
                 "--batch-size", "4", "--max-seconds", "1.0", "--log-every", "1", "--lr", "5e-3",
                 "--warmup-steps", "2", *extra])  # fmt: skip


def test_align_targets_maps_frame_starts():
    u = np.array([0, 0, 1, 1, 2, 2])
    assert align_targets(u, 3, unit_rate=100.0, frame_rate=50.0).tolist() == [0, 1, 2]
    assert align_targets(u, 7, 50.0, 50.0).tolist() == [0, 0, 1, 1, 2, 2, 2]  # last repeats
    assert align_targets(np.array([4, 5]), 4, 25.0, 50.0).tolist() == [4, 4, 5, 5]


def test_frame_units_undo_dedup(unit_tokenizer, speech_manifest):
    from tokunify.data.audio import load
    from tokunify.data.manifest import read_manifest
    from tokunify.tokenizers.base import tokenizer_from_config

    cfg = read_data_file(unit_tokenizer)
    wavs = [load(e.audio, 16000) for e in list(read_manifest(speech_manifest))[:3]]
    dd = tokenizer_from_config(cfg, base_dir=unit_tokenizer.parent)
    plain = tokenizer_from_config({**cfg, "dedup": False}, base_dir=unit_tokenizer.parent)
    ref = [u.numpy() for u in plain.encode(wavs).ids]
    got = frame_units(dd, wavs)
    assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
    assert any(len(np.unique(a)) < len(a) for a in got)  # there were runs to undo


def test_span_mask_spans_never_cover_padding_and_replay_by_seed():
    frames = torch.tensor([200, 120, 60])
    m = span_mask(frames, 0.8, 10, np.random.default_rng(3))
    assert m.shape == (3, 200)
    assert not m[1, 120:].any() and not m[2, 60:].any()
    share = m[0].float().mean()
    assert 0.35 < share < 0.85  # p=0.8 span starts of 10 frames overlap to about half the frames
    assert torch.equal(m, span_mask(frames, 0.8, 10, np.random.default_rng(3)))
    assert not torch.equal(m, span_mask(frames, 0.8, 10, np.random.default_rng(4)))


def _tiny_model(k: int = K) -> HubertPretraining:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    enc = HubertModel(HubertConfig(**TINY, mask_time_prob=0.8, mask_time_length=10))
    return HubertPretraining(enc, HubertPretrainingHead(32, k, 16, 0.1)).eval()


def test_padded_batch_equals_one_at_a_time():
    model = _tiny_model()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16000, generator=g), torch.randn(9000, generator=g)
    batch = torch.zeros(2, 16000)
    batch[0], batch[1, :9000] = a, b
    with torch.no_grad():
        lens = torch.tensor([16000, 9000])
        valid = (torch.arange(16000)[None] < lens[:, None]).long()
        together = model.encoder(batch, attention_mask=valid).last_hidden_state
        alone = model.encoder(b[None], attention_mask=torch.ones(1, 9000).long()).last_hidden_state
    n = int(conv_frames(model.encoder.config, torch.tensor([9000]))[0])
    assert alone.shape[1] == n
    torch.testing.assert_close(together[1, :n], alone[0], atol=1e-5, rtol=1e-4)


def _hidden(enc, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(wavs.shape[1])[None] < lengths[:, None]  # [B, N]
    with torch.no_grad():
        return enc(wavs * valid, attention_mask=valid.long()).last_hidden_state  # [B, T, D]


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_training_batches_give_each_crop_its_own_hidden_states(norm):
    """The batches train-ssl draws (``Corpus.batch``): every row gives, in the batch, the hidden
    states its crop gives alone. A layer-norm front-end (``tiny``) pads; a group-norm one
    (``--model base``) normalises over time, so its crops are cut to the batch's shortest."""
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(**{**TINY, "feat_extract_norm": norm})
    torch.manual_seed(0)
    enc = HubertModel(config).eval()
    g = np.random.default_rng(0)
    wavs = [g.standard_normal(n).astype(np.float32) for n in (16000, 9000, 12345, 5000)]
    frames = conv_frames(config, torch.tensor([len(w) for w in wavs]))
    corpus = Corpus(wavs, [np.arange(int(f)) % K for f in frames], stride=320)
    batch, lengths, targets = corpus.batch(np.random.default_rng(1), 6, 14000, config)
    assert (len(set(lengths.tolist())) == 1) == (norm == "group")  # cropped vs padded
    together = _hidden(enc, batch, lengths)
    n = conv_frames(config, lengths)
    for b in range(len(lengths)):
        alone = _hidden(enc, batch[b : b + 1, : lengths[b]], lengths[b : b + 1])[0]
        assert alone.shape[0] == n[b] and (targets[b, : n[b]] >= 0).all()
        torch.testing.assert_close(together[b, : n[b]], alone, atol=1e-5, rtol=1e-4)
    if norm == "group":  # why: padded, the shorter row's hidden states are not its own
        pad = torch.zeros(2, 16000)
        pad[0], pad[1, :9000] = torch.from_numpy(wavs[0]), torch.from_numpy(wavs[1])
        padded = _hidden(enc, pad, torch.tensor([16000, 9000]))[1, : frames[1]]
        alone = _hidden(enc, pad[1:, :9000], torch.tensor([9000]))[0]
        assert (padded - alone).abs().max() > 0.05


def test_loss_counts_masked_frames_only():
    model = _tiny_model()
    wavs = torch.randn(2, 16000)
    lens = torch.tensor([16000, 12000])
    frames = conv_frames(model.encoder.config, lens)
    mask = span_mask(frames, 0.5, 5, np.random.default_rng(0))
    t = torch.randint(0, K, (2, int(frames.max())))
    t[1, frames[1] :] = -1
    with torch.no_grad():
        loss, _ = model(wavs, lens, mask, t)
        other = t.clone()
        other[~mask & (t >= 0)] = (other[~mask & (t >= 0)] + 1) % K  # unmasked targets changed
        same, _ = model(wavs, lens, mask, other)
        other[mask] = (other[mask] + 1) % K  # masked targets changed
        diff, _ = model(wavs, lens, mask, other)
    assert float(loss) == pytest.approx(float(same), abs=1e-6)
    assert abs(float(diff) - float(loss)) > 1e-3


def test_unmasked_weight_adds_the_unmasked_frames_loss():
    import torch.nn.functional as F

    model = _tiny_model()
    wavs, lens = torch.randn(2, 16000), torch.tensor([16000, 12000])
    frames = conv_frames(model.encoder.config, lens)
    mask = span_mask(frames, 0.5, 5, np.random.default_rng(0))
    t = torch.randint(0, K, (2, int(frames.max())))
    t[1, frames[1] :] = -1
    with torch.no_grad():
        masked_only, _ = model(wavs, lens, mask, t)
        model.unmasked_weight = 0.5
        both, _ = model(wavs, lens, mask, t)
        valid = (torch.arange(16000)[None] < lens[:, None]).long()
        h = model.encoder(wavs * valid, attention_mask=valid, mask_time_indices=mask)[0]
        rest = ~mask & (t >= 0)  # unmasked, non-padding frames
        ref = F.cross_entropy(model.head(h[rest]), t[rest])
    assert float(both) == pytest.approx(float(masked_only) + 0.5 * float(ref), abs=1e-5)
    assert float(ref) > 0.1  # the term is not vanishing: the test would see it missing


def test_masked_prediction_fits_a_fixed_batch():
    model = _tiny_model().train()
    g = torch.Generator().manual_seed(0)
    wavs, lens = torch.randn(2, 16000, generator=g), torch.tensor([16000, 12000])
    frames = conv_frames(model.encoder.config, lens)
    mask = span_mask(frames, 0.8, 10, np.random.default_rng(0))
    t = torch.randint(0, K, (2, int(frames.max())), generator=g)
    t[1, frames[1] :] = -1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = model(wavs, lens, mask, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.75 * losses[0], losses  # the encoder and head learn the masked targets


def test_train_ssl_saves_hubert_that_feeds_ssl_units_and_iteration_2(
    speech_manifest, unit_tokenizer, tiny_cfg, tmp_path
):
    from transformers import HubertModel

    from tokunify.tokenizers.base import tokenizer_from_config
    from tokunify.train.ssl import HubertPretrainingHead as Head

    out = tmp_path / "it1"
    assert train_ssl(speech_manifest, unit_tokenizer, out, tiny_cfg, "--steps", "3") == 0
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]
    enc = HubertModel.from_pretrained(out / "encoder")  # plain transformers loads it
    assert enc.config.num_hidden_layers == 2
    head = Head.load(out / "encoder" / "ssl_head.safetensors")
    k_targets = tokenizer_from_config(
        read_data_file(unit_tokenizer), base_dir=unit_tokenizer.parent
    ).cardinality
    assert head.label_embs.shape == (k_targets, 64)
    assert set(load_file(str(out / "encoder" / "ssl_head.safetensors"))) == {
        "final_proj.weight",
        "final_proj.bias",
        "label_embs",
    }
    # iteration 2: k-means on layer 1 of iteration 1, through ssl_units as-is, then train-ssl on it
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(
        yaml.safe_dump({"kind": "ssl_units", "source": str(out / "encoder"), "layer": 1})
    )
    assert main(["train-kmeans", str(speech_manifest), "--tokenizer", str(cfg), "--k", str(K), "--out", str(tmp_path / "km1")]) == 0  # fmt: skip
    tok_yaml = tmp_path / "km1" / "tokenizer.yaml"
    tok = tokenizer_from_config(read_data_file(tok_yaml), base_dir=tok_yaml.parent)
    assert tok.frame_rate == 50.0 and tok.cardinality == K
    assert train_ssl(speech_manifest, tok_yaml, tmp_path / "it2", tiny_cfg, "--steps", "2") == 0
    assert Head.load(tmp_path / "it2" / "encoder" / "ssl_head.safetensors").label_embs.shape[0] == K


def test_resume_equals_uninterrupted(speech_manifest, unit_tokenizer, tiny_cfg, tmp_path):
    full = tmp_path / "full"
    assert train_ssl(speech_manifest, unit_tokenizer, full, tiny_cfg, "--steps", "4", "--save-every", "2") == 0  # fmt: skip
    ckpts = sorted((full / "checkpoints").glob("step-*"))
    assert [p.name for p in ckpts] == ["step-000002"]
    assert not list((full / "checkpoints").glob(".*"))  # no temp dirs left
    resumed = tmp_path / "resumed"
    shutil.copytree(ckpts[0], resumed / "checkpoints" / ckpts[0].name)  # "killed" after step 2
    assert train_ssl(speech_manifest, unit_tokenizer, resumed, tiny_cfg, "--steps", "4") == 0
    a = load_file(str(full / "encoder" / "model.safetensors"))
    b = load_file(str(resumed / "encoder" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    log = [json.loads(x)["step"] for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert log[0] == 3  # it did resume rather than start over


def test_bad_inputs_give_one_line_errors(
    speech_manifest, unit_tokenizer, tiny_cfg, tmp_path, capsys
):
    assert train_ssl(speech_manifest, tmp_path / "nope.yaml", tmp_path / "o", tiny_cfg, "--steps", "1") == 1  # fmt: skip
    assert "nope.yaml" in capsys.readouterr().err
    assert train_ssl(speech_manifest, unit_tokenizer, tmp_path / "o", tmp_path / "m.yaml", "--steps", "1") == 1  # fmt: skip
    assert "not a preset" in capsys.readouterr().err


def test_shipped_ssl_configs_load():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert {f.name for f in files} == {"hubert_iterations.yaml", "hubert_tiny.yaml"}
    recipe = from_dict(SSLUnitsConfig, read_data_file(CONFIGS / "hubert_iterations.yaml"))
    assert len(recipe.iterations) == 2
    assert all(SSLIteration(**it).layer <= 4 for it in recipe.iterations)
    tiny = build_encoder(str(CONFIGS / "hubert_tiny.yaml"), 0)
    assert read_data_file(CONFIGS / "hubert_tiny.yaml") == PRESETS["tiny"]
    assert tiny.config.num_hidden_layers == 4 and np.prod(tiny.config.conv_stride) == 320


def test_ssl_units_recipe_runs_the_loop(speech_manifest, tiny_cfg, tmp_path):
    from tokunify.tokenizers.base import tokenizer_from_config

    cfg = tmp_path / "recipe.yaml"
    it = {"steps": 2, "batch_size": 2, "layer": 1, "k": 8, "unmasked_weight": 0.5}
    cfg.write_text(
        yaml.safe_dump(
            {"model": str(tiny_cfg), "k0": 10, "iterations": [it, it], "max_utterances": 0}
        )
    )
    argv = ["ssl-units", str(cfg), "--manifest", str(speech_manifest), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    o = tmp_path / "o"
    assert {p.name for p in o.iterdir()} >= {"km0", "iter1", "km1", "iter2", "km2", "units"}
    units = read_data_file(o / "units" / "tokenizer.yaml")
    assert units["source"] == str(o / "iter2" / "encoder") and units["kind"] == "ssl_units"
    tok = tokenizer_from_config(units, base_dir=o / "units")
    assert tok.cardinality == 8
    head1 = load_file(str(o / "iter1" / "encoder" / "ssl_head.safetensors"))
    assert head1["label_embs"].shape[0] == 10  # iteration 1 predicted the MFCC units
    info = json.loads((o / "iter1" / "encoder" / "ssl_train.json").read_text())
    assert info["config"]["unmasked_weight"] == 0.5  # the recipe's setting reached train-ssl


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(sys.executable).with_name("accelerate").exists(), reason="accelerate CLI missing"
)
def test_two_process_cpu_run(speech_manifest, unit_tokenizer, tiny_cfg, tmp_path):
    from transformers import HubertModel

    launcher = str(Path(sys.executable).with_name("accelerate"))
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tokunify", "train-ssl",
           str(speech_manifest), "--targets", str(unit_tokenizer), "--out", str(tmp_path / "run"),
           "--model", str(tiny_cfg), "--steps", "4", "--save-every", "2", "--batch-size", "2"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    assert json.loads((ckpt / "trainer.json").read_text())["world_size"] == 2
    assert {p.name for p in (ckpt / "state").glob("random_states_*")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    assert HubertModel.from_pretrained(tmp_path / "run" / "encoder") is not None
