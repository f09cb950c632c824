"""`tokunify tokenize`: the job that turns a manifest into a token store.

manifest -> chunks of ``chunk_size`` rows -> (this process's slice of them) -> workers that decode,
batch by audio seconds and tokenize -> :func:`tokunify.data.store.write_chunk`. The store owns the file
names, the columns and the atomic publication; this module owns only the job.

Slices: chunk ``c`` belongs to slice ``c % N``. The slice comes from ``--shard i/N``, else from the
launcher (torchrun / accelerate / SLURM, see :mod:`tokunify.data.launcher`), so one command per process
fills one store; with ``--out`` on a shared file system the slices land in the same directory and
the last process to finish finds the store complete. Local ``--workers`` split a slice again;
``--engine ray`` runs the same chunks on a Ray cluster (:mod:`tokunify.tokenize.ray`; the engines are
:mod:`tokunify.tokenize.engines`, the command :func:`tokunify.tokenize.commands.run_tokenize`). Finished
chunks are skipped, so a killed job resumes: every row lands exactly once, in its shard or in that
shard's rejects file, and finished shards are never rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tokunify.core.config import read_data_file
from tokunify.core.fsio import content_hash
from tokunify.data.audio import AudioError, check_audio, read_many, to_mono
from tokunify.data.importers import ImportOptions, detect, import_rows, is_foreign
from tokunify.data.manifest import Entry, read_manifest
from tokunify.data.store import (
    Record,
    Reject,
    StoreMeta,
    StreamInfo,
    record_from_entry,
    rows_digest,
    write_chunk,
)
from tokunify.data.store.job import check_counts, rows_of
from tokunify.tokenizers.base import stream_kind_of, tokenizer_from_config
from tokunify.tokenizers.identity import text_tokenizer_hash, tokenizer_hash
from tokunify.tokenizers.text import load_text_tokenizer


@dataclass
class TokenizeArgs:
    """Tokenize a manifest into a sharded token store (resumable; shardable across machines)."""

    manifest: str = field(metadata={"positional": True})
    """JSONL/TSV manifest (id, audio[, start, end], text, speaker[, words])."""
    out: str
    """Store directory (created; an existing one with the same settings is resumed)."""
    tokenizer: list[str] = field(default_factory=list)
    """Speech tokenizer configs, each CONFIG or NAME=CONFIG (names default to units, codec, ...)."""
    text_tokenizer: str | None = None
    """Text tokenizer (HF dir/id or SentencePiece .model) for the text_ids column."""
    chunk_size: int = 1000
    """Manifest rows per shard."""
    workers: int = 1
    """Local worker processes."""
    shard: str | None = None
    """This job's slice i/N of the chunks. Default: from torchrun/accelerate (RANK, WORLD_SIZE) or
    SLURM (SLURM_ARRAY_TASK_ID/COUNT, SLURM_PROCID/NTASKS), else 0/1. Slices of one --out on a
    shared file system make one store; slices in separate dirs are joined with merge-stores."""
    batch_seconds: float = 100.0
    """Audio seconds per tokenizer batch (utterances are batched by length)."""
    min_seconds: float = 0.1
    """Shorter clips are rejected."""
    require_text: bool = False
    """Reject rows whose transcript is missing or empty."""
    device: str = "cpu"
    """Device for the tokenizers; `cuda` means cuda:LOCAL_RANK under a launcher."""
    reader: Literal["soundfile", "fairseq2"] = "soundfile"
    """Audio reader: soundfile, or fairseq2's native pipeline (decodes files in parallel; extra)."""
    engine: Literal["native", "ray"] = "native"
    """native: this process (and --workers); ray: Ray Data (decode tasks + tokenizer actor pool; extra)."""
    ray_address: str | None = None
    """Ray cluster to join (`auto`, `ray://host:10001`); default: the running one, else a local one."""
    ray_actors: int = 2
    """Ray: tokenizer actors (the pool's concurrency)."""
    ray_gpus_per_actor: float = 1.0
    """Ray: GPUs per tokenizer actor when --device is cuda."""
    ray_cpus_per_actor: float = 1.0
    """Ray: CPUs reserved per tokenizer actor (also its torch threads, at least 1)."""
    ray_decode_cpus: float = 0.5
    """Ray: CPUs reserved per audio-decoding task."""
    progress: bool = True
    """Show a progress bar."""


