"""`tokunify train-encoder --ctc`: CTC pre-training of a small speech encoder on a manifest's transcripts.

AudioChatLlama (Fathullah et al. 2024) feeds Llama-2-chat from a Conformer encoder pre-trained with
CTC on transcripts; this trains one here, without downloads, for ``speech_input`` bundles:

- the model: transformers' ``Wav2Vec2ConformerForCTC`` (``--arch conformer``) or ``Wav2Vec2ForCTC``
  (``--arch transformer``): a strided conv front-end on the 16 kHz waveform (LayerNorm per frame;
  strides 10*4*8 = 320, 50 Hz), a few small layers, a linear CTC head; :data:`ARCHS` holds the one
  table of architectures and their ``tiny`` presets;
- the targets (:data:`TARGETS`): ``chars``, a character vocabulary built from the training
  transcripts (saved as a ``Wav2Vec2CTCTokenizer``: blank ``<pad>`` = 0, ``|`` between words), or
  ``text-tokenizer``, the pieces of a text tokenizer (``--text-tokenizer DIR``, saved beside the
  model) plus one blank id after them. Transcripts are normalised first (Whisper's basic
  normaliser: lower case, no punctuation);
- the audio: read with :mod:`tokunify.data.audio` (mono, resampled to 16 kHz with soxr), through
  the saved ``Wav2Vec2FeatureExtractor`` (per-utterance normalisation, padding, attention mask).

``--out DIR`` is one ``save_pretrained`` directory: config, ``model.safetensors``,
``preprocessor_config.json``, the targets' tokenizer files, ``ctc_encoder.json`` (how it was
trained, dev CER), ``log.jsonl`` (train loss per logged step, then a ``dev`` row) and
``rejects.jsonl`` (rows not trained on, and why). ``SpeechEncoder.from_pretrained(DIR)`` loads it
as a ``wav2vec2-conformer`` / ``wav2vec2`` encoder (the CTC head is left out), and
``AutoModelForCTC`` + ``AutoProcessor``/``AutoTokenizer`` load all of it in plain transformers.
With ``--dev MANIFEST`` the greedy CTC decode of every dev utterance goes to ``dev.jsonl`` and its
CER (jiwer) to the log.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import jiwer
import numpy as np
import torch
from torch import nn
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2ConformerConfig,
    Wav2Vec2ConformerForCTC,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
)

from tokunify.core.config import read_data_file
from tokunify.core.fsio import atomic_dir, refuse_non_empty
from tokunify.core.textnorm import normalize
from tokunify.data.audio import AudioError
from tokunify.data.audio import load as load_audio
from tokunify.data.manifest import Entry, ManifestError, read_manifest
from tokunify.model.encoders import ENCODER_FAMILIES
from tokunify.tokenizers.text import TextTokenizerError, load_text_tokenizer

SAMPLE_RATE = 16000
INFO_FILE = "ctc_encoder.json"
LOG_FILE = "log.jsonl"
DEV_FILE = "dev.jsonl"
REJECTS_FILE = "rejects.jsonl"


class CTCTrainError(ValueError):
    """Unusable input to ``train-encoder`` (one line naming the field or file)."""


# ---- architectures -------------------------------------------------------------------------------
# Shared by both tiny presets: the 3-layer conv front-end of train-ssl's tiny HuBERT (strides
# 10*4*8 = 320: 50 Hz, 23 ms receptive field) with LayerNorm per frame, so that a padded batch
# gives each utterance's frames their own front-end output; no dropout or layer drop (a short run).
_FRONT_END: dict[str, Any] = dict(
    conv_dim=[32, 64, 128],
    conv_kernel=[20, 8, 8],
    conv_stride=[10, 4, 8],
    feat_extract_norm="layer",
    conv_bias=True,
    layerdrop=0.0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    # wav2vec2's convolutional position embedding (the Conformer builds one too but uses its
    # relative positions instead)
    num_conv_pos_embeddings=32,
    num_conv_pos_embedding_groups=8,
)


@dataclass(frozen=True)
class Arch:
    """One encoder architecture: its transformers config and CTC model classes, its tiny preset."""

    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]
    tiny: dict[str, Any]


ARCHS: dict[str, Arch] = {
    # 4 x 144-dim Conformer blocks (relative positions, a depthwise conv of 15 frames = 0.3 s)
    "conformer": Arch(
        Wav2Vec2ConformerConfig,
        Wav2Vec2ConformerForCTC,
        dict(
            _FRONT_END,
            hidden_size=144,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=576,
            position_embeddings_type="relative",
            conv_depthwise_kernel_size=15,
            conformer_conv_dropout=0.0,
        ),
    ),
    # 4 x 144-dim pre-LN Transformer layers with wav2vec2's convolutional position embedding
    "transformer": Arch(
        Wav2Vec2Config,
        Wav2Vec2ForCTC,
        dict(
            _FRONT_END,
            hidden_size=144,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=576,
            do_stable_layer_norm=True,
        ),
    ),
}
"""``--arch`` -> architecture: the one table of CTC encoders this command trains.

