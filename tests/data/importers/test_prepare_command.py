"""`tokunify prepare` and `tokunify tokenize` on foreign sources, through the CLI entry point:
detection, refusals, and commands that store nothing exiting non-zero with one line."""

from __future__ import annotations

import json
import sys

import pytest

from tokunify.cli import main
from tokunify.data.importers import IMPORTERS, SourceError, detect
from tokunify.data.store import TokenStore


def _folder(clips, root, n=3):
    for i, c in enumerate(clips[:n]):
        c.write(root / f"u{i}.wav")
        (root / f"u{i}.txt").write_text(c.text)
    return root


def test_registry_lists_every_layout():
    assert list(IMPORTERS) == ["librispeech", "folder", "kaldi", "nemo", "lhotse", "hf",
                               "commonvoice", "ljspeech"]  # fmt: skip


def test_detect_none_and_ambiguous(clips, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no known layout detected; give --format"):
        detect(tmp_path / "empty")
    both = _folder(clips, tmp_path / "both", 1)
    (both / "wavs").mkdir()
    (both / "metadata.csv").write_text("u0|the cat sat|the cat sat\n")
    with pytest.raises(SourceError, match=r"several layouts \(folder, ljspeech\); choose one"):
        detect(both)
    with pytest.raises(SourceError, match="not found"):
        detect(tmp_path / "nowhere")


def test_prepare_refuses_existing_out(clips, tmp_path, capsys):
    src = _folder(clips, tmp_path / "src")
    out = tmp_path / "m.jsonl"
    out.write_text('{"id": "old", "audio": "x.wav"}\n')
    assert main(["prepare", str(src), "--out", str(out)]) == 1
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert out.read_text().startswith('{"id": "old"')
    assert main(["prepare", str(src), "--out", str(out), "--overwrite"]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["u0", "u1", "u2"]


def test_prepare_all_rejected_exits_nonzero(clips, tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(3):
        clips[i].write(src / f"u{i}.wav")
    (src / "u0.txt").write_bytes(b"\xff")
    out = tmp_path / "m.jsonl"
    assert main(["prepare", str(src), "--out", str(out), "--format", "folder"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "read 3 rows, stored 0, rejected 3" in err
    assert "most common: missing transcript (2); not UTF-8 (1)" in err
    assert f"rejects: {tmp_path / 'm.rejects.jsonl'}" in err
    assert not out.exists()
    assert len((tmp_path / "m.rejects.jsonl").read_text().splitlines()) == 3


def test_tokenize_a_directory_directly(clips, unit_tokenizer, tmp_path, capsys):
    src = _folder(clips, tmp_path / "src")
    (src / "orphan.txt").write_text("no audio")
    store = tmp_path / "store"
    args = ["tokenize", str(src), "--out", str(store), "--tokenizer", f"units={unit_tokenizer}",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "is not a tokunify manifest; importing it as folder" in out
    assert "tokenized 3 utterances" in out and "1 rejected" in out
    assert sorted(TokenStore(store).ids()) == ["u0", "u1", "u2"]
    rejects = [json.loads(x) for x in (store / "rejects-000000.jsonl").read_text().splitlines()]
    assert [r["reason"].rsplit(": ", 1)[-1] for r in rejects] == [
        "transcript without an audio file"
    ]


def test_tokenize_nemo_manifest_directly(clips, unit_tokenizer, tmp_path, capsys):
    clips[0].write(tmp_path / "a.wav")
    clips[1].write(tmp_path / "b.wav")
    m = tmp_path / "nemo.json"
    m.write_text("".join(json.dumps({"audio_filepath": f"{n}.wav", "text": c.text, "duration": 1.0}) + "\n"
                         for n, c in zip("ab", clips, strict=False)))  # fmt: skip
    store = tmp_path / "store"
    assert main(["tokenize", str(m), "--out", str(store), "--tokenizer",
                 f"units={unit_tokenizer}", "--no-progress"]) == 0  # fmt: skip
    assert "importing it as nemo" in capsys.readouterr().out
    assert sorted(TokenStore(store).ids()) == ["a", "b"]


def test_tokenize_all_rejected_exits_nonzero(tmp_path, unit_tokenizer, capsys):
    m = tmp_path / "m.jsonl"
    rows = [{"id": f"u{i}", "audio": f"missing{i}.wav", "text": "x"} for i in range(3)]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    store = tmp_path / "store"
    assert main(["tokenize", str(m), "--out", str(store), "--tokenizer",
                 f"units={unit_tokenizer}", "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "read 4 rows, stored 0, rejected 4" in err
    assert "most common:" in err and "malformed row" in err
    assert f"rejects: {store / 'rejects-*.jsonl'}" in err


@pytest.mark.parametrize(("module", "fmt", "extra"), [("lhotse", "lhotse", "lhotse"),
                                                     ("datasets", "hf", "hf")])  # fmt: skip
def test_missing_extra_names_it(tmp_path, monkeypatch, capsys, module, fmt, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    if fmt == "lhotse":
        src = tmp_path / "cuts.jsonl"
        src.write_text(
            '{"id": "c", "start": 0, "duration": 1, "recording": {}, "type": "MonoCut"}\n'
        )
    else:
        src = tmp_path / "pq"
        src.mkdir()
        (src / "train.parquet").write_bytes(b"")
    assert main(["prepare", str(src), "--out", str(tmp_path / "m.jsonl")]) == 1
    assert f"needs `pip install tokunify[{extra}]`" in capsys.readouterr().err


def test_prepare_given_format_that_does_not_fit(clips, tmp_path, capsys):
    src = _folder(clips, tmp_path / "src", 1)
    assert main(["prepare", str(src), "--out", str(tmp_path / "m.jsonl"), "--format", "kaldi"]) == 1
    assert "not a kaldi layout" in capsys.readouterr().err
    assert not (tmp_path / "m.jsonl").exists()


def test_whisper_normaliser_is_evals():
    """`--text-normalize whisper` is the very function eval scores with."""
    from tokunify.data.importers import TEXT_NORMALIZERS
    from tokunify.generate import evaluate

    assert TEXT_NORMALIZERS["whisper"] is evaluate.normalize
    assert TEXT_NORMALIZERS["whisper"]("Hello,  World!") == "hello world"
