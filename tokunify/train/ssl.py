"""`tokunify train-ssl`: HuBERT masked-prediction pre-training of a transformers ``HubertModel``.

HuBERT (Hsu et al. 2021) learns by predicting cluster ids of masked frames. One iteration:

1. targets: frame-level units of every training utterance from a units tokenizer (iteration 1:
   MFCC k-means; iteration 2: k-means on a layer of the iteration-1 model), aligned to the
   encoder's frame rate (:func:`align_targets`);
2. span masking: transformers' ``_compute_mask_indices`` picks spans (HuBERT: p=0.8 of the
   frames start a span of 10), and ``HubertModel`` replaces them by its ``masked_spec_embed``;
3. loss: cross-entropy over the K clusters on masked, non-padding frames, with HuBERT's head
   (:class:`HubertPretrainingHead`: a projection, one embedding per cluster, cosine logits / 0.1).

The encoder is saved with ``save_pretrained`` (``HubertModel.from_pretrained(out/"encoder")`` loads
it, and ``ssl_units`` uses it with ``source: out/encoder``); the head lies beside it in
``ssl_head.safetensors``. Training runs on accelerate (``accelerate launch`` for several
processes, bf16, gradient accumulation) with atomic, resumable checkpoints.

The fairseq recipe (``hubert_base_librispeech.yaml``) is the reference for the defaults; the
``tiny`` preset is sized for the CPU demo.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tokunify.core.config import read_data_file
from tokunify.core.fsio import atomic_dir, atomic_write, atomic_write_text
from tokunify.data.audio import AudioError
from tokunify.data.audio import load as load_audio
from tokunify.data.manifest import read_manifest
from tokunify.tokenizers.base import tokenizer_from_config
from tokunify.train import checkpoints
from tokunify.train.setup import cpu_has_native_bf16, reset_single_process_accelerator

HEAD_FILE = "ssl_head.safetensors"
ENCODER_DIR = "encoder"

# HubertConfig fields per preset; anything else stays at the transformers default. `tiny` is the
# CPU demo size: a 3-layer conv front-end (strides 10*4*8 = 320, the 50 Hz of HuBERT base; 23 ms
# receptive field; ~1/20 of the MACs of a 7-layer 512-channel one)
# with LayerNorm (per frame, so padding never leaks into a frame), 4 x 192-dim pre-LN layers
# (pre-LN: phone PNMI 0.385 vs 0.338 post-LN after 300 CPU steps, benchmarks/unit_quality.py).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        do_stable_layer_norm=True,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=768,
        conv_dim=[32, 64, 128],
        conv_kernel=[20, 8, 8],
        conv_stride=[10, 4, 8],
        feat_extract_norm="layer",
        conv_bias=True,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
    ),
    "base": dict(),  # HuBERT base (95M): transformers' HubertConfig defaults
}


class SSLTrainError(ValueError):
    pass


@dataclass
class SSLTrainConfig:
    """HuBERT masked-prediction pre-training of a transformers HubertModel on cluster targets."""

    manifest: str = field(metadata={"positional": True})
    """JSONL/TSV manifest of the training audio."""
    targets: str
    """Units tokenizer config (YAML/JSON) whose frame-level units are the targets: MFCC k-means
    (iteration 1) or ssl_units k-means on a previous iteration's layer (iteration 2)."""
    out: str
    """Output directory: encoder/ (HubertModel + ssl_head.safetensors), log.jsonl, checkpoints/; a
    run with a checkpoint there resumes, another non-empty directory is refused (see overwrite)."""
    overwrite: bool = False
    """Delete an earlier run in out (checkpoints/, encoder/, log.jsonl, targets cache, rejects)."""
    model: str = "tiny"
    """A preset (tiny, base), a YAML/JSON file of HubertConfig fields, or a HubertModel directory to
    continue from."""
    steps: int = 400
    """Optimizer steps."""
    batch_size: int = 8
    """Utterances per process and micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_seconds: float = 4.0
    """Random crop length of long utterances (HuBERT's max_sample_size)."""
    max_utterances: int = 0
    """Use at most this many utterances of the manifest (0: all)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 40
    """Linear warmup, then linear decay to 0 (HuBERT's polynomial schedule, power 1)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 10.0
    """Max gradient norm (0: off)."""
    mask_prob: float = 0.8
    """Share of frames that start a masked span (HuBERT: 0.8)."""
    mask_length: int = 10
    """Masked span length in frames (HuBERT: 10)."""
    final_dim: int = 64
    """Dim of the projection the cluster embeddings live in (HuBERT base: 256)."""
    logit_temp: float = 0.1
    """Cosine-similarity temperature (HuBERT: 0.1)."""
    unmasked_weight: float = 0.0
    """Weight of the same loss on unmasked frames (fairseq's pred_nomask_weight; HuBERT: 0, the
    masked frames only). A short CPU run learns faster with some (the demo's settings)."""
    mixed_precision: str = "no"
    """no, bf16, fp16 (accelerate autocast), or auto: bf16 where the device computes it natively
    (a bf16 GPU, or a CPU with AVX512-BF16/AMX), else no."""
    cpu: bool = False
    """Force CPU even where a GPU is visible."""
    target_device: str = "cpu"
    """Device that computes the targets (the units tokenizer)."""
    target_batch_size: int = 16
    """Utterances per batch when computing targets."""
    save_every: int = 0
    """Checkpoint every N steps (0: only the final encoder)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk."""
    log_every: int = 10
    """Log every N steps (log.jsonl)."""
    seed: int = 0
    """Seed for init, batches and masks."""


# ---- targets -------------------------------------------------------------------------------------
def align_targets(
    units: np.ndarray, n_frames: int, unit_rate: float, frame_rate: float
) -> np.ndarray:
    """Frame-level units ``[T_u]`` at ``unit_rate`` -> ``[n_frames]`` at the encoder's ``frame_rate``.

    Encoder frame ``t`` starts at ``t / frame_rate`` s and takes the unit frame whose hop contains
    that instant; the last unit repeats where the encoder has a frame or two more (its window is
    shorter).
    E.g. 100 Hz MFCC units ``[a, a, b, b, c, c]`` -> 50 Hz ``[a, b, c]``.
    """
    if len(units) == 0:
        raise SSLTrainError("targets: an utterance has no unit frames")
    idx = np.floor(np.arange(n_frames) * (unit_rate / frame_rate) + 1e-6).astype(np.int64)
    return units[np.clip(idx, 0, len(units) - 1)]


def frame_units(tokenizer: Any, wavs: list[np.ndarray]) -> list[np.ndarray]:
    """Frame-level (not deduplicated) units of each ``[N]`` waveform from any units tokenizer."""
    res = tokenizer.encode(wavs)
    if res.durations is None:
        return [u.numpy().astype(np.int64) for u in res.ids]
    return [
        np.repeat(u.numpy(), d.numpy()).astype(np.int64)
        for u, d in zip(res.ids, res.durations, strict=True)
    ]


# ---- model ---------------------------------------------------------------------------------------
def build_encoder(spec: str, seed: int, mask_prob: float = 0.8, mask_length: int = 10) -> nn.Module:
    """A ``HubertModel`` from a preset name, a YAML/JSON file of config fields, or a model dir.

    The config records HuBERT's masking (``mask_time_prob``/``mask_time_length``): ``HubertModel``
    only has its learned mask embedding when they are set. It masks in training mode only, so the
    encoder used as a feature extractor (eval mode) never masks.
    """
    from transformers import HubertConfig, HubertModel

    path = Path(spec)
    if spec in PRESETS:
        fields = dict(PRESETS[spec])
    elif path.is_dir():
        try:
            model = HubertModel.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise SSLTrainError(f"{spec}: cannot load a HubertModel: {e}") from e
        if not hasattr(model, "masked_spec_embed"):
            raise SSLTrainError(f"{spec}: the HubertModel has no mask embedding (mask_time_prob 0)")
        return model
    elif path.is_file():
        fields = read_data_file(path)
        if not isinstance(fields, dict):
            raise SSLTrainError(f"{spec}: expected a mapping of HubertConfig fields")
    else:
        raise SSLTrainError(
            f"--model {spec!r}: not a preset ({', '.join(PRESETS)}), config file or model dir"
        )
    torch.manual_seed(seed)
    try:
        fields.update(mask_time_prob=mask_prob, mask_time_length=mask_length)
        config = HubertConfig(**fields)
    except (TypeError, ValueError) as e:
        raise SSLTrainError(f"--model {spec}: {e}") from e
    return HubertModel(config)


def conv_frames(config: Any, lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames for inputs of ``lengths`` samples (the conv stack, no padding)."""
    n = lengths.clone().long()
    for k, s in zip(config.conv_kernel, config.conv_stride, strict=True):
        n = torch.div(n - k, s, rounding_mode="floor") + 1
    return n.clamp(min=0)


def pads_exactly(config: Any) -> bool:
    """Whether a zero-padded batch gives every row the hidden states of that row alone: true for a
    layer-norm conv front-end (per frame), false for a group-norm one (over time, padding included)."""
    return getattr(config, "feat_extract_norm", "group") == "layer"


class HubertPretrainingHead(nn.Module):
    """HuBERT's prediction head: ``final_proj`` to ``final_dim``, one embedding per cluster,
    logits = cosine(proj(h), emb_k) / ``logit_temp`` (fairseq ``HubertModel.compute_nce`` with the
    cluster embeddings as the candidate set, i.e. a K-way softmax)."""

    def __init__(self, hidden_size: int, num_classes: int, final_dim: int, logit_temp: float):
        super().__init__()
        self.final_proj = nn.Linear(hidden_size, final_dim)
        self.label_embs = nn.Parameter(torch.empty(num_classes, final_dim).uniform_())
        self.logit_temp = logit_temp

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` -> ``[N, K]`` logits."""
        z = F.normalize(self.final_proj(hidden).float(), dim=-1)  # [N, final_dim]
        e = F.normalize(self.label_embs.float(), dim=-1)  # [K, final_dim]
        return z @ e.T / self.logit_temp

    def metadata(self) -> dict[str, str]:
        k, d = self.label_embs.shape
        return {
            "format": "tokunify.hubert_head",
            "num_classes": str(k),
            "final_dim": str(d),
            "logit_temp": str(self.logit_temp),
            "hidden_size": str(self.final_proj.in_features),
        }

    @classmethod
    def load(cls, path: str | Path) -> HubertPretrainingHead:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "tokunify.hubert_head":
            raise SSLTrainError(f"{path}: not a tokunify HuBERT head file")
        head = cls(
            int(meta["hidden_size"]),
            int(meta["num_classes"]),
            int(meta["final_dim"]),
            float(meta["logit_temp"]),
        )
        head.load_state_dict(load_file(str(path)))
        return head


class HubertPretraining(nn.Module):
    """Encoder + head as one module, so DDP/FSDP wrap both and one optimizer steps both."""

    def __init__(
        self, encoder: nn.Module, head: HubertPretrainingHead, unmasked_weight: float = 0.0
    ):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.unmasked_weight = unmasked_weight

    def forward(
        self,
        wavs: torch.Tensor,
        lengths: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wavs [B, N]``, ``lengths [B]``, ``mask [B, T]`` bool, ``targets [B, T]`` (-1 on padding).

        Returns (mean CE over masked frames + ``unmasked_weight`` x mean CE over unmasked ones,
        accuracy over the masked frames).
        """
        valid = torch.arange(wavs.shape[1], device=wavs.device)[None] < lengths[:, None]  # [B, N]
        hidden = self.encoder(
            input_values=wavs * valid, attention_mask=valid.long(), mask_time_indices=mask
        ).last_hidden_state  # [B, T, D]
        sel = mask & (targets >= 0)  # [B, T]
        logits = self.head(hidden[sel])  # [M, K]
        y = targets[sel]  # [M]
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        if self.unmasked_weight > 0:
            rest = ~mask & (targets >= 0)  # [B, T]
            if rest.any():
                loss = loss + self.unmasked_weight * F.cross_entropy(
                    self.head(hidden[rest]), targets[rest]
                )
        return loss, acc


def span_mask(
    frames: torch.Tensor, mask_prob: float, mask_length: int, rng: np.random.Generator
) -> torch.Tensor:
    """HuBERT span masking for frame counts ``[B]`` -> ``[B, T]`` bool (never on padding).

    transformers' ``_compute_mask_indices`` draws from NumPy's global generator; it is seeded from
    ``rng`` so a resumed run draws the same masks.
    """
    from transformers.models.hubert.modeling_hubert import _compute_mask_indices

    t_max = int(frames.max())
    att = (torch.arange(t_max)[None] < frames[:, None]).long()  # [B, T]
    state = np.random.get_state()
    np.random.seed(int(rng.integers(2**31)))
    try:
        m = _compute_mask_indices(
            (len(frames), t_max), mask_prob, mask_length, attention_mask=att, min_masks=2
        )
    finally:
        np.random.set_state(state)
    return torch.from_numpy(m) & att.bool()


# ---- data ----------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """Training audio in memory with its targets at the encoder's frame rate."""

    wavs: list[np.ndarray]  # [N_i] float32 at 16 kHz
    targets: list[np.ndarray]  # [T_i] int64, T_i = encoder frames of N_i
    stride: int  # samples per encoder frame

    def batch(
        self, rng: np.random.Generator, size: int, max_samples: int, config: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A random batch of random crops: ``wavs [B, N]`` zero-padded, ``lengths [B]``, ``targets [B, T]``
        (-1 on padding). Crops start on a frame boundary so their frames are frames of the whole.

        A group-norm front-end (HuBERT base: ``feat_extract_norm="group"``) normalises each channel
        over the whole input, padding included, so a padded row would not get the hidden states of
        its crop alone: there every crop is cut to the shortest of the batch (fairseq's HuBERT
        recipe, ``pad_audio: false``), and no row is padded. A layer-norm front-end (``tiny``)
        normalises each frame and pads exactly."""
        picks = rng.integers(len(self.wavs), size=size)
        if not pads_exactly(config):
            max_samples = min(max_samples, *(len(self.wavs[i]) for i in picks))
        crops, tgts = [], []
        for i in picks:
            w, y = self.wavs[i], self.targets[i]
            if len(w) > max_samples:
                f0 = int(rng.integers(0, (len(w) - max_samples) // self.stride + 1))
                w = w[f0 * self.stride : f0 * self.stride + max_samples]
                y = y[f0:]
            crops.append(w)
            tgts.append(y)
        lengths = torch.tensor([len(w) for w in crops])
        frames = conv_frames(config, lengths)
        wavs = torch.zeros(size, int(lengths.max()))
        targets = torch.full((size, int(frames.max())), -1, dtype=torch.long)
        for b, (w, y) in enumerate(zip(crops, tgts, strict=True)):
            wavs[b, : len(w)] = torch.from_numpy(w)
            targets[b, : frames[b]] = torch.from_numpy(y[: frames[b]])
        return wavs, lengths, targets


def load_corpus(cfg: SSLTrainConfig, encoder_config: Any, out: Path) -> tuple[Corpus, int, dict]:
    """Read the manifest's audio, compute and align the targets (cached in ``out/targets.npz``).

    Unreadable audio goes to ``out/rejects.jsonl``. Returns the corpus, K and the targets'
    tokenizer config.
    """
    import random

    tcfg_path = Path(cfg.targets)
    tcfg = read_data_file(tcfg_path)
    tok = tokenizer_from_config(tcfg, base_dir=tcfg_path.parent, device=cfg.target_device)
    k = tok.cardinality
    if tok.num_codebooks != 1:
        raise SSLTrainError(f"{cfg.targets}: targets need a units tokenizer (one codebook)")
    entries = list(read_manifest(cfg.manifest))
    if cfg.max_utterances:
        random.Random(cfg.seed).shuffle(entries)
        entries = entries[: cfg.max_utterances]
    stride = int(np.prod(encoder_config.conv_stride))
    frame_rate = 16000 / stride
    min_samples = int(conv_frames(encoder_config, torch.arange(1, 4000)).nonzero()[0]) + 1
    min_samples = max(min_samples, tok.min_samples)
    wavs, ids, rejects = [], [], []
    for e in entries:
        try:
            wavs.append(load_audio(e.audio, 16000, e.start, e.end, min_samples))
            ids.append(e.id)
        except AudioError as err:
            rejects.append({"id": e.id, "path": str(e.audio), "reason": str(err)})
    atomic_write_text(out / "rejects.jsonl", "".join(json.dumps(r) + "\n" for r in rejects))
    if not wavs:
        raise SSLTrainError(f"{cfg.manifest}: no usable audio ({len(rejects)} rejected)")
    cache = out / "targets.npz"
    kernels = [list(encoder_config.conv_kernel), list(encoder_config.conv_stride)]
    key = json.dumps([cfg.manifest, cfg.targets, ids, kernels], sort_keys=True)
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            return Corpus(wavs, np.split(z["units"], z["splits"]), stride), k, tcfg
    targets = []
    for a in range(0, len(wavs), cfg.target_batch_size):
        chunk = wavs[a : a + cfg.target_batch_size]
        for w, u in zip(chunk, frame_units(tok, chunk), strict=True):
            n = int(conv_frames(encoder_config, torch.tensor([len(w)]))[0])
            targets.append(align_targets(u, n, tok.frame_rate, frame_rate))
    splits = np.cumsum([len(t) for t in targets])[:-1]

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, key=np.array(key), units=np.concatenate(targets), splits=splits)

    atomic_write(cache, write)
    return Corpus(wavs, targets, stride), k, tcfg


# ---- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(acc: Any, cfg: SSLTrainConfig, step: int) -> Path:
    """``checkpoints/step-N`` through :mod:`tokunify.train.checkpoints`: accelerate state (model,
    optimizer, RNG per process, all processes writing into the one staged directory) + trainer.json."""
    if acc.is_main_process:
        checkpoints.stage(cfg.out, step)
    acc.wait_for_everyone()
    tmp = Path(cfg.out) / checkpoints.CKPT_DIR / f".step-{step:06d}.tmp"
    acc.save_state(str(tmp / "state"))
    acc.wait_for_everyone()
    final = Path(cfg.out) / checkpoints.CKPT_DIR / f"step-{step:06d}"
    if acc.is_main_process:
        meta = {"step": step, "world_size": acc.num_processes, "config": asdict(cfg)}
        (tmp / checkpoints.TRAINER_FILE).write_text(json.dumps(meta) + "\n")
        final = checkpoints.commit(cfg.out, step, cfg.keep_checkpoints)
    acc.wait_for_everyone()
    return final


def save_encoder(model: HubertPretraining, path: Path, info: dict[str, Any]) -> Path:
    """Atomically write ``path``: HubertModel (save_pretrained) + ssl_head.safetensors + ssl_train.json."""
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        model.encoder.save_pretrained(tmp)
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(tmp / HEAD_FILE), metadata=model.head.metadata())
        (tmp / "ssl_train.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


# ---- the loop ------------------------------------------------------------------------------------
def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def run_train_ssl(cfg: SSLTrainConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise SSLTrainError("steps, batch_size and grad_accum must be >= 1")
    if cfg.mixed_precision not in ("no", "bf16", "fp16", "auto"):
        raise SSLTrainError(
            f"mixed_precision must be no, bf16, fp16 or auto, got {cfg.mixed_precision!r}"
        )
    precision = cfg.mixed_precision
    if precision == "auto":
        gpu = not cfg.cpu and torch.cuda.is_available()
        native = torch.cuda.is_bf16_supported() if gpu else cpu_has_native_bf16()
        precision = "bf16" if native else "no"
    out = Path(cfg.out)
    reset_single_process_accelerator()
    acc = Accelerator(
        cpu=cfg.cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum,
    )
    if acc.is_main_process:
        checkpoints.prepare_out(out, cfg.overwrite, (ENCODER_DIR, "log.jsonl", "targets.npz", "rejects.jsonl"))  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    set_seed(cfg.seed)
    encoder = build_encoder(cfg.model, cfg.seed, cfg.mask_prob, cfg.mask_length)
    econf = encoder.config
    if acc.is_main_process:
        corpus, k, tcfg = load_corpus(cfg, econf, out)
    acc.wait_for_everyone()
    if not acc.is_main_process:  # the targets cache is written; read it
        corpus, k, tcfg = load_corpus(cfg, econf, out)
    head = HubertPretrainingHead(econf.hidden_size, k, cfg.final_dim, cfg.logit_temp)
    model = HubertPretraining(encoder, head, cfg.unmasked_weight)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "label_embs" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "label_embs" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    # The schedule stays out of `prepare`: it is written in optimizer steps and stepped once per
    # optimizer step here (prepare would step it once per process).
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps)
    )
    model, opt = acc.prepare(model, opt)
    acc.register_for_checkpointing(sched)
    step = 0
    ckpt = checkpoints.latest(out)
    if ckpt is not None:
        meta = json.loads((ckpt / checkpoints.TRAINER_FILE).read_text())
        if meta["world_size"] != acc.num_processes:
            raise SSLTrainError(
                f"{ckpt}: saved with {meta['world_size']} processes, resuming with {acc.num_processes}"
            )
        acc.load_state(str(ckpt / "state"))
        step = int(meta["step"])
        acc.print(f"resuming from {ckpt} (step {step})")
    max_samples = int(cfg.max_seconds * 16000)
    log_path = out / "log.jsonl"
    if acc.is_main_process and step == 0:
        log_path.write_text("")
    acc.print(
        f"train-ssl: {len(corpus.wavs)} utterances, K={k} targets from {cfg.targets}, "
        f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.2f}M encoder params, "
        f"{acc.num_processes} process(es), {acc.device}, {precision}"
    )
    t0, seen = time.perf_counter(), 0.0
    while step < cfg.steps:
        stats = []
        for micro in range(cfg.grad_accum):
            rng = np.random.default_rng([cfg.seed, step, micro, acc.process_index])
            wavs, lengths, targets = corpus.batch(rng, cfg.batch_size, max_samples, econf)
            mask = span_mask(conv_frames(econf, lengths), cfg.mask_prob, cfg.mask_length, rng)
            seen += float(lengths.sum()) / 16000
            with acc.accumulate(model):
                loss, accuracy = model(
                    wavs.to(acc.device),
                    lengths.to(acc.device),
                    mask.to(acc.device),
                    targets.to(acc.device),
                )
                acc.backward(loss)
                if acc.sync_gradients and cfg.grad_clip > 0:
                    acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad()
            stats.append((float(loss.detach()), float(accuracy)))
        sched.step()
        step += 1
        if not math.isfinite(stats[-1][0]):
            raise SSLTrainError(f"step {step}: loss is {stats[-1][0]}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {
                "step": step,
                "loss": float(np.mean([s[0] for s in stats])),
                "masked_acc": float(np.mean([s[1] for s in stats])),
                "lr": sched.get_last_lr()[0],
                "audio_s_per_s": seen / (time.perf_counter() - t0),
            }
            if acc.is_main_process:
                with log_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            acc.print(
                f"step {step}/{cfg.steps} loss {row['loss']:.3f} masked acc {row['masked_acc']:.3f} "
                f"({row['audio_s_per_s']:.1f} audio s/s per process)"
            )
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            save_checkpoint(acc, cfg, step)
    acc.wait_for_everyone()
    result = {"steps": step, "out": str(out / ENCODER_DIR), "num_classes": k}
    if acc.is_main_process:
        info = {"config": asdict(cfg), "targets_tokenizer": tcfg, "steps": step}
        save_encoder(acc.unwrap_model(model), out / ENCODER_DIR, info)
        acc.print(f"wrote {out / ENCODER_DIR} (HubertModel + {HEAD_FILE})")
    acc.wait_for_everyone()
    return result
