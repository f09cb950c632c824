"""The one content hasher (and atomic writes): equal bytes give equal hashes, any edit changes it."""

from __future__ import annotations

import shutil

import pytest

from tokunify.core.fsio import atomic_write_text, content_hash


def test_a_directory_hash_covers_every_file_but_hidden_ones(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\x00weights")
    (model / "merges.txt").write_text("a b\n")  # decides tokenization: covered
    (model / "sub" / "config.json").write_text("{}")
    h = content_hash(model)
    assert len(h) == 16
    shutil.copytree(model, tmp_path / "copy")
    assert content_hash(tmp_path / "copy") == h  # content, not path
    (model / ".cache").mkdir()
    (model / ".cache" / "download.metadata").write_text("etag")  # hub bookkeeping: ignored
    atomic_write_text(model / "notes.md", "x")  # leaves no .tmp sibling behind
    assert content_hash(model) != h
    (model / "notes.md").unlink()
    assert content_hash(model) == h
    for name, data in (("merges.txt", b"a c\n"), ("sub/config.json", b"{ }")):
        shutil.copytree(tmp_path / "copy", tmp_path / name.replace("/", "_"))
        (tmp_path / name.replace("/", "_") / name).write_bytes(data)
        assert content_hash(tmp_path / name.replace("/", "_")) != h
    (tmp_path / "copy" / "merges.txt").rename(tmp_path / "copy" / "merges2.txt")
    assert content_hash(tmp_path / "copy") != h  # names count too


def test_a_file_hash_is_its_bytes(tmp_path):
    a, b = tmp_path / "a.model", tmp_path / "b.model"
    a.write_bytes(b"pieces")
    b.write_bytes(b"pieces")
    assert content_hash(a) == content_hash(b)
    b.write_bytes(b"pieces!")
    assert content_hash(a) != content_hash(b)
    with pytest.raises(FileNotFoundError, match="no such file or directory to hash"):
        content_hash(tmp_path / "missing")
