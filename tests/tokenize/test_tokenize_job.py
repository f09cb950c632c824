"""The tokenize job under launchers: SLURM (simulated env); torchrun with 2 CPU ranks, one killed,
then a rerun whose store is byte-identical to a single-process run."""

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

CHUNK = "2"


def store_bytes(root: Path) -> dict[str, bytes]:
    """Every visible file of a store, by name (hidden temp files excluded)."""
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.startswith(".")}


def write_rows(manifest: Path, out: Path, audio: dict[int, str] | None = None) -> Path:
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    rows = [{**r, "audio": str(manifest.parent / r["audio"])} for r in rows]
    for i, a in (audio or {}).items():
        rows[i] = {**rows[i], "audio": a}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def tokenize_args(manifest: Path, out: Path, tokenizer: Path) -> list[str]:
    return ["tokenize", str(manifest), "--out", str(out), "--tokenizer", f"units={tokenizer}",
            "--chunk-size", CHUNK, "--no-progress"]  # fmt: skip


def torchrun(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tokunify", *args]  # fmt: skip
    return subprocess.Popen(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_slurm_array_env_fills_one_store(
    speech_manifest, unit_tokenizer, tmp_path, monkeypatch, capsys
):
    manifest = write_rows(speech_manifest, tmp_path / "m.jsonl")
    single = tmp_path / "single"
    assert main(tokenize_args(manifest, single, unit_tokenizer)) == 0
    arr = tmp_path / "array"
    for task in (2, 1):  # SLURM runs array tasks in any order; --array=1-2
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        assert main(tokenize_args(manifest, arr, unit_tokenizer)) == 0
        out = capsys.readouterr().out
        assert f"slice {task - 1}/2 (slurm)" in out
    assert "complete" in out
    assert store_bytes(arr) == store_bytes(single)
    # an explicit --shard wins over the environment: slice 0/1 is the whole manifest
    whole = tmp_path / "whole"
    assert main([*tokenize_args(manifest, whole, unit_tokenizer), "--shard", "0/1"]) == 0
    assert store_bytes(whole) == store_bytes(single)


def _pid_of_rank(marker: str, rank: int) -> int | None:
    """The torchrun worker of ``rank`` among the processes that carry ``marker`` in their env."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            marker.encode() in env
            and f"RANK={rank}".encode() in env
            and b"LOCAL_RANK=" + str(rank).encode() in env
        ):
            return int(d.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank through /proc")
def test_torchrun_killed_rank_then_rerun_equals_single_process(
    speech_manifest, unit_tokenizer, tmp_path
):
    # Row 6 (chunk 3, owned by rank 1) is a FIFO: reading it blocks, so rank 1 is stuck
    # mid-run, deterministically, while rank 0 finishes its chunks.
    fifo = tmp_path / "blocking.wav"
    os.mkfifo(fifo)
    real = json.loads(speech_manifest.read_text().splitlines()[6])["audio"]
    manifest = write_rows(speech_manifest, tmp_path / "m.jsonl", {6: str(fifo)})
    store = tmp_path / "store"
    marker = f"TOKUNIFY_TEST_RUN={tmp_path}"
    proc = torchrun(
        tokenize_args(manifest, store, unit_tokenizer), {"TOKUNIFY_TEST_RUN": str(tmp_path)}
    )
    n_chunks = 9  # 18 rows / 2
    rank0 = {c for c in range(n_chunks) if c % 2 == 0}
    want = rank0 | {1}
    deadline = time.time() + 240
    while time.time() < deadline:
        done = {int(p.name[6:12]) for p in store.glob("shard-*.json")}
        if done >= want:
            break
        time.sleep(0.1)
    pid = _pid_of_rank(marker, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    # only complete shards: every published shard has its stats and reads back; chunk 3 is absent
    shards = {p.name[:12] for p in store.glob("shard-*.parquet")}
    assert (
        shards
        == {p.name[:12] for p in store.glob("shard-*.json")}
        == {f"shard-{c:06d}" for c in want}
    )
    part = TokenStore(store, require_complete=False)
    assert part.missing_chunks == [3, 5, 7] and len(part) == 2 * len(want)
    before = {p.name: p.stat().st_mtime_ns for p in store.glob("shard-*.parquet")}
    fifo.unlink()
    shutil.copy(speech_manifest.parent / real, fifo)
    proc = torchrun(tokenize_args(manifest, store, unit_tokenizer))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "slice 0/2 (torchrun)" in out and "slice 1/2 (torchrun)" in out
    assert f"store {store} complete" in out  # the last rank to finish finds every chunk
    assert all(
        p.stat().st_mtime_ns == before[p.name]
        for p in store.glob("shard-*.parquet")
        if p.name in before
    )
    single = tmp_path / "single"
    assert main(tokenize_args(manifest, single, unit_tokenizer)) == 0
    ref = store_bytes(single)
    assert len([k for k in ref if k.endswith(".parquet")]) == n_chunks
    assert store_bytes(store) == ref  # byte-identical: shards, rejects, stats and store.json


def test_a_killed_local_worker_fails_the_job_instead_of_hanging(
    speech_manifest, unit_tokenizer, tmp_path
):
    fifo = tmp_path / "blocking.wav"
    os.mkfifo(fifo)
    manifest = write_rows(speech_manifest, tmp_path / "m.jsonl", {17: str(fifo)})  # last chunk
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "tokunify", *tokenize_args(manifest, store, unit_tokenizer),
           "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while len(list(store.glob("shard-*.json"))) < 8 and time.time() < deadline:
        time.sleep(0.1)
    workers: list[int] = []
    while len(workers) != 1 and time.time() < deadline:  # the other worker finishes and leaves
        workers = []
        for d in Path("/proc").iterdir():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (d / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == proc.pid and stat[0] != "Z" and b"spawn_main" in cmdline:
                workers.append(int(d.name))
        time.sleep(0.1)
    if len(workers) != 1:
        proc.kill()
        for w in workers:
            os.kill(w, signal.SIGKILL)
    assert len(workers) == 1  # the other worker finished its chunks and left
    os.kill(workers[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "a tokenize worker exited with -9" in out and "rerun" in out
    assert len(TokenStore(store, require_complete=False).missing_chunks) == 1
    fifo.unlink()


def test_the_store_provenance_covers_the_files_a_tokenizer_config_names(tmp_path):
    """A local encoder directory (``source``) and centroids are hashed by content; a hub id is
    covered by the config itself."""
    from tokunify.tokenize.job import local_files

    enc = tmp_path / "encoder"
    enc.mkdir()
    (enc / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "km.npy").write_bytes(b"centroids")
    cfg = {"kind": "ssl_units", "source": "encoder", "centroids": str(tmp_path / "km.npy")}
    before = local_files(cfg, tmp_path)
    assert set(before) == {"source", "centroids"}
    (enc / "model.safetensors").write_bytes(b"other weights")
    after = local_files(cfg, tmp_path)
    assert after["source"] != before["source"] and after["centroids"] == before["centroids"]
    assert local_files({"source": "facebook/hubert-base-ls960"}, tmp_path) == {}
