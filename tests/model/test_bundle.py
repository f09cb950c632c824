from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tokunify
from tokunify.cli import main
from tokunify.core.fsio import atomic_dir
from tokunify.core.vocab import UnifiedVocab, VocabError, continuous_stream, units_stream
from tokunify.model.bundle import BundleError, BundleSpec
from tokunify.tokenizers.kmeans import KMeans

UNITS = 60


@pytest.fixture
def bundle_dir(base_model_dir, tmp_path):
    out = tmp_path / "bundle"
    rc = main(
        [
            "extend",
            str(base_model_dir),
            "--out",
            str(out),
            "--units",
            str(UNITS),
            "--codebooks",
            "2",
            "--codebook-size",
            "32",
            "--init",
            "mean+noise",
        ]
    )
    assert rc == 0
    return out


def test_bundle_layout_and_tokunify_load(bundle_dir):
    names = {p.name for p in bundle_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "tokunify.json",
        "tokenizer.json",
    } <= names
    assert not [n for n in names if n.startswith(".")]
    b = tokunify.load(bundle_dir)
    assert b.vocab.stream("units").size == UNITS
    assert b.vocab.stream("codec").codebooks == 2
    assert len(b.tokenizer) == b.vocab.size == b.model.config.vocab_size
    assert b.spec.init == "mean+noise"
    ids = torch.tensor([[b.vocab.bos, b.vocab.task("continue"), b.vocab.stream_start("units")]])
    assert b.model(ids).logits.shape[-1] == b.vocab.size


def test_plain_transformers_loads_bundle(bundle_dir):
    code = textwrap.dedent(
        f"""
        import sys, json
        from transformers import AutoModelForCausalLM, AutoTokenizer
        m = AutoModelForCausalLM.from_pretrained({str(bundle_dir)!r})
        t = AutoTokenizer.from_pretrained({str(bundle_dir)!r})
        assert "tokunify" not in sys.modules
        ids = t.encode("<|task:tts|><|units:5|>", add_special_tokens=False)
        out = m.generate(__import__("torch").tensor([ids]), max_new_tokens=3, do_sample=False)
        print(json.dumps({{"n": len(t), "V": m.config.vocab_size, "ids": ids, "gen": out.shape[1]}}))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    vocab = tokunify.UnifiedVocab.load(bundle_dir)
    assert got["n"] == got["V"] == vocab.size
    assert got["ids"] == [vocab.task("tts"), int(vocab.to_global("units", torch.tensor([5]))[0])]
    assert got["gen"] == 5


def test_mismatched_vocab_json_is_refused(bundle_dir):
    p = bundle_dir / "vocab.json"
    d = json.loads(p.read_text())
    d["streams"][0]["size"] = UNITS + 1  # one more unit: every later id shifts
    p.write_text(json.dumps(d))
    with pytest.raises(VocabError, match="do not match") as e:
        tokunify.load(bundle_dir)
    assert str(bundle_dir) in str(e.value)


def test_grown_vocab_json_is_refused(bundle_dir):
    p = bundle_dir / "vocab.json"
    d = json.loads(p.read_text())
    d["streams"][0]["size"] = UNITS + 200  # crosses a multiple of 64: size differs
    d.pop("size")
    p.write_text(json.dumps(d))
    with pytest.raises(VocabError, match="tokenizer has"):
        tokunify.load(bundle_dir)


def test_missing_parts_are_refused(bundle_dir, tmp_path):
    (bundle_dir / "vocab.json").unlink()
    with pytest.raises(VocabError, match="no vocab.json"):
        tokunify.load(bundle_dir)
    with pytest.raises(BundleError, match="not a directory"):
        tokunify.load(tmp_path / "nothing")


def test_speech_tokenizer_cardinality_checked(bundle_dir, tmp_path):
    spec = json.loads((bundle_dir / "tokunify.json").read_text())
    spec["speech_tokenizers"] = {"units": {"kind": "mel_units", "cardinality": UNITS + 1}}
    (bundle_dir / "tokunify.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="61 units/codes, vocab.json has 60"):
        tokunify.load(bundle_dir, with_model=False)
    spec["speech_tokenizers"] = {"hubert": {"cardinality": UNITS}}
    (bundle_dir / "tokunify.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="unknown stream 'hubert'"):
        tokunify.load(bundle_dir, with_model=False)


def test_scratch_bundle_via_cli(sp_dir, tmp_path, capsys):
    out = tmp_path / "scratch"
    # a real speech tokenizer: mel features + 100 centroids (60 = 20 MFCC + deltas)
    KMeans(torch.randn(100, 60)).save(tmp_path / "c.safetensors")
    cfg = tmp_path / "units.json"
    cfg.write_text(json.dumps({"kind": "mel_units", "centroids": "c.safetensors"}))
    rc = main(
        [
            "extend",
            "scratch:llama-tiny",
            "--text-tokenizer",
            str(sp_dir),
            "--units",
            "100",
            "--out",
            str(out),
            "--speech-tokenizer",
            f"units={cfg}",
            "--freeze-text-rows",
        ]
    )
    assert rc == 0
    b = tokunify.load(out)
    assert b.spec.base == "scratch:llama-tiny" and b.spec.freeze_text_rows
    assert b.spec.speech_tokenizers["units"]["cardinality"] == 100
    # the centroids travel inside the bundle; the tokenizer rebuilds from it alone
    assert (out / b.spec.speech_tokenizers["units"]["centroids"]).is_file()
    assert b.speech_tokenizer().cardinality == 100
    assert main(["info", str(out)]) == 0
    assert "stream units: units, K=100" in capsys.readouterr().out
    # a scratch base needs a text tokenizer: clear error, exit 1
    assert (
        main(["extend", "scratch:llama-tiny", "--units", "10", "--out", str(tmp_path / "x")]) == 1
    )
    assert "needs --text-tokenizer" in capsys.readouterr().err


def test_atomic_dir_keeps_previous_on_failure(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half-written")
        raise RuntimeError("killed during save")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_spec_rejects_unknown_keys():
    d = BundleSpec().to_dict()
    d["speech_tokenizer"] = {}
    with pytest.raises(BundleError, match="unknown keys"):
        BundleSpec.from_dict(d)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    from tokunify.core.fsio import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "a.json", "old\n")

    def boom(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp sibling left behind


def test_spec_speech_input_must_name_a_continuous_stream():
    vocab = UnifiedVocab(100, (units_stream("units", 8), continuous_stream("enc")))
    BundleSpec(speech_input={"path": "speech_input", "stream": "enc"}).check(vocab)
    with pytest.raises(BundleError, match="needs a continuous one"):
        BundleSpec(speech_input={"path": "speech_input", "stream": "units"}).check(vocab)
    with pytest.raises(BundleError, match="speech_input for unknown stream 'x'"):
        BundleSpec(speech_input={"path": "speech_input", "stream": "x"}).check(vocab)