Measured once (the defaults: 300 steps x 8 utterances, chars, on the tests' 18-utterance espeak
corpus, 2 shared CPU cores, one torch thread): conformer 2.2M params, 370 s, CER 0.007 on those
same training utterances; transformer 102 s (padded batches), CER 0.10 (training data, not a
held-out score)."""


@dataclass
class CTCEncoderConfig:
    """CTC pre-training of a small Conformer or Transformer speech encoder on a manifest's
    transcripts (AudioChatLlama's encoder); the output loads as a SpeechEncoder."""

    manifest: str = field(metadata={"positional": True})
    """JSONL/TSV manifest of the training audio with transcripts ('text')."""
    out: str
    """Output directory: the CTC model (save_pretrained), its feature extractor and targets
    tokenizer, ctc_encoder.json, log.jsonl, rejects.jsonl, dev.jsonl with --dev."""
    ctc: bool = False
    """Train with CTC on the transcripts (the one objective so far; required)."""
    arch: Literal["conformer", "transformer"] = "conformer"
    """Wav2Vec2ConformerForCTC (conformer) or Wav2Vec2ForCTC (transformer)."""
    model: str = "tiny"
    """Config fields: the arch's preset (tiny), or a YAML/JSON file of fields over it."""
    targets: Literal["chars", "text-tokenizer"] = "chars"
    """CTC targets: characters of the training transcripts, or the pieces of --text-tokenizer."""
    text_tokenizer: str | None = None
    """Text tokenizer (dir, hub id or SentencePiece .model) whose pieces are the targets."""
    dev: str | None = None
    """Manifest to decode after training (greedy CTC): CER in the log, decodes in dev.jsonl."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 8
    """Utterances per step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 30
    """Linear warmup, then linear decay to 0."""
    weight_decay: float = 0.01
    """AdamW weight decay (matrices only)."""
    grad_clip: float = 5.0
    """Max gradient norm (0: off)."""
    mask_time_prob: float = 0.05
    """SpecAugment time masking of the encoder input (wav2vec2's mask_time_prob; 0: off)."""
    max_seconds: float = 20.0
    """Longer utterances are left out (rejects.jsonl)."""
    max_utterances: int = 0
    """Use at most this many utterances of the manifest (0: all)."""
    log_every: int = 10
    """Log every N steps (log.jsonl)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda where visible)."""
    seed: int = 0
    """Seed for init and batches."""
    overwrite: bool = False
    """Replace a non-empty out directory."""


# ---- targets -------------------------------------------------------------------------------------
class Targets(ABC):
    """CTC label ids of normalised transcripts: ``encode``, ``decode``, the blank, saved files."""

    name: str
    blank: int
    vocab_size: int

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Label ids (collapsed, no blanks) -> text."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    def info(self) -> dict[str, Any]:
        return {"kind": self.name, "blank": self.blank, "vocab_size": self.vocab_size}


CHAR_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "|"]
"""The first ids of a character vocabulary, as wav2vec2's released CTC models have them (``<pad>``
is the blank, ``|`` the word delimiter)."""


