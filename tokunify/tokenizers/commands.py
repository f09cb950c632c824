"""Subcommands of the speech tokenizers: train-kmeans, convert-kmeans, encode-audio."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from tokunify.core.config import read_data_file
from tokunify.core.fsio import refuse_non_empty
from tokunify.data.audio import AudioError
from tokunify.data.audio import load as load_audio
from tokunify.data.manifest import read_manifest
from tokunify.tokenizers.base import pad_batch, tokenizer_from_config
from tokunify.tokenizers.kmeans import KMeans, convert_sklearn
from tokunify.tokenizers.lda import fit_lda, frame_labels
from tokunify.tokenizers.text import train_sentencepiece
from tokunify.tokenizers.units import features_from_config

KMEANS_FILES = ("centroids.safetensors", "tokenizer.yaml", "rejects.jsonl")  # what it writes


@dataclass
class TrainKMeansArgs:
    """Train k-means centroids on features sampled from a manifest; writes a complete tokenizer config."""

    manifest: str = field(metadata={"positional": True})
    """JSONL/TSV manifest of the audio to sample."""
    tokenizer: str
    """Unit tokenizer config (YAML/JSON) naming the features: kind ssl_units (source, layer) or mel_units."""
    out: str
    """Output directory: centroids.safetensors, tokenizer.yaml, rejects.jsonl (an out that holds
    them already is refused without --overwrite)."""
    overwrite: bool = False
    """Write into a non-empty out (replacing the files this command writes)."""
    k: int = 500
    """Number of units."""
    max_utterances: int = 2000
    """Utterances sampled from the manifest."""
    max_frames: int = 1_000_000
    """Feature frames kept for training (sampled uniformly when there are more)."""
    batch_size: int = 16
    """Utterances per feature batch."""
    iters: int = 100
    """Mini-batch k-means epochs (early stop on convergence)."""
    seed: int = 0
    """Sampling and k-means seed."""
    device: str = "cpu"
    """Device for features and k-means (cpu, cuda, cuda:1, ...)."""
    lda_dim: int = 0
    """If > 0: fit an LDA projection to this many dims on time-aligned frame labels first, and
    cluster in the projected space (saved in the centroids file). Pair it with spliced features."""
    lda_labels: str = "phones"
    """Manifest field of ``[label, start_s, end_s]`` spans used as LDA classes (synth-corpus writes
    ``phones``; any forced alignment works)."""


def run_train_kmeans(args: TrainKMeansArgs) -> Path:
    out = Path(args.out)
    refuse_non_empty(out, args.overwrite, KMEANS_FILES)
    out.mkdir(parents=True, exist_ok=True)
    cfg = read_data_file(args.tokenizer)
    feats = features_from_config(cfg, args.device)
    entries = list(read_manifest(args.manifest))
    rng = random.Random(args.seed)
    rng.shuffle(entries)
    entries = entries[: args.max_utterances]
    chunks: list[torch.Tensor] = []
    spans: list[list | None] = []  # LDA label spans per kept utterance
    rejects = 0
    with (out / "rejects.jsonl").open("w") as rej:
        for a in range(0, len(entries), args.batch_size):
            wavs = []
            for e in entries[a : a + args.batch_size]:
                try:
                    wavs.append(
                        load_audio(e.audio, feats.sample_rate, e.start, e.end, feats.min_samples)
                    )
                    spans.append(
                        _label_spans(e, args.lda_labels, args.manifest) if args.lda_dim else None
                    )
                except AudioError as err:
                    rej.write(
                        json.dumps({"id": e.id, "path": str(e.audio), "reason": str(err)}) + "\n"
                    )
                    rejects += 1
            if wavs:
                batch, lens = pad_batch(wavs)
                chunks += [f.cpu() for f in feats(batch, lens)]
    if not chunks:
        raise ValueError(
            f"{args.manifest}: no usable audio ({rejects} rejected; see {out / 'rejects.jsonl'})"
        )
    projection, lda_note = None, ""
    if args.lda_dim:
        projection, lda_note = _fit_lda(chunks, spans, feats.frame_rate, args)
    x = torch.cat(chunks)  # [N, D]
    x = x[_frame_sample(x.shape[0], args)]
    z = projection(x.to(args.device)).float() if projection is not None else x.to(args.device)
    km = KMeans(KMeans.fit(z, args.k, max_iter=args.iters, seed=args.seed).centroids, projection)
    km.save(
        out / "centroids.safetensors", {"manifest": str(args.manifest), "frames": str(x.shape[0])}
    )
    full = dict(cfg, centroids="centroids.safetensors", cardinality=args.k)
    full.setdefault("dedup", True)
    (out / "tokenizer.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    print(
        f"k-means K={args.k} on {x.shape[0]} frames from {len(entries) - rejects} utterances "
        f"({rejects} rejected){lda_note}; inertia {km.inertia(x.to(args.device)):.4g}; "
        f"wrote {out}/tokenizer.yaml"
    )
    return out


def _frame_sample(n: int, args: TrainKMeansArgs) -> torch.Tensor | slice:
    """All ``n`` frames, or ``args.max_frames`` of them drawn uniformly with ``args.seed``."""
    if n <= args.max_frames:
        return slice(None)
    return torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))[: args.max_frames]


def _label_spans(e, field_name: str, manifest: str) -> list | None:  # type: ignore[no-untyped-def]
    spans = e.words if field_name == "words" else e.extra.get(field_name)
    if spans is None:
        return None
    if not isinstance(spans, list) or not all(
        isinstance(s, (list, tuple)) and len(s) == 3 for s in spans
    ):
        raise ValueError(
            f"{manifest}: row {e.id!r}: {field_name!r} must be a list of [label, start_s, end_s]"
        )
    return spans or None


def _fit_lda(
    chunks: list[torch.Tensor], spans: list[list | None], frame_rate: float, args: TrainKMeansArgs
):  # type: ignore[no-untyped-def]
    """Fit the LDA projection on the utterances that carry label spans."""

    feats, names = [], []
    for f, sp in zip(chunks, spans, strict=True):
        if sp is not None and f.shape[0] > 0:
            feats.append(f)
            names += frame_labels(sp, f.shape[0], frame_rate)
    if not feats:
        raise ValueError(
            f"{args.manifest}: --lda-dim needs time-aligned labels in the {args.lda_labels!r} "
            f"field of the manifest rows; none of the {len(chunks)} utterances has them"
        )
    classes = {n: i for i, n in enumerate(sorted(set(names)))}
    x = torch.cat(feats)  # [N, D]
    y = torch.tensor([classes[n] for n in names])  # [N]
    keep = _frame_sample(x.shape[0], args)
    x, y = x[keep], y[keep]
    proj, evals = fit_lda(x.to(args.device), y.to(args.device), args.lda_dim)
    note = (
        f"; LDA {proj.in_dim}->{proj.out_dim} on {x.shape[0]} frames of {len(feats)} labelled "
        f"utterances, {len(classes)} {args.lda_labels} classes (top ratio {float(evals[0]):.3g})"
    )
    return proj, note


@dataclass
class ConvertKMeansArgs:
    """Convert a joblib-pickled scikit-learn k-means (fairseq/textlesslib recipes) to safetensors.

    This unpickles FILE: only convert files you trust. Bundles never unpickle.
    """

    file: str = field(metadata={"positional": True})
    """The .bin/.pkl/.joblib k-means file."""
    out: str
    """Output centroids .safetensors."""


def run_convert_kmeans(args: ConvertKMeansArgs) -> Path:
    km = convert_sklearn(args.file)
    p = km.save(args.out, {"converted_from": Path(args.file).name})
    print(f"wrote {p}: K={km.k}, dim={km.dim}")
    return p


@dataclass
class EncodeAudioArgs:
    """Encode audio files with a speech tokenizer; prints (or writes) JSON lines of local ids."""

    audio: list[str] = field(metadata={"positional": True})
    """Audio files (any rate and channel count)."""
    tokenizer: str
    """Tokenizer config (YAML/JSON), e.g. tokenizer.yaml from train-kmeans."""
    out: str | None = None
    """Write JSONL here instead of printing."""
    device: str = "cpu"
    """Device (cpu, cuda, ...)."""
    batch_size: int = 8
    """Files per batch."""


def run_encode_audio(args: EncodeAudioArgs) -> None:
    cfg_path = Path(args.tokenizer)
    tok = tokenizer_from_config(
        read_data_file(cfg_path), base_dir=cfg_path.parent, device=args.device
    )
    sink = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    try:
        for a in range(0, len(args.audio), args.batch_size):
            paths = args.audio[a : a + args.batch_size]
            res = tok.encode_files(paths)
            for i, p in enumerate(paths):
                row = {"audio": p, "ids": res.ids[i].tolist()}
                if res.durations is not None:
                    row["durations"] = res.durations[i].tolist()
                sink.write(json.dumps(row) + "\n")
    finally:
        if sink is not sys.stdout:
            sink.close()


@dataclass
class TrainTextTokenizerArgs:
    """Train a SentencePiece (unigram) text tokenizer; writes spm.model and HF tokenizer files."""

    corpus: str = field(metadata={"positional": True})
    """Text file, one sentence per line."""
    out: str
    """Output directory."""
    vocab_size: int = 1000
    """Upper bound on the number of pieces (a small corpus may give fewer)."""
    character_coverage: float = 1.0
    """Share of characters covered by pieces; the rest fall back to bytes."""


def run_train_text_tokenizer(args: TrainTextTokenizerArgs) -> None:
    tok = train_sentencepiece(
        args.corpus,
        args.out,
        vocab_size=args.vocab_size,
        character_coverage=args.character_coverage,
    )
    print(f"wrote {args.out}: {len(tok)} pieces")
