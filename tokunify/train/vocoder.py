"""`tokunify train-vocoder`: CodeHiFiGAN training with accelerate (HiFi-GAN recipe).

Generator on frame-rate units; multi-period and multi-scale discriminators (LSGAN), mel L1 (x45)
and feature-matching (x2) losses; the duration predictor learns log(1 + frames) of deduplicated
units from the tokenizer's own run lengths. Checkpoints are atomic and resumable like LM training;
``out/vocoder`` (config.json + generator.safetensors) is what bundles and ``generate`` load.

``--arch unit2mel`` trains the CPU vocoder of :mod:`tokunify.vocoder.unitmel` instead: log-mel L1 on
the valid frames of each segment plus the same duration loss, no discriminators.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from tokunify.audio import load as load_audio
from tokunify.store import TokenStore
from tokunify.vocoder.codehifigan import CodeHiFiGAN, CodeHiFiGANConfig, save_codehifigan
from tokunify.vocoder.unitmel import UnitMel, UnitMelConfig, save_unitmel

PRESETS: dict[str, dict[str, Any]] = {
    # A CPU preset for the demo: small generator, slim discriminators, learns in minutes.
    "tiny-cpu": dict(
        embedding_dim=64,
        upsample_initial_channel=96,
        upsample_rates=[5, 4, 4, 4],
        upsample_kernel_sizes=[11, 8, 8, 8],
        resblock="2",
        resblock_kernel_sizes=[3, 5],
        resblock_dilation_sizes=[[1, 3], [1, 3]],
        disc_scale=8,
    ),
    # The published unit HiFi-GAN (speech-resynthesis hubert100_dw1.0 at 50 Hz units, 16 kHz).
    "v1": dict(
        embedding_dim=128,
        upsample_initial_channel=512,
        upsample_rates=[5, 4, 4, 2, 2],
        upsample_kernel_sizes=[11, 8, 8, 4, 4],
        resblock="1",
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3,
        disc_scale=1,
    ),
}


@dataclass
class VocoderTrainConfig:
    """Train a unit HiFi-GAN on a token store (units + durations + the source audio)."""

    store: str = field(metadata={"positional": True})
    """Token store whose records point at their audio."""
    out: str
    """Run directory: checkpoints/, vocoder/ (config.json + generator.safetensors), log.jsonl."""
    stream: str = "units"
    """Unit stream to vocode."""
    arch: Literal["codehifigan", "unit2mel"] = "codehifigan"
    """codehifigan: the unit HiFi-GAN (GPU quality path); unit2mel: a conv net regressing log-mel,
    vocoded by Griffin-Lim, that learns in CPU minutes (``preset``/``adversarial``/``mel_weight``
    do not apply to it)."""
    dilations: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    """unit2mel: one residual conv layer (kernel 5) per entry, with that dilation."""
    preset: Literal["tiny-cpu", "v1"] = "tiny-cpu"
    """CodeHiFiGAN size: tiny-cpu (demo, CPU minutes) or v1 (the published recipe, GPU days)."""
    steps: int = 2000
    """Optimizer steps."""
    max_minutes: float = 0.0
    """Stop early after this many minutes (0: no limit); the final step is checkpointed."""
    batch_size: int = 8
    """Segments per step."""
    segment_frames: int = 32
    """Unit frames per training segment."""
    lr: float = 2e-4
    """AdamW learning rate (generator and discriminators)."""
    adversarial: bool = True
    """Use the discriminators (off: mel + duration losses only)."""
    mel_weight: float = 45.0
    """Weight of the mel L1 loss."""
    max_utterances: int = 0
    """Load at most this many utterances of the store (0: all; the audio is held in memory)."""
    speaker: str | None = None
    """Train on this speaker's utterances only (the store's speaker column): a single-voice
    vocoder, which speaks every input in that voice."""
    multispkr: bool = False
    """Condition on a speaker embedding (speaker ids from the store's speaker column)."""
    save_every: int = 500
    """Steps between checkpoints."""
    log_every: int = 50
    """Steps between log lines."""
    seed: int = 0
    """Seed."""
    cpu: bool = False
    """Force CPU."""
    resume: bool = True
    """Resume from the newest checkpoint."""


# ---- discriminators (HiFi-GAN), with a channel divisor for the CPU preset ---------------------
def _conv_stack(
    convs: nn.ModuleList, post: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack of a HiFi-GAN discriminator: (flattened score, feature maps)."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        fmap.append(x)
    x = post(x)
    fmap.append(x)
    return x.flatten(1), fmap


class DiscriminatorP(nn.Module):
    def __init__(self, period: int, scale: int = 1):
        super().__init__()
        self.period = period
        ch = [1, 32 // scale, 128 // scale, 512 // scale, 1024 // scale, 1024 // scale]
        self.convs = nn.ModuleList(
            [
                parametrizations.weight_norm(
                    nn.Conv2d(ch[i], ch[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0))
                )
                for i in range(5)
            ]
        )
        self.conv_post = parametrizations.weight_norm(
            nn.Conv2d(ch[-1], 1, (3, 1), 1, padding=(1, 0))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), "reflect")
        x = x.view(b, c, -1, self.period)
        return _conv_stack(self.convs, self.conv_post, x)


class DiscriminatorS(nn.Module):
    def __init__(self, scale: int = 1):
        super().__init__()
        c = [
            1,
            128 // scale,
            128 // scale,
            256 // scale,
            512 // scale,
            1024 // scale,
            1024 // scale,
            1024 // scale,
        ]
        specs = [
            (15, 1, 1, 7),
            (41, 2, 4, 20),
            (41, 2, 16, 20),
            (41, 4, 16, 20),
            (41, 4, 16, 20),
            (41, 1, 16, 20),
            (5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            [
                parametrizations.weight_norm(
                    nn.Conv1d(
                        c[i],
                        c[i + 1],
                        k,
                        s,
                        groups=min(g, max(1, c[i] // 4)) if i else 1,
                        padding=p,
                    )
                )
                for i, (k, s, g, p) in enumerate(specs)
            ]
        )
        self.conv_post = parametrizations.weight_norm(nn.Conv1d(c[-1], 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.conv_post, x)


class Discriminators(nn.Module):
    """Multi-period (2, 3, 5, 7, 11) and multi-scale (x1, x2, x4 average-pooled) discriminators."""

    def __init__(self, scale: int = 1):
        super().__init__()
        self.mpd = nn.ModuleList([DiscriminatorP(p, scale) for p in (2, 3, 5, 7, 11)])
        self.msd = nn.ModuleList([DiscriminatorS(scale) for _ in range(3)])
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        out = [d(x) for d in self.mpd]
        for i, d in enumerate(self.msd):
            if i:
                x = self.pool(x)
            out.append(d(x))
        return out


# ---- losses ---------------------------------------------------------------------------------
class LogMel(nn.Module):
    """Differentiable log-mel (80 bins, 1024-point STFT, hop 256), the HiFi-GAN loss features."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        fb = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("fb", torch.as_tensor(fb, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.n_fft, self.hop = n_fft, hop

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # [B, N] -> [B, T, M]
        pad = (self.n_fft - self.hop) // 2
        x = F.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(
            x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
        )
        mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
        return torch.log(torch.clamp(mag.transpose(1, 2) @ self.fb, min=1e-5))


def feature_loss(real: list, fake: list) -> torch.Tensor:
    return 2 * sum(
        torch.mean(torch.abs(r.detach() - f))
        for (_, rm), (_, fm) in zip(real, fake, strict=True)
        for r, f in zip(rm, fm, strict=True)
    )


def disc_loss(real: list, fake: list) -> torch.Tensor:
    return sum(
        torch.mean((1 - r) ** 2) + torch.mean(f**2)
        for (r, _), (f, _) in zip(real, fake, strict=True)
    )


def gen_adv_loss(fake: list) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f, _ in fake)


# ---- data -------------------------------------------------------------------------------------
class SegmentData:
    """Utterances of a store with frame-rate units and audio; random aligned segments."""

    def __init__(
        self,
        store: TokenStore,
        stream: str,
        sample_rate: int,
        hop: int,
        seed: int,
        limit: int = 0,
        speaker: str | None = None,
    ):
        info = store.meta.streams.get(stream)
        if info is None or info.kind != "units":
            raise ValueError(f"{store.root}: no units stream {stream!r}")
        if abs(info.frame_rate * hop - sample_rate) > 1e-6:
            raise ValueError(
                f"vocoder hop {hop} at {sample_rate} Hz does not match the {info.frame_rate} Hz units of {store.root}"
            )
        self.hop, self.rng = hop, np.random.default_rng(seed)
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        speakers: dict[str, int] = {}
        for i in range(len(store)):
            if limit and len(self.items) >= limit:
                break
            r = store[i]
            if r.audio is None or stream not in r.streams:
                continue
            if speaker is not None and r.speaker != speaker:
                continue
            units = r.streams[stream].astype(np.int64)
            dur = r.durations.get(stream, np.ones_like(units)).astype(np.int64)
            wav = load_audio(r.audio, sample_rate, r.start, r.end)
            spk = speakers.setdefault(r.speaker or "", len(speakers))
            self.items.append((units, dur, wav, spk))
        if not self.items:
            who = f" of speaker {speaker!r}" if speaker is not None else ""
            raise ValueError(
                f"{store.root}: no usable records{who} with audio for stream {stream!r}"
            )
        self.speakers = speakers

    def batch(self, n: int, frames: int, tail: int = 0) -> dict[str, torch.Tensor]:
        """``n`` random segments of ``frames`` unit frames and their ``frames * hop + tail`` samples
        (``tail``: the window overhang of un-centred STFT frames), zero-padded past the end."""
        codes, wavs, spks, dedup, durs, valid = [], [], [], [], [], []
        for _ in range(n):
            units, dur, wav, spk = self.items[int(self.rng.integers(len(self.items)))]
            fr = np.repeat(units, dur)
            a = int(self.rng.integers(0, max(1, len(fr) - frames + 1)))
            seg = np.zeros(frames, np.int64)
            seg[: len(fr[a : a + frames])] = fr[a : a + frames]
            w = np.zeros(frames * self.hop + tail, np.float32)
            piece = wav[a * self.hop : (a + frames) * self.hop + tail]
            w[: len(piece)] = piece
            valid.append(min(frames, len(fr) - a))
            codes.append(seg)
            wavs.append(w)
            spks.append(spk)
            dedup.append(units)
            durs.append(dur)
        t = max(len(u) for u in dedup)
        du = np.zeros((n, t), np.int64)
        dd = np.zeros((n, t), np.int64)
        for i, (u, d) in enumerate(zip(dedup, durs, strict=True)):
            du[i, : len(u)], dd[i, : len(d)] = u, d
        return {"code": torch.from_numpy(np.stack(codes)), "wav": torch.from_numpy(np.stack(wavs)), "spkr": torch.tensor(spks),
                "units": torch.from_numpy(du), "durations": torch.from_numpy(dd), "valid": torch.tensor(valid)}  # fmt: skip


# ---- loop ---------------------------------------------------------------------------------------
def build_generator(
    cfg: VocoderTrainConfig, num_units: int, sample_rate: int, num_speakers: int
) -> tuple[CodeHiFiGAN | UnitMel, int]:
    if cfg.arch == "unit2mel":
        if cfg.multispkr:
            raise ValueError("--arch unit2mel is single-speaker; drop --multispkr")
        ucfg = UnitMelConfig(
            num_embeddings=num_units, sampling_rate=sample_rate, dilations=list(cfg.dilations)
        )
        return UnitMel(ucfg), 1
    p = dict(PRESETS[cfg.preset])
    scale = p.pop("disc_scale")
    emb = p["embedding_dim"]
    gcfg = CodeHiFiGANConfig(
        num_embeddings=num_units, sampling_rate=sample_rate, multispkr=cfg.multispkr, num_speakers=max(num_speakers, 1),
        dur_predictor_params={"encoder_embed_dim": emb, "var_pred_hidden_dim": emb, "var_pred_kernel_size": 3, "var_pred_dropout": 0.5},
        **p,
    )  # fmt: skip
    return CodeHiFiGAN(gcfg), scale


def run_train_vocoder(cfg: VocoderTrainConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from tokunify.train.loop import reset_single_process_accelerator

    reset_single_process_accelerator()
    acc = Accelerator(cpu=cfg.cpu)
    set_seed(cfg.seed)
    out = Path(cfg.out)
    store = TokenStore(cfg.store)
    info = store.meta.streams.get(cfg.stream)
    if info is None:
        raise ValueError(f"{cfg.store}: no stream {cfg.stream!r}")
    sample_rate = 16000
    gen, scale = build_generator(cfg, info.cardinality, sample_rate, 0)
    data = SegmentData(store, cfg.stream, sample_rate, gen.cfg.hop, cfg.seed + acc.process_index, cfg.max_utterances, cfg.speaker)  # fmt: skip
    if cfg.multispkr:
        gen, scale = build_generator(cfg, info.cardinality, sample_rate, len(data.speakers))
    unit2mel = cfg.arch == "unit2mel"
    gen_cfg = gen.cfg
    opt_g = torch.optim.AdamW(gen.parameters(), cfg.lr, betas=(0.8, 0.99))
    if unit2mel:  # no discriminators; the target log-mel is the model's own analysis
        gen, opt_g = acc.prepare(gen, opt_g)
    else:
        disc = Discriminators(scale)
        mel = LogMel(sample_rate)
        opt_d = torch.optim.AdamW(disc.parameters(), cfg.lr, betas=(0.8, 0.99))
        gen, disc, mel, opt_g, opt_d = acc.prepare(gen, disc, mel, opt_g, opt_d)
    ckpt_dir = out / "checkpoints"
    start = 0
    done = (
        sorted(p for p in ckpt_dir.glob("step-*") if (p / "trainer.json").is_file())
        if ckpt_dir.is_dir()
        else []
    )
    if cfg.resume and done:
        acc.load_state(str(done[-1] / "state"))
        meta = json.loads((done[-1] / "trainer.json").read_text())
        start = meta["step"]
        data.rng.bit_generator.state = meta["data_rng"][acc.process_index]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    t0, t_last = time.perf_counter(), time.perf_counter()
    sums: dict[str, float] = {}
    step = start
    history = []
    adversarial = cfg.adversarial and not unit2mel
    tail = gen_cfg.n_fft - gen_cfg.hop if unit2mel else 0
    while step < cfg.steps:
        b = {k: v.to(acc.device) for k, v in data.batch(cfg.batch_size, cfg.segment_frames, tail).items()}  # fmt: skip
        g = acc.unwrap_model(gen)
        real = b["wav"]
        if unit2mel:
            pred = gen(b["code"])  # [B, T, M]
            target = g.logmel(real)  # [B, T, M], the same frames
            keep = (
                torch.arange(pred.shape[1], device=acc.device)[None, :] < b["valid"][:, None]
            )  # [B, T]
            mel_loss = (pred - target).abs().mean(-1)[keep].mean()
        else:
            fake = gen(b["code"], spkr=b["spkr"] if cfg.multispkr else None)[:, 0]  # [B, N]
        if adversarial:
            d_loss = disc_loss(disc(real[:, None]), disc(fake.detach()[:, None]))
            opt_d.zero_grad()
            acc.backward(d_loss)
            opt_d.step()
        if not unit2mel:
            mel_loss = F.l1_loss(mel(fake), mel(real))
        units, durs = b["units"], b["durations"]
        mask = durs > 0
        log_pred = g.dur_predictor(g.dict(units))
        dur_loss = F.mse_loss(log_pred[mask], torch.log1p(durs[mask].float()))
        g_loss = (1.0 if unit2mel else cfg.mel_weight) * mel_loss + dur_loss
        if adversarial:
            real_out, fake_out = disc(real[:, None]), disc(fake[:, None])
            g_loss = g_loss + gen_adv_loss(fake_out) + feature_loss(real_out, fake_out)
        opt_g.zero_grad()
        acc.backward(g_loss)
        opt_g.step()
        step += 1
        for k, v in {
            "mel": mel_loss,
            "dur": dur_loss,
            "g": g_loss,
            **({"d": d_loss} if adversarial else {}),
        }.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        timeout = cfg.max_minutes > 0 and (time.perf_counter() - t0) > 60 * cfg.max_minutes
        if step % cfg.log_every == 0 or step == cfg.steps or timeout:
            n = (
                cfg.log_every
                if step % cfg.log_every == 0
                else (step % cfg.log_every or cfg.log_every)
            )
            row = {
                "step": step,
                **{f"loss/{k}": v / n for k, v in sums.items()},
                "s_per_step": (time.perf_counter() - t_last) / n,
            }
            history.append(row)
            if acc.is_main_process:
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            sums, t_last = {}, time.perf_counter()
        if step % cfg.save_every == 0 or step == cfg.steps or timeout:
            _save(acc, gen, cfg, step, data)
        if timeout:
            break
    if acc.is_main_process:
        tmp = out / ".vocoder.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_vocoder(acc.unwrap_model(gen), tmp)
        shutil.rmtree(out / "vocoder", ignore_errors=True)
        tmp.rename(out / "vocoder")
    acc.wait_for_everyone()
    return {
        "steps": step,
        "history": history,
        "vocoder": str(out / "vocoder"),
        "seconds": time.perf_counter() - t0,
    }


def save_vocoder(model: nn.Module, out: Path) -> Path:
    return save_unitmel(model, out) if isinstance(model, UnitMel) else save_codehifigan(model, out)


def _save(acc: Any, gen: nn.Module, cfg: VocoderTrainConfig, step: int, data: SegmentData) -> None:
    from accelerate.utils import gather_object

    ckpt = Path(cfg.out) / "checkpoints"
    tmp, final = ckpt / f".step-{step:06d}.tmp", ckpt / f"step-{step:06d}"
    states = gather_object([data.rng.bit_generator.state])
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / "state"))
    if acc.is_main_process:
        save_vocoder(acc.unwrap_model(gen), tmp / "vocoder")
        (tmp / "trainer.json").write_text(
            json.dumps({"step": step, "data_rng": states, "config": asdict(cfg)}) + "\n"
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(p for p in ckpt.glob("step-*") if p != final)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
