"""Token store: rejects, kill + resume, shard slices + merge, reader, mismatch refusal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import soxr
import yaml
from helpers import UNITS_K

from tokunify.cli import main
from tokunify.data.manifest import read_manifest
from tokunify.data.store import StoreError, TokenStore
from tokunify.tokenize.commands import TokenizeArgs, run_tokenize

K = UNITS_K


@pytest.fixture(scope="module")
def mel_tokenizer(unit_tokenizer) -> Path:
    return unit_tokenizer


def rows_of(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def write_rows(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def absolute(rows: list[dict], base: Path) -> list[dict]:
    return [{**r, "audio": str(base / r["audio"])} for r in rows]


def records(store: Path) -> dict[str, tuple]:
    s = TokenStore(store)
    out = {}
    for i in range(len(s)):
        r = s[i]
        out[r.id] = (r.text, r.text_ids.tolist() if r.text_ids is not None else None,
                     {k: v.tolist() for k, v in r.streams.items()}, {k: v.tolist() for k, v in r.durations.items()})  # fmt: skip
    return out


def tokenize(manifest, out, tokenizer, *extra) -> int:
    return main(
        [
            "tokenize",
            str(manifest),
            "--out",
            str(out),
            "--tokenizer",
            f"units={tokenizer}",
            "--no-progress",
            *extra,
        ]
    )


def test_rejects_are_logged_and_the_job_carries_on(
    speech_manifest, mel_tokenizer, sp_dir, tmp_path, capsys
):
    good = absolute(rows_of(speech_manifest), speech_manifest.parent)[:6]
    src = good[0]["audio"]
    wav, sr = sf.read(src, dtype="float32")
    d = tmp_path / "bad"
    d.mkdir()
    raw = Path(src).read_bytes()
    (d / "trunc.wav").write_bytes(raw[: len(raw) // 2])
    (d / "zero.wav").write_bytes(b"")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), sr)
    sf.write(d / "short.wav", wav[:100], sr)
    nan = wav.copy()
    nan[50] = np.nan
    sf.write(d / "nan.wav", nan, sr, subtype="FLOAT")
    sf.write(d / "stereo.wav", np.stack([wav, wav], 1), sr)  # accepted: mixed to mono
    sf.write(d / "44k.wav", soxr.resample(wav, sr, 44100), 44100)  # accepted: resampled
    bad = [
        {"id": "trunc", "audio": str(d / "trunc.wav"), "text": "x"},
        {"id": "zero", "audio": str(d / "zero.wav"), "text": "x"},
        {"id": "empty", "audio": str(d / "empty.wav"), "text": "x"},
        {"id": "short", "audio": str(d / "short.wav"), "text": "x"},
        {"id": "nan", "audio": str(d / "nan.wav"), "text": "x"},
        {"id": "missing", "audio": str(d / "missing.wav"), "text": "x"},
        {"id": "notext", "audio": src, "text": ""},
        {"id": good[1]["id"], "audio": src, "text": "duplicate"},
        {"id": "stereo", "audio": str(d / "stereo.wav"), "text": "fine"},
        {"id": "44k", "audio": str(d / "44k.wav"), "text": "fine"},
    ]
    manifest = write_rows(good + bad, tmp_path / "m.jsonl")
    with manifest.open("ab") as f:  # a transcript that is not UTF-8
        f.write(b'{"id": "latin1", "audio": "' + src.encode() + b'", "text": "caf\xe9"}\n')
    store = tmp_path / "store"
    assert (
        tokenize(
            manifest,
            store,
            mel_tokenizer,
            "--text-tokenizer",
            str(sp_dir),
            "--require-text",
            "--chunk-size",
            "4",
        )
        == 0
    )
    rejects = {}
    for p in store.glob("rejects-*.jsonl"):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            rejects[r["id"]] = r["reason"]
    assert set(rejects) == {
        "trunc",
        "zero",
        "empty",
        "short",
        "nan",
        "missing",
        "notext",
        good[1]["id"],
        "latin1",
    }
    assert "truncated" in rejects["trunc"] and "unreadable" in rejects["zero"]
    assert "empty audio" in rejects["empty"] and "shorter than the minimum" in rejects["short"]
    assert "NaN" in rejects["nan"] and "file not found" in rejects["missing"]
    assert "transcript" in rejects["notext"] and "duplicate id" in rejects[good[1]["id"]]
    assert "not UTF-8" in rejects["latin1"]
    recs = records(store)
    assert set(recs) == {r["id"] for r in good} | {
        "stereo",
        "44k",
    }  # the first row of a duplicated id stays
    assert recs["stereo"][2]["units"] == recs[good[0]["id"]][2]["units"]  # stereo == its mono mix
    assert "8 utterances" in capsys.readouterr().out


def test_kill_and_resume_equals_uninterrupted(speech_manifest, mel_tokenizer, tmp_path):
    rows = absolute(rows_of(speech_manifest), speech_manifest.parent)
    full = write_rows(rows, tmp_path / "full.jsonl")
    ref = tmp_path / "ref"
    assert tokenize(full, ref, mel_tokenizer, "--chunk-size", "2") == 0
    # The 9th row's audio is a FIFO: reading it blocks, so the job is stuck mid-run, deterministically.
    fifo = tmp_path / "blocking.wav"
    os.mkfifo(fifo)
    real = rows[8]["audio"]
    rows[8] = {**rows[8], "audio": str(fifo)}
    manifest = write_rows(rows, tmp_path / "m.jsonl")
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "tokunify", "tokenize", str(manifest), "--out", str(store),
           "--tokenizer", f"units={mel_tokenizer}", "--chunk-size", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(store.glob("shard-*.json"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in store.glob("shard-*.json"))
    assert done == [
        f"shard-{i:06d}.json" for i in range(4)
    ]  # chunks 0-3 done, 4 (rows 8-9) was not
    before = {p.name: p.stat().st_mtime_ns for p in store.glob("shard-*.parquet")}
    fifo.unlink()
    shutil.copy(real, fifo)
    assert tokenize(manifest, store, mel_tokenizer, "--chunk-size", "2") == 0
    after = {p.name: p.stat().st_mtime_ns for p in store.glob("shard-*.parquet")}
    assert all(after[k] == v for k, v in before.items())  # finished shards were not rewritten
    assert not list(store.glob(".*tmp*"))
    assert records(store) == records(ref)
    assert len(records(ref)) == len(rows)


def test_shard_slices_and_merge_equal_single_run(speech_manifest, mel_tokenizer, tmp_path):
    single = tmp_path / "single"
    assert tokenize(speech_manifest, single, mel_tokenizer, "--chunk-size", "3") == 0
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"part{i}")
        assert (
            tokenize(
                speech_manifest, parts[-1], mel_tokenizer, "--chunk-size", "3", "--shard", f"{i}/3"
            )
            == 0
        )
    with pytest.raises(StoreError, match="incomplete store"):
        TokenStore(parts[0])
    merged = tmp_path / "merged"
    assert main(["merge-stores", str(merged), *map(str, parts)]) == 0
    assert records(merged) == records(single)
    for p in single.glob("shard-*.parquet"):
        assert pq.read_table(p).equals(pq.read_table(merged / p.name))
    # two local workers give the same store
    workers = tmp_path / "workers"
    assert (
        tokenize(speech_manifest, workers, mel_tokenizer, "--chunk-size", "3", "--workers", "2")
        == 0
    )
    assert records(workers) == records(single)


def test_mismatch_is_refused(speech_manifest, mel_tokenizer, tmp_path):
    store = tmp_path / "s"
    assert tokenize(speech_manifest, store, mel_tokenizer, "--chunk-size", "50") == 0
    other = tmp_path / "other.yaml"
    cfg = yaml.safe_load(mel_tokenizer.read_text())
    cfg["dedup"] = False
    cfg["centroids"] = str(mel_tokenizer.parent / cfg["centroids"])
    other.write_text(yaml.safe_dump(cfg))
    with pytest.raises(
        StoreError, match=r"exists, made from other inputs or settings: .*streams\.units \("
    ):
        run_tokenize(
            TokenizeArgs(
                manifest=str(speech_manifest),
                out=str(store),
                tokenizer=[f"units={other}"],
                progress=False,
            )
        )
    s = TokenStore(store)
    s.check_streams({"units": ("units", K, 1)})
    with pytest.raises(StoreError, match="tokenizers do not match"):
        s.check_streams({"units": ("units", K + 1, 1)})
    with pytest.raises(StoreError, match="no stream 'codec'"):
        s.check_streams({"codec": ("codec", 1024, 8)})
    assert (
        main(["merge-stores", str(tmp_path / "m"), str(store), str(store)]) == 1
    )  # same chunks twice


def test_an_edited_manifest_of_the_same_length_is_refused_on_resume(
    speech_manifest, mel_tokenizer, tmp_path, capsys
):
    rows = absolute(rows_of(speech_manifest), speech_manifest.parent)
    manifest = write_rows(rows, tmp_path / "m.jsonl")
    store = tmp_path / "store"
    assert tokenize(manifest, store, mel_tokenizer, "--chunk-size", "4", "--shard", "0/2") == 0
    done = {p.name: p.read_bytes() for p in store.glob("shard-*.parquet")}
    edited = [dict(r) for r in rows]
    edited[-1]["text"] = "a different transcript"  # same number of rows, one row's content edited
    write_rows(edited, tmp_path / "edited.jsonl")
    capsys.readouterr()
    assert tokenize(tmp_path / "edited.jsonl", store, mel_tokenizer, "--chunk-size", "4") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(store) in err
    assert "made from other inputs or settings: provenance.manifest (" in err
    assert "streams" not in err and "chunk_size" not in err
    # the same rows from another file (keys in another order): the store resumes
    moved = tmp_path / "elsewhere" / "same.jsonl"
    moved.parent.mkdir()
    moved.write_text("".join(json.dumps(dict(reversed(r.items()))) + "\n" for r in rows))
    capsys.readouterr()
    assert tokenize(moved, store, mel_tokenizer, "--chunk-size", "4") == 0
    assert {p.name: p.read_bytes() for p in store.glob("shard-*.parquet") if p.name in done} == done
    assert len(TokenStore(store)) + TokenStore(store).rejects == len(rows)
    # a changed setting that decides the rejects is refused too
    assert tokenize(manifest, store, mel_tokenizer, "--chunk-size", "4", "--min-seconds", "9") == 1
    assert "provenance.tokenize.min_seconds (0.1 -> 9.0)" in capsys.readouterr().err


def test_reader_order_ranks_and_inspect(speech_manifest, mel_tokenizer, sp_dir, tmp_path, capsys):
    store = tmp_path / "s"
    assert (
        tokenize(
            speech_manifest,
            store,
            mel_tokenizer,
            "--chunk-size",
            "4",
            "--text-tokenizer",
            str(sp_dir),
        )
        == 0
    )
    s = TokenStore(store)
    n = len(s)
    assert n == len(list(read_manifest(speech_manifest)))
    a, b = s.order(seed=1), s.order(seed=1)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(n))
    assert not np.array_equal(a, s.order(seed=2)) and not np.array_equal(
        a, s.order(seed=1, epoch=1)
    )
    ranks = [[r.id for r in s.iterate(seed=1, rank=k, world_size=2)] for k in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(s[i].id for i in range(n)) and not set(
        ranks[0]
    ) & set(ranks[1])
    assert [r.id for r in s.iterate(seed=1, rank=0, world_size=2, start=3)] == ranks[0][3:]
    r = s[0]
    assert r.words and r.text and r.text_ids is not None and r.durations["units"].sum() > 0
    assert main(["inspect", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"{n} utterances" in out and f"stream units: mel_units K={K}" in out and "-> '" in out
    # other tools read the shards
    t = pq.read_table(next(store.glob("shard-*.parquet")))
    assert {"id", "text", "text_ids", "stream.units", "durations.units", "words", "seconds"} <= set(
        t.column_names
    )
    assert str(t.schema.field("stream.units").type) == "list<element: uint32>"


def test_lhotse_manifest(speech_manifest, tmp_path):
    lhotse = pytest.importorskip("lhotse")
    from tokunify.data.manifest import read_manifest as rm

    entries = list(rm(speech_manifest))[:2]
    cuts = []
    for e in entries:
        rec = lhotse.Recording.from_file(e.audio, recording_id=e.id)
        ali = {"word": [lhotse.supervision.AlignmentItem(w, s, t - s) for w, s, t in e.words]}
        sup = lhotse.SupervisionSegment(
            id=e.id,
            recording_id=e.id,
            start=0,
            duration=rec.duration,
            text=e.text,
            speaker=e.speaker,
            alignment=ali,
        )
        cuts.append(
            lhotse.MonoCut(
                id=e.id,
                start=0,
                duration=rec.duration,
                channel=0,
                recording=rec,
                supervisions=[sup],
            )
        )
    path = tmp_path / "cuts.jsonl.gz"
    lhotse.CutSet.from_cuts(cuts).to_file(path)
    back = list(rm(path))
    assert [b.id for b in back] == [e.id for e in entries]
    assert back[0].text == entries[0].text and back[0].speaker == entries[0].speaker
    assert [w for w, _, _ in back[0].words] == [w for w, _, _ in entries[0].words]


def test_fairseq2_reader_gives_the_same_store(speech_manifest, mel_tokenizer, tmp_path):
    pytest.importorskip("fairseq2")
    rows = absolute(rows_of(speech_manifest), speech_manifest.parent)
    raw = Path(rows[0]["audio"]).read_bytes()
    (tmp_path / "trunc.wav").write_bytes(raw[: len(raw) // 2])
    rows += [
        {"id": "trunc", "audio": str(tmp_path / "trunc.wav"), "text": "x"},
        {"id": "gone", "audio": str(tmp_path / "gone.wav"), "text": "x"},
    ]
    manifest = write_rows(rows, tmp_path / "m.jsonl")
    a, b = tmp_path / "sf", tmp_path / "fs2"
    assert tokenize(manifest, a, mel_tokenizer, "--chunk-size", "7") == 0
    assert tokenize(manifest, b, mel_tokenizer, "--chunk-size", "7", "--reader", "fairseq2") == 0
    assert records(a) == records(b)
    rej = [
        sorted(
            json.loads(x)["id"]
            for p in sorted(s.glob("rejects-*.jsonl"))
            for x in p.read_text().splitlines()
        )
        for s in (a, b)
    ]
    assert rej[0] == rej[1] == ["gone", "trunc"]


def test_merge_refuses_slices_of_other_chunking_or_tokenizers(
    speech_manifest, mel_tokenizer, tmp_path, capsys
):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert tokenize(speech_manifest, a, mel_tokenizer, "--chunk-size", "6", "--shard", "0/2") == 0
    assert tokenize(speech_manifest, b, mel_tokenizer, "--chunk-size", "9", "--shard", "1/2") == 0
    other = tmp_path / "other.yaml"
    cfg = yaml.safe_load(mel_tokenizer.read_text())
    other.write_text(
        yaml.safe_dump(
            {**cfg, "dedup": False, "centroids": str(mel_tokenizer.parent / cfg["centroids"])}
        )
    )
    assert tokenize(speech_manifest, c, other, "--chunk-size", "6", "--shard", "1/2") == 0
    capsys.readouterr()
    for s, why in ((b, "chunk_size (6 -> 9)"), (c, "streams.units (")):
        assert main(["merge-stores", str(tmp_path / f"m-{s.name}"), str(a), str(s)]) == 1
        err = capsys.readouterr().err
        assert "cannot merge" in err and why in err
        assert not list((tmp_path / f"m-{s.name}").glob("shard-*"))