def char_vocab(texts: Sequence[str]) -> dict[str, int]:
    """``CHAR_SPECIALS`` then every character of the (normalised) ``texts`` but the space, sorted.

    >>> char_vocab(["ab a", "ca"])
    {'<pad>': 0, '<s>': 1, '</s>': 2, '<unk>': 3, '|': 4, 'a': 5, 'b': 6, 'c': 7}
    """
    chars = sorted({c for t in texts for c in t} - {" "} - set(CHAR_SPECIALS))
    return {s: i for i, s in enumerate([*CHAR_SPECIALS, *chars])}


class CharTargets(Targets):
    """Characters, through a ``Wav2Vec2CTCTokenizer`` (saved as the model's tokenizer)."""

    name = "chars"

    def __init__(self, texts: Sequence[str]):
        vocab = char_vocab(texts)
        if len(vocab) == len(CHAR_SPECIALS):
            raise CTCTrainError("targets: the transcripts hold no characters (empty vocabulary)")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "vocab.json"
            path.write_text(json.dumps(vocab, ensure_ascii=False))
            self.tokenizer = Wav2Vec2CTCTokenizer(str(path))
        self.blank = self.tokenizer.pad_token_id
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), group_tokens=False)

    def save(self, path: Path) -> None:
        self.tokenizer.save_pretrained(path)


class PieceTargets(Targets):
    """A text tokenizer's pieces; the blank is one id after them (``len(tokenizer)``)."""

    name = "text-tokenizer"

    def __init__(self, source: str | None):
        if not source:
            raise CTCTrainError("--targets text-tokenizer needs --text-tokenizer DIR")
        try:
            self.tokenizer = load_text_tokenizer(source)
        except TextTokenizerError as e:
            raise CTCTrainError(f"--text-tokenizer {str(e).splitlines()[0]}") from None
        self.source = source
        self.blank = len(self.tokenizer)
        self.vocab_size = self.blank + 1

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, path: Path) -> None:
        self.tokenizer.save_pretrained(path)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "text_tokenizer": self.source}


TARGETS: dict[str, Callable[[CTCEncoderConfig, Sequence[str]], Targets]] = {
    "chars": lambda cfg, texts: CharTargets(texts),
    "text-tokenizer": lambda cfg, texts: PieceTargets(cfg.text_tokenizer),
}
"""``--targets`` -> how the targets are built (from the config and the normalised transcripts)."""


# ---- data ----------------------------------------------------------------------------------------
@dataclass
class Utterance:
    id: str
    wav: np.ndarray  # [N] float32 at 16 kHz
    text: str  # normalised transcript


def transcribed(
    path: str, what: str, rejects: list[dict[str, Any]], max_utterances: int = 0, seed: int = 0
) -> list[Entry]:
    """The manifest's rows with a transcript (the others to ``rejects``); none -> one line naming
    the manifest."""
    try:
        entries = list(read_manifest(path))
    except ManifestError as e:
        raise CTCTrainError(f"{what}: {e}") from None
    rows = [e for e in entries if isinstance(e.text, str) and normalize(e.text)]
    kept = {id(e) for e in rows}
    rejects.extend(
        {"id": e.id, "path": str(e.audio), "reason": "no transcript ('text' empty or missing)"}
        for e in entries
        if id(e) not in kept
    )
    if not rows:
        raise CTCTrainError(
            f"{what}: {path}: no row has a transcript ('text' field) of {len(entries)} rows"
        )
    if max_utterances:
        rng = np.random.default_rng(seed)
        rows = [rows[i] for i in sorted(rng.permutation(len(rows))[:max_utterances])]
    return rows


def read_utterances(
    entries: Sequence[Entry], max_seconds: float, rejects: list[dict[str, Any]]
) -> list[Utterance]:
    """Audio at 16 kHz of each row (unreadable or too long: to ``rejects``)."""
    out = []
    for e in entries:
        try:
            wav = load_audio(e.audio, SAMPLE_RATE, e.start, e.end)
        except AudioError as err:
            rejects.append({"id": e.id, "path": str(e.audio), "reason": str(err)})
            continue
        if max_seconds and len(wav) > max_seconds * SAMPLE_RATE:
            reason = f"{len(wav) / SAMPLE_RATE:.2f} s is longer than max_seconds ({max_seconds})"
            rejects.append({"id": e.id, "path": str(e.audio), "reason": reason})
            continue
        out.append(Utterance(e.id, wav, normalize(e.text or "")))
    return out