Row = Entry | Reject
Decoded = tuple[Entry, np.ndarray, int]  # entry, mono waveform [N], sample rate


class TokenizeError(ValueError):
    """A job that stored nothing (one line: rows read, rejected, the common reasons)."""


def load_rows(manifest: str | Path) -> list[Row]:
    """Every manifest row in order: entries, or rejects for malformed rows and duplicate ids.

    A directory or a foreign manifest (NeMo, HF-style or lhotse JSONL, ...) goes through the
    importer that ``tokunify prepare`` would detect for it, and the job says so.
    """
    src = Path(manifest)
    if is_foreign(src):
        importer = detect(src)
        print(f"tokenize: {src} is not a tokunify manifest; importing it as {importer.name} "
              f"({importer.description}), as `tokunify prepare` does")  # fmt: skip
        return list(import_rows(src, importer, ImportOptions()))
    rows: list[Row] = []

    def on_error(where: str, row_id: str | None, reason: str) -> None:
        rows.append(Reject(row_id, None, reason))

    seen: set[str] = set()
    for e in read_manifest(manifest, on_error=on_error):
        if e.id in seen:
            rows.append(Reject(e.id, str(e.audio), "duplicate id (an earlier row has it)"))
        else:
            seen.add(e.id)
            rows.append(e)
    return rows


