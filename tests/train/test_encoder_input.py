"""`tokunify train` with speech input through an encoder (train/encoder_input.py and the setup and
step it plugs into): two steps on the espeak manifest through the CLI's own code path with a tiny
random Whisper encoder and a tiny random WavLM; gradients reach the adapter, a frozen encoder and
a frozen LM stay unchanged, resume restores the adapter, the bundle holds speech_input/ and its LM
still loads in plain transformers; packing slices a split document's audio."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from encoder_helpers import extend_encoder_bundle, log_rows, save_encoder, train_args
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import tokunify
from tokunify.cli import main
from tokunify.model.bundle import load_spec
from tokunify.train.packing import AudioSpan, Doc, Packer, fit_length, slice_spans

PH = 99  # a placeholder id in the packing tests
SEED = "0"


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {k: save_encoder(k, root / k) for k in ("whisper", "wavlm")}


@pytest.fixture(scope="module")
def enc_bundle(sp_dir, tmp_path_factory) -> Path:
    return extend_encoder_bundle(sp_dir, tmp_path_factory.mktemp("enc-bundle") / "bundle")


@pytest.fixture(scope="module")
def wavlm_run(enc_bundle, speech_manifest, encoders, tmp_path_factory) -> Path:
    """Two steps on a frozen WavLM + conv adapter, a checkpoint after each."""
    out = tmp_path_factory.mktemp("wavlm-run") / "run"
    args = train_args(enc_bundle, speech_manifest, out, encoders["wavlm"], **{"--save_every": "1"})
    assert main(args) == 0
    return out


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_writes_a_bundle_with_its_speech_input(wavlm_run, enc_bundle):
    rows = log_rows(wavlm_run)
    assert rows[0]["attention"] == "per_document"  # packed rows, no attention across documents
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any("loss/asr" in r for r in rows)
    final = wavlm_run / "final"
    assert load_spec(final).speech_input == {"path": "speech_input", "stream": "enc"}
    assert (final / "speech_input" / "adapter" / "adapter.safetensors").is_file()
    lm = AutoModelForCausalLM.from_pretrained(final)  # the LM part: plain transformers
    assert lm.config.vocab_size == tokunify.load(enc_bundle, with_model=False).vocab.size
    b = tokunify.load(final)
    assert b.speech_input is not None and b.speech_input.stream == "enc"
    assert b.speech_input.adapter.name == "conv" and b.speech_input.encoder.family.name == "wavlm"


def test_gradients_reach_the_adapter_not_the_frozen_encoder(wavlm_run, encoders):
    ckpt = wavlm_run / "checkpoints" / "step-000001" / "bundle" / "speech_input"
    final = wavlm_run / "final" / "speech_input"
    a1, a2 = (tensors(p / "adapter" / "adapter.safetensors") for p in (ckpt, final))
    assert not same(a1, a2)  # the adapter trained between step 1 and step 2
    source = tensors(encoders["wavlm"] / "model.safetensors")
    saved = tensors(final / "encoder" / "model.safetensors")
    assert same(source, saved)  # freeze: true


def test_resume_restores_the_speech_input(wavlm_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(wavlm_run, run)
    shutil.rmtree(run / "checkpoints" / "step-000002")
    shutil.rmtree(run / "final")
    spec = wavlm_run / "final" / "speech_input"
    args = [a if a != str(wavlm_run) else str(run) for a in _args_of(wavlm_run)]
    assert main(args) == 0
    assert any("resumed_from" in r for r in log_rows(run))
    want = tensors(spec / "adapter" / "adapter.safetensors")
    got = tensors(run / "final" / "speech_input" / "adapter" / "adapter.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)


def _args_of(run: Path) -> list[str]:
    """The arguments the module's WavLM run was started with (its config, from a checkpoint)."""
    meta = json.loads((run / "checkpoints" / "step-000001" / "trainer.json").read_text())
    cfg = meta["config"]
    return train_args(
        Path(cfg["bundle"]), Path(cfg["data"]["manifests"][0]), run,
        Path(cfg["speech_input"]["encoder"]), **{"--save_every": "1"},
    )  # fmt: skip