def ctc_frames_needed(labels: Sequence[int]) -> int:
    """Fewest frames a CTC path of ``labels`` takes: one per label, plus a blank between repeats."""
    return len(labels) + sum(a == b for a, b in itertools.pairwise(labels))


def feature_extractor() -> Wav2Vec2FeatureExtractor:
    """Per-utterance zero-mean unit-variance waveform, zero padding, attention mask (saved with
    the model, so SpeechEncoder normalises as training did)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def collate(
    fe: Wav2Vec2FeatureExtractor, wavs: Sequence[np.ndarray], labels: Sequence[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """``input_values [B, N]``, ``attention_mask [B, N]``, ``labels [B, L]`` (-100 past each)."""
    batch = fe(
        list(wavs), sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
        return_tensors="pt",
    )  # fmt: skip
    y = torch.full((len(labels), max(len(x) for x in labels)), -100, dtype=torch.long)  # [B, L]
    for b, x in enumerate(labels):
        y[b, : len(x)] = torch.tensor(x, dtype=torch.long)
    return {
        "input_values": batch["input_values"],
        "attention_mask": batch["attention_mask"],
        "labels": y,
    }


# ---- model ---------------------------------------------------------------------------------------
def build_model(cfg: CTCEncoderConfig, targets: Targets) -> PreTrainedModel:
    """A randomly initialised CTC model of ``cfg.arch`` with the preset (or file) fields."""
    arch = ARCHS[cfg.arch]
    fields = dict(arch.tiny)
    if cfg.model != "tiny":
        path = Path(cfg.model)
        if not path.is_file():
            raise CTCTrainError(f"--model {cfg.model!r}: not 'tiny' nor a YAML/JSON file of fields")
        fields.update(read_data_file(path))
    fields.update(
        vocab_size=targets.vocab_size,
        pad_token_id=targets.blank,  # transformers' CTC loss takes the blank from pad_token_id
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
        mask_time_prob=cfg.mask_time_prob,
        apply_spec_augment=cfg.mask_time_prob > 0,
    )
    torch.manual_seed(cfg.seed)
    try:
        return arch.model_class(arch.config_class(**fields))
    except (TypeError, ValueError) as e:
        raise CTCTrainError(f"--model {cfg.model}: {str(e).splitlines()[0]}") from None


def greedy_ctc(logits: torch.Tensor, blank: int) -> list[int]:
    """Best path of ``logits [T, V]``: argmax per frame, repeats collapsed, blanks dropped.

    >>> greedy_ctc(torch.eye(3)[[1, 1, 0, 1, 2, 2, 0]], blank=0)
    [1, 1, 2]
    """
    best = torch.unique_consecutive(logits.argmax(-1))  # [T'] collapsed
    return [int(i) for i in best if int(i) != blank]


@torch.no_grad()
def transcribe(
    model: PreTrainedModel, fe: Wav2Vec2FeatureExtractor, targets: Targets, wav: np.ndarray
) -> str:
    """Greedy CTC transcript of one ``[N]`` 16 kHz wav (one at a time: the Conformer's depthwise
    convolution would read a padded batch's padding)."""
    batch = fe([wav], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    device = next(model.parameters()).device
    logits = model(input_values=batch["input_values"].to(device)).logits[0]  # [T, V]
    return targets.decode(greedy_ctc(logits.float().cpu(), targets.blank))


def evaluate(
    model: PreTrainedModel, fe: Any, targets: Targets, utts: Sequence[Utterance]
) -> tuple[float, list[dict[str, str]]]:
    """CER (jiwer, normalised text) of greedy decodes and the decodes."""
    was_training = model.training
    model.eval()
    rows = [{"id": u.id, "ref": u.text, "hyp": normalize(transcribe(model, fe, targets, u.wav))} for u in utts]  # fmt: skip
    model.train(was_training)
    return float(jiwer.cer([r["ref"] for r in rows], [r["hyp"] for r in rows])), rows


# ---- the loop ------------------------------------------------------------------------------------
def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CTCTrainError(
            f"--device {name!r}: not a torch device (cpu, cuda, cuda:N, auto)"
        ) from None


def check_config(cfg: CTCEncoderConfig) -> None:
    if not cfg.ctc:
        raise CTCTrainError("give --ctc: CTC on the transcripts is the one objective so far")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.log_every < 1:
        raise CTCTrainError("steps, batch_size and log_every must be >= 1")
    if not 0 <= cfg.mask_time_prob < 1:
        raise CTCTrainError(f"mask_time_prob must be in [0, 1), got {cfg.mask_time_prob}")


def labelled(
    utts: Sequence[Utterance], targets: Targets, model: PreTrainedModel, rejects: list[dict]
) -> tuple[list[Utterance], list[list[int]]]:
    """Each utterance's label ids; one without labels, or whose labels need more CTC frames than
    its audio gives, goes to ``rejects``."""
    keep, labels = [], []
    for u in utts:
        y = targets.encode(u.text)
        frames = int(model._get_feat_extract_output_lengths(torch.tensor([len(u.wav)]))[0])
        if not y or ctc_frames_needed(y) > frames:
            reason = (
                f"transcript needs {ctc_frames_needed(y)} CTC frames, the audio gives {frames}"
                if y
                else "the transcript has no labels"
            )
            rejects.append({"id": u.id, "reason": reason})
            continue
        keep.append(u)
        labels.append(y)
    return keep, labels


@dataclass
class TrainData:
    utts: list[Utterance]
    labels: list[list[int]]
    dev: list[Utterance]
    rejects: list[dict[str, Any]]


def load_data(cfg: CTCEncoderConfig) -> tuple[TrainData, Targets, PreTrainedModel]:
    """The training and dev audio, the targets built on the training transcripts, the model."""
    rejects: list[dict[str, Any]] = []
    train_rows = transcribed(cfg.manifest, "manifest", rejects, cfg.max_utterances, cfg.seed)
    dev_rows = transcribed(cfg.dev, "--dev", []) if cfg.dev else []
    utts = read_utterances(train_rows, cfg.max_seconds, rejects)
    if not utts:
        raise CTCTrainError(f"{cfg.manifest}: no usable audio ({len(rejects)} rejected)")
    targets = TARGETS[cfg.targets](cfg, [u.text for u in utts])
    model = build_model(cfg, targets)
    utts, labels = labelled(utts, targets, model, rejects)
    if not utts:
        raise CTCTrainError(
            f"{cfg.manifest}: no utterance is usable ({len(rejects)} rejected; see the reasons "
            f"with e.g. {rejects[0]['id']}: {rejects[0]['reason']})"
        )
    dev = read_utterances(dev_rows, 0.0, [])
    if cfg.dev and not dev:
        raise CTCTrainError(f"--dev {cfg.dev}: no readable audio")
    return TrainData(utts, labels, dev, rejects), targets, model


def optimizer(model: nn.Module, cfg: CTCEncoderConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (weight decay on matrices only) and its warmup + linear decay schedule."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps)
    )
    return opt, sched


def pads_exactly(model: PreTrainedModel) -> bool:
    """Whether a padded batch gives each utterance the loss it has alone (SpeechEncoder's rule for
    the family: true for the Transformer, false for the Conformer, whose depthwise convolution
    and batch norm read the padding)."""
    return ENCODER_FAMILIES[model.config.model_type].pads_exactly(model.config)


def backward_loss(
    model: PreTrainedModel, fe: Wav2Vec2FeatureExtractor, wavs: Sequence[np.ndarray],
    labels: Sequence[Sequence[int]], device: torch.device, exact: bool,
) -> float:  # fmt: skip
    """Backpropagate the batch's CTC loss (per label, then the mean over utterances); return it.

    Where padding is not exact, each utterance runs alone: trained on padded batches, a Conformer
    learns where a batch's longest utterance ends (the only one without padding) and, run alone as
    SpeechEncoder runs it, decodes the end of every utterance as that one's (measured: the end of
    "where are you going today" read "... going hous" after 300 steps)."""
    if exact:
        batch = collate(fe, wavs, labels)
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        return float(loss.detach())
    total = 0.0
    for w, y in zip(wavs, labels, strict=True):
        one = collate(fe, [w], [y])
        loss = model(**{k: v.to(device) for k, v in one.items()}).loss / len(wavs)
        loss.backward()
        total += float(loss.detach())
    return total


def train_steps(
    model: PreTrainedModel, data: TrainData, cfg: CTCEncoderConfig, device: torch.device,
    log_path: Path,
) -> list[dict[str, Any]]:  # fmt: skip
    """``cfg.steps`` steps of CTC on random batches; each logged row is appended to ``log_path``."""
    fe = feature_extractor()
    opt, sched = optimizer(model, cfg)
    model.to(device).train()
    exact = pads_exactly(model)
    log: list[dict[str, Any]] = []
    t0, seen, losses = time.perf_counter(), 0.0, []
    for step in range(1, cfg.steps + 1):
        picks = np.random.default_rng([cfg.seed, step]).integers(
            len(data.utts), size=cfg.batch_size
        )
        wavs, labels = [data.utts[i].wav for i in picks], [data.labels[i] for i in picks]
        losses.append(backward_loss(model, fe, wavs, labels, device, exact))
        if not math.isfinite(losses[-1]):
            raise CTCTrainError(f"step {step}: loss is {losses[-1]}")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        sched.step()
        seen += sum(len(data.utts[i].wav) for i in picks) / SAMPLE_RATE
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.perf_counter() - t0
            row = {"step": step, "loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0],
                   "elapsed_s": elapsed, "audio_s_per_s": seen / elapsed}  # fmt: skip
            losses = []
            log.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"step {step}/{cfg.steps} loss {row['loss']:.3f} ({row['audio_s_per_s']:.1f} audio s/s)"
            )
    return log


def run_train_encoder(cfg: CTCEncoderConfig) -> dict[str, Any]:
    check_config(cfg)
    device = pick_device(cfg.device)
    refuse_non_empty(cfg.out, cfg.overwrite)
    data, targets, model = load_data(cfg)
    print(
        f"train-encoder: {cfg.arch}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"params, {len(data.utts)} utterances ({len(data.rejects)} rejected), {targets.name} "
        f"targets ({targets.vocab_size} ids), {device}"
    )
    t0 = time.perf_counter()
    with atomic_dir(cfg.out) as tmp:  # a failed run leaves no half-written directory
        log = train_steps(model, data, cfg, device, tmp / LOG_FILE)
        train_s = time.perf_counter() - t0
        fe = feature_extractor()
        dev_cer = None
        if data.dev:
            dev_cer, decodes = evaluate(model, fe, targets, data.dev)
            with (tmp / LOG_FILE).open("a") as f:
                f.write(
                    json.dumps({"dev": cfg.dev, "utterances": len(decodes), "cer": dev_cer}) + "\n"
                )
            (tmp / DEV_FILE).write_text("".join(json.dumps(d) + "\n" for d in decodes))
            print(f"dev CER {dev_cer:.3f} on {len(decodes)} utterances ({cfg.dev})")
        model.to("cpu").eval().save_pretrained(tmp)
        fe.save_pretrained(tmp)
        targets.save(tmp)
        info = {"config": asdict(cfg), "targets": targets.info(), "utterances": len(data.utts),
                "train_seconds": train_s, "dev_cer": dev_cer}  # fmt: skip
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        (tmp / REJECTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in data.rejects))
    print(f"wrote {cfg.out} ({type(model).__name__}; SpeechEncoder.from_pretrained loads it)")
    return {"out": cfg.out, "log": log, "train_seconds": train_s, "dev_cer": dev_cer}


__all__ = [
    "ARCHS",
    "TARGETS",
    "CTCEncoderConfig",
    "CTCTrainError",
    "CharTargets",
    "PieceTargets",
    "build_model",
    "char_vocab",
    "greedy_ctc",
    "run_train_encoder",
]