def parse_tokenizers(specs: list[str]) -> dict[str, tuple[dict[str, Any], Path]]:
    """``[NAME=]CONFIG`` -> {name: (config, config dir)}; default names by stream kind."""

    out: dict[str, tuple[dict[str, Any], Path]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        cfg = read_data_file(path)
        if not name:
            base = stream_kind_of(cfg)  # "units" or "codec", from the registered class
            name = base if base not in out else f"{base}{sum(k.startswith(base) for k in out)}"
        out[name] = (cfg, Path(path).parent)
    return out


# Tokenizer config keys that may name local files or directories (an encoder, its centroids).
PATH_KEYS = ("source", "centroids", "checkpoint", "weights", "config")


def local_files(config: dict[str, Any], base: Path) -> dict[str, str]:
    """``key -> content hash`` of every local file or directory a tokenizer config names (a hub id
    or a name is no path and is covered by the config itself)."""
    out = {}
    for key in PATH_KEYS:
        v = config.get(key)
        if isinstance(v, str) and v:
            p = Path(v) if Path(v).is_absolute() else base / v
            p = p if p.exists() else Path(v)
            if p.exists():
                out[key] = content_hash(p)
    return out


def build_meta(
    args: TokenizeArgs,
    rows: Sequence[Row],
    tokenizers: dict[str, tuple[dict[str, Any], Path]] | None = None,
) -> StoreMeta:
    """The store's ``store.json`` for this job; ``tokenizers`` default to ``args.tokenizer``.

    Its provenance holds what decides the rows besides the tokenizers' configs: the rows' content
    (:func:`~tokunify.data.store.rows_digest`), the bytes of local files the tokenizers and the text
    tokenizer name, and the settings that decide rejects."""

    streams = {}
    files: dict[str, dict[str, str]] = {}
    specs = parse_tokenizers(args.tokenizer) if tokenizers is None else tokenizers
    for name, (cfg, base) in specs.items():
        tok = tokenizer_from_config(cfg, base_dir=base, device="cpu")
        full = tok.to_config()
        for key in ("centroids",):  # absolute paths: the store may be read from anywhere
            if full.get(key):
                full[key] = (
                    str((base / full[key]).resolve())
                    if not Path(full[key]).is_absolute()
                    else full[key]
                )
        streams[name] = StreamInfo(
            name=name,
            kind=tok.stream_kind,
            cardinality=tok.cardinality,
            num_codebooks=tok.num_codebooks,
            frame_rate=tok.frame_rate,
            dedup=bool(full.get("dedup", False)),
            tokenizer=full,
            hash=tokenizer_hash(full),
        )
        files[name] = local_files(full, base)
    text = None
    if args.text_tokenizer:
        tt = load_text_tokenizer(args.text_tokenizer)
        text = {"source": str(Path(args.text_tokenizer).resolve()) if Path(args.text_tokenizer).exists() else args.text_tokenizer,
                "hash": text_tokenizer_hash(tt), "size": len(tt)}  # fmt: skip
        if Path(args.text_tokenizer).exists():
            files["text_tokenizer"] = {"source": content_hash(args.text_tokenizer)}
    return StoreMeta(
        streams=streams,
        text_tokenizer=text,
        manifest=str(Path(args.manifest).resolve()),
        manifest_rows=len(rows),
        chunk_size=args.chunk_size,
        provenance={
            "manifest": rows_digest(rows),
            "files": files,
            "tokenize": {"min_seconds": args.min_seconds, "require_text": args.require_text},
        },
    )


# ---- one chunk --------------------------------------------------------------------------------
Limits = dict[str, tuple[int, int]]  # stream -> (tokenizer sample rate, its minimum input samples)


def tokenizer_limits(tokenizers: dict[str, Any]) -> Limits:
    return {name: (tok.sample_rate, tok.min_samples) for name, tok in tokenizers.items()}


class Decoder:
    """Reads and checks the audio of manifest rows; needs no tokenizer, only their limits."""

    def __init__(self, args: TokenizeArgs, limits: Limits):
        self.args, self.limits = args, limits

    def _load(
        self, e: Entry, decoded: tuple[np.ndarray, int] | AudioError
    ) -> tuple[np.ndarray, int]:
        if isinstance(decoded, AudioError):
            raise decoded
        wav, sr = decoded
        mono = check_audio(to_mono(wav), str(e.audio))
        secs = len(mono) / sr
        if secs < self.args.min_seconds:
            raise AudioError(
                f"{e.audio}: {secs:.3f} s is shorter than the minimum {self.args.min_seconds} s"
            )
        for name, (rate, min_samples) in self.limits.items():
            if secs * rate < min_samples:
                raise AudioError(f"{e.audio}: too short for one frame of tokenizer {name!r}")
        return mono, sr

    def _check_text(self, e: Entry) -> None:
        if self.args.require_text and not (e.text or "").strip():
            raise ValueError(f"{e.id}: empty or missing transcript")

    def decode(self, rows: list[Row]) -> tuple[list[Decoded], list[Reject]]:
        """Read and check every row's audio; rows in order, failures as rejects."""
        good: list[Decoded] = []
        rejects: list[Reject] = []
        entries = [r for r in rows if isinstance(r, Entry)]
        audio = dict(
            zip(
                (id(e) for e in entries),
                read_many([(e.audio, e.start, e.end) for e in entries], self.args.reader),
                strict=True,
            )
        )
        for r in rows:
            if isinstance(r, Reject):
                rejects.append(r)
                continue
            try:
                self._check_text(r)
                wav, sr = self._load(r, audio[id(r)])
                good.append((r, wav, sr))
            except (AudioError, ValueError) as err:
                rejects.append(Reject(r.id, str(r.audio), str(err)))
        return good, rejects


class ChunkWorker:
    """Loads the tokenizers once and turns manifest chunks into shards.

    :meth:`process` = decode (read and check audio) + :meth:`encode_and_write` (length-sorted
    batches through every tokenizer, then the store writer); the Ray engine runs the parts apart.
    """

    def __init__(self, args: TokenizeArgs, meta: StoreMeta, device: str | None = None):

        self.args, self.meta, self.root = args, meta, Path(args.out)
        self.tokenizers = {
            name: tokenizer_from_config(info.tokenizer, device=device or args.device)
            for name, info in meta.streams.items()
        }
        self.decoder = Decoder(args, tokenizer_limits(self.tokenizers))
        self.text_tok = None
        if meta.text_tokenizer:
            self.text_tok = load_text_tokenizer(meta.text_tokenizer["source"])

    def process(self, chunk: int, rows: list[Row]) -> tuple[list[Record], list[Reject]]:
        """The records and rejects of one chunk (the store job publishes them)."""
        good, rejects = self.decoder.decode(rows)
        return self.encode(good, rejects)

    def encode(
        self, good: list[Decoded], rejects: list[Reject]
    ) -> tuple[list[Record], list[Reject]]:
        """Tokenize decoded rows: length-sorted batches through every tokenizer."""
        encoded, failed = self._encode(good)
        return self.records([g for g in good if g[0].id in encoded], encoded), rejects + failed

    def encode_and_write(
        self, chunk: int, good: list[Decoded], rejects: list[Reject], total: int
    ) -> dict[str, Any]:
        """Tokenize the decoded rows of ``chunk`` and publish the chunk; returns its stats."""
        records, rejected = self.encode(good, rejects)
        check_counts(chunk, total, len(records), len(rejected), "tokenize")
        return {**write_chunk(self.root, self.meta, chunk, records, rejected), "total": total}

    def records(self, done: list[Decoded], enc: dict[str, dict[str, Any]]) -> list[Record]:
        out = []
        for e, wav, sr in done:
            text_ids = None
            if self.text_tok is not None:
                ids = self.text_tok.encode(e.text or "", add_special_tokens=False)
                text_ids = np.asarray(ids, dtype=np.uint32)
            streams = {k: v for k, v in enc[e.id].items() if k in self.meta.streams}
            durations = {
                k[len("durations.") :]: v
                for k, v in enc[e.id].items()
                if k.startswith("durations.")
            }
            out.append(record_from_entry(e, len(wav) / sr, text_ids, streams, durations))
        return out

    def _encode(
        self, items: list[tuple[Entry, np.ndarray, int]]
    ) -> tuple[dict[str, dict[str, Any]], list[Reject]]:
        """Length-sorted batches of about ``batch_seconds`` of audio through every tokenizer."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][1]) / items[i][2])
        batches, cur, cur_s = [], [], 0.0
        for i in order:
            s = len(items[i][1]) / items[i][2]
            if cur and cur_s + s > self.args.batch_seconds:
                batches.append(cur)
                cur, cur_s = [], 0.0
            cur.append(i)
            cur_s += s
        if cur:
            batches.append(cur)
        out: dict[str, dict[str, Any]] = {}
        failed: list[Reject] = []
        for batch in batches:
            try:
                res = self._encode_batch([items[i] for i in batch])
            except Exception:  # isolate the item that breaks the batch
                res = {}
                for i in batch:
                    try:
                        res.update(self._encode_batch([items[i]]))
                    except Exception as err:
                        e = items[i][0]
                        failed.append(Reject(e.id, str(e.audio), f"tokenizer failed: {err}"))
            out.update(res)
        return out, failed

    def _encode_batch(
        self, items: list[tuple[Entry, np.ndarray, int]]
    ) -> dict[str, dict[str, Any]]:
        res: dict[str, dict[str, Any]] = {e.id: {} for e, _, _ in items}
        srs = {sr for _, _, sr in items}
        for name, tok in self.tokenizers.items():
            for sr in srs:  # encode() resamples; group by input rate
                group = [(e, w) for e, w, r in items if r == sr]
                o = tok.encode(
                    [w for _, w in group], sample_rate=sr, names=[str(e.audio) for e, _ in group]
                )
                for j, (e, _) in enumerate(group):
                    res[e.id][name] = (
                        o.ids[j].numpy().astype(np.uint32)
                    )  # units [T]; codec [n_q, T]
                    if o.durations is not None:
                        res[e.id]["durations." + name] = o.durations[j].numpy().astype(np.uint32)
        return res


def chunk_of(rows: list[Row], meta: StoreMeta, chunk: int) -> list[Row]:
    return rows_of(rows, meta, chunk)


def audio_rate(totals: dict[str, float], elapsed: float) -> str:
    hours = totals["seconds"] / 3600
    rate = hours / max(elapsed, 1e-9)
    return f"{hours:.3f} h audio, {rate:.5f} audio-h/s (x{rate * 3600:.0f} real time)"
