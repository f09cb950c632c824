"""`tokenize --engine ray` on a local Ray instance (2 CPUs, shared by this module's tests): the
same store as the native path, and a killed driver resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokunify.cli import main
from tokunify.data.store import TokenStore

ray = pytest.importorskip("ray", reason="Ray Data is the [ray] extra")

CHUNK = "3"
RAY_ARGS = ["--engine", "ray", "--ray-actors", "2", "--ray-cpus-per-actor", "0.5"]


@pytest.fixture(scope="module")
def ray_address():
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def store_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.startswith(".")}


def manifest_with(
    speech_manifest: Path, out: Path, extra: list[dict], audio: dict[int, str]
) -> Path:
    rows = [json.loads(x) for x in speech_manifest.read_text().splitlines()]
    rows = [{**r, "audio": str(speech_manifest.parent / r["audio"])} for r in rows]
    for i, a in audio.items():
        rows[i] = {**rows[i], "audio": a}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows + extra))
    return out


def args(manifest: Path, out: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["tokenize", str(manifest), "--out", str(out), "--tokenizer", f"units={tokenizer}",
            "--chunk-size", CHUNK, "--no-progress", *extra]  # fmt: skip


def test_ray_engine_writes_the_native_store(
    ray_address, speech_manifest, unit_tokenizer, sp_dir, tmp_path, capsys
):
    first = json.loads(speech_manifest.read_text().splitlines()[0])
    raw = (speech_manifest.parent / first["audio"]).read_bytes()
    (tmp_path / "trunc.wav").write_bytes(raw[: len(raw) // 2])
    bad = [
        {"id": "trunc", "audio": str(tmp_path / "trunc.wav"), "text": "x"},
        {"id": "gone", "audio": str(tmp_path / "gone.wav"), "text": "x"},
        {"id": first["id"], "audio": str(tmp_path / "gone.wav"), "text": "duplicate"},
    ]
    manifest = manifest_with(speech_manifest, tmp_path / "m.jsonl", bad, {})
    text = ["--text-tokenizer", str(sp_dir)]
    native, viaray = tmp_path / "native", tmp_path / "ray"
    assert main(args(manifest, native, unit_tokenizer, *text)) == 0
    capsys.readouterr()
    assert main(args(manifest, viaray, unit_tokenizer, *text, *RAY_ARGS)) == 0
    # decoding runs in Ray tasks of its own, not fused into the tokenizer actors
    assert (
        "ray operators: FromItems -> Map(_decode) -> MapBatches(_Encoder)"
        in capsys.readouterr().out
    )
    ref = store_bytes(native)
    assert sum(k.startswith("rejects-") and len(v) > 0 for k, v in ref.items()) >= 1
    # same rows, ids, rejects, stats and store.json, byte for byte
    assert store_bytes(viaray) == ref
    s = TokenStore(viaray)
    assert s.rejects == 3 and len(s) == 18


def test_ray_killed_driver_resumes(ray_address, speech_manifest, unit_tokenizer, tmp_path):
    # Row 16 (chunk 5, the last) is a FIFO: its decode task blocks while the other chunks finish.
    fifo = tmp_path / "blocking.wav"
    os.mkfifo(fifo)
    real = json.loads(speech_manifest.read_text().splitlines()[16])["audio"]
    manifest = manifest_with(speech_manifest, tmp_path / "m.jsonl", [], {16: str(fifo)})
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "tokunify", *args(manifest, store, unit_tokenizer, *RAY_ARGS),
           "--ray-address", ray_address]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    others = {0, 1, 2, 3, 4}
    deadline = time.time() + 180
    while time.time() < deadline:
        if {int(p.name[6:12]) for p in store.glob("shard-*.json")} >= others:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the Ray tokenize job did not finish the unblocked chunks in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    part = TokenStore(store, require_complete=False)
    assert part.missing_chunks == [5] and len(part) == 15
    shards = {p.name[:12] for p in store.glob("shard-*.parquet")}
    assert shards == {p.name[:12] for p in store.glob("shard-*.json")}  # only complete shards
    before = {p.name: p.stat().st_mtime_ns for p in store.glob("shard-*.parquet")}
    fifo.unlink()
    shutil.copy(speech_manifest.parent / real, fifo)
    assert main(args(manifest, store, unit_tokenizer, *RAY_ARGS)) == 0
    assert all(
        before[p.name] == p.stat().st_mtime_ns
        for p in store.glob("shard-*.parquet")
        if p.name in before
    )
    native = tmp_path / "native"
    assert main(args(manifest, native, unit_tokenizer)) == 0
    assert store_bytes(store) == store_bytes(native)