def test_whisper_stack_with_a_frozen_llm(enc_bundle, speech_manifest, encoders, tmp_path):
    out = tmp_path / "run"
    over = {"--speech_input.adapter": "stack", "--llm": "frozen"}
    assert main(train_args(enc_bundle, speech_manifest, out, encoders["whisper"], **over)) == 0
    assert all(math.isfinite(r["loss"]) for r in log_rows(out) if "loss" in r)
    before, after = (tensors(p / "model.safetensors") for p in (enc_bundle, out / "final"))
    assert same(before, after)  # llm: frozen
    si = tokunify.load(out / "final").speech_input
    assert si.adapter.name == "stack" and si.encoder.family.name == "whisper"


def test_speech_input_errors_are_one_line(enc_bundle, train_bundle, speech_manifest, encoders,
                                          tmp_path, capsys):  # fmt: skip
    args = train_args(train_bundle, speech_manifest, tmp_path / "a", encoders["wavlm"])
    assert main(args) != 0
    assert "extend with --continuous enc" in capsys.readouterr().err
    over = {"--speech_input.adapter": "nope"}
    assert main(train_args(enc_bundle, speech_manifest, tmp_path / "b", encoders["wavlm"], **over))
    assert "speech_input" in capsys.readouterr().err
    over = {"--llm": "frozen", "--freeze": "body"}
    assert main(train_args(enc_bundle, speech_manifest, tmp_path / "c", encoders["wavlm"], **over))
    assert "llm: frozen" in capsys.readouterr().err


# ---- packing documents with audio ----------------------------------------------------------------
def test_slice_spans_takes_frames_across_spans():
    a, b = AudioSpan("a.wav", None, None, 0, 3), AudioSpan("b.wav", 1.0, 2.0, 2, 4)
    assert slice_spans((a, b), 2, 5) == (
        AudioSpan("a.wav", None, None, 2, 1),
        AudioSpan("b.wav", 1.0, 2.0, 2, 2),
    )
    assert slice_spans((a, b), 0, 0) == ()


def test_a_split_document_keeps_the_audio_of_its_placeholders():
    ids = np.array([1, 2, PH, PH, PH, PH, PH, 3, 4, 5], dtype=np.int64)
    doc = Doc(ids, np.ones(10, bool), 0, (AudioSpan("a.wav", None, None, 0, 5),))
    pieces = fit_length(doc, 4, "split", np.array([PH]))
    assert [len(p.ids) for p in pieces] == [4, 4, 2]
    assert [p.audio for p in pieces] == [
        (AudioSpan("a.wav", None, None, 0, 2),),
        (AudioSpan("a.wav", None, None, 2, 3),),
        (),
    ]
    for p in pieces:
        assert sum(s.frames for s in p.audio) == int((p.ids == PH).sum())


def test_packed_rows_carry_their_documents_audio_in_order_and_resume():
    spans = [AudioSpan(f"{i}.wav", None, None, 0, 2) for i in range(3)]
    docs = iter(
        [Doc(np.array([1, PH, PH, 2]), np.ones(4, bool), 0, (s,)) for s in spans]
        + [Doc(np.array([1, 2, 3]), np.ones(3, bool), 0)] * 100
    )
    packer = Packer(8, 0, pool=4, placeholders=[PH])
    batch, _ = packer.next_batch(2, lambda: next(docs))
    for row, audio in zip(batch.input_ids, batch.audio, strict=True):
        assert sum(s.frames for s in audio) == int((row == PH).sum())
    again = Packer(8, 0, pool=4, placeholders=[PH])
    again.load_state(packer.state())
    assert [d.audio for d in again.pending] == [d.audio for d in packer.pending]


@pytest.mark.slow
@pytest.mark.parametrize("llm", ["full", "frozen"])
def test_two_processes_train_one_encoder_bundle(llm, enc_bundle, speech_manifest, encoders,
                                                tmp_path):  # fmt: skip
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate CLI missing")
    out = tmp_path / "ddp"
    # batches of one document, most of them text only: ranks differ in whether theirs has audio
    over = {"--llm": llm, "--data.mixture": "{asr: 0.1, text: 0.9}", "--batch_size": "1",
            "--steps": "10", "--seed": SEED}  # fmt: skip
    args = train_args(enc_bundle, speech_manifest, out, encoders["wavlm"], **over)
    with socket.socket() as sock:  # a free port: other runs may hold accelerate's default
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [str(accelerate), "launch", "--multi_gpu", "--main_process_port", port,
           "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tokunify", *args]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = log_rows(out)
    assert rows[0]["world_size"] == 2
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert {"loss/asr", "loss/text"} <= {k for r in rows for k in r}
    assert tokunify.load(out / "final").speech_input.adapter.name == "conv"
