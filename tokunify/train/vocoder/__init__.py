"""`tokunify train-vocoder`: unit vocoders trained with accelerate, one entry point for every
architecture (``arch``, a key of :data:`ARCHS`):

- ``codehifigan`` (:mod:`.hifigan`): the unit HiFi-GAN recipe, the GPU quality path;
- ``unit2mel`` (:mod:`.unit2mel`): a conv net regressing log-mel, vocoded by Griffin-Lim, that
  learns in CPU minutes.

The sample rate is the one the store's tokenizer read the audio at. Checkpoints are atomic and
resumable like LM training (:mod:`tokunify.train.checkpoints`); ``out/vocoder`` (config.json +
generator.safetensors) is what bundles and ``generate`` load.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from tokunify.data.store import TokenStore
from tokunify.train import checkpoints
from tokunify.train.setup import reset_single_process_accelerator
from tokunify.train.vocoder.config import VocoderTrainConfig
from tokunify.train.vocoder.data import SegmentData, stream_sample_rate
from tokunify.train.vocoder.hifigan import PRESETS, HiFiGANArch
from tokunify.train.vocoder.unit2mel import Unit2MelArch
from tokunify.vocoder.codehifigan import save_codehifigan
from tokunify.vocoder.unitmel import UnitMel, save_unitmel

ARCHS: dict[str, type[HiFiGANArch] | type[Unit2MelArch]] = {
    "codehifigan": HiFiGANArch,
    "unit2mel": Unit2MelArch,
}

__all__ = [
    "ARCHS",
    "PRESETS",
    "SegmentData",
    "VocoderTrainConfig",
    "run_train_vocoder",
    "save_vocoder",
]


def save_vocoder(model: nn.Module, out: Path) -> Path:
    return save_unitmel(model, out) if isinstance(model, UnitMel) else save_codehifigan(model, out)


def _save(acc: Any, gen: nn.Module, cfg: VocoderTrainConfig, step: int, data: SegmentData) -> None:
    from accelerate.utils import gather_object

    states = gather_object([data.rng.bit_generator.state])
    tmp = Path(cfg.out) / checkpoints.CKPT_DIR / f".step-{step:06d}.tmp"
    if acc.is_main_process:
        checkpoints.stage(cfg.out, step)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / "state"))
    if acc.is_main_process:
        save_vocoder(acc.unwrap_model(gen), tmp / "vocoder")
        meta = {"step": step, "data_rng": states, "config": asdict(cfg)}
        (tmp / checkpoints.TRAINER_FILE).write_text(json.dumps(meta) + "\n")
        checkpoints.commit(cfg.out, step, keep=2)
    acc.wait_for_everyone()


def run_train_vocoder(cfg: VocoderTrainConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    reset_single_process_accelerator()
    acc = Accelerator(cpu=cfg.cpu)
    set_seed(cfg.seed)
    out = Path(cfg.out)
    if acc.is_main_process:
        checkpoints.prepare_out(out, cfg.overwrite, ("vocoder", "log.jsonl"))
    acc.wait_for_everyone()
    store = TokenStore(cfg.store)
    sample_rate = stream_sample_rate(store, cfg.stream)
    info = store.meta.streams[cfg.stream]
    arch_cls = ARCHS[cfg.arch]
    hop = arch_cls.hop(cfg, sample_rate, info.frame_rate)
    data = SegmentData(store, cfg.stream, sample_rate, hop, cfg.seed + acc.process_index, cfg.max_utterances, cfg.speaker)  # fmt: skip
    arch = arch_cls(cfg, info.cardinality, sample_rate, info.frame_rate, len(data.speakers))
    arch.prepare(acc)
    start = 0
    last = checkpoints.latest(out) if cfg.resume else None
    if last is not None:
        acc.load_state(str(last / "state"))
        meta = json.loads((last / checkpoints.TRAINER_FILE).read_text())
        start = meta["step"]
        data.rng.bit_generator.state = meta["data_rng"][acc.process_index]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    t0, t_last = time.perf_counter(), time.perf_counter()
    sums: dict[str, float] = {}
    step = start
    history = []
    while step < cfg.steps:
        b = {k: v.to(acc.device) for k, v in data.batch(cfg.batch_size, cfg.segment_frames, arch.tail).items()}  # fmt: skip
        losses = arch.step(acc, b)
        step += 1
        for k, v in losses.items():
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
            _save(acc, arch.gen, cfg, step, data)
        if timeout:
            break
    if acc.is_main_process:
        tmp = out / ".vocoder.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_vocoder(acc.unwrap_model(arch.gen), tmp)
        shutil.rmtree(out / "vocoder", ignore_errors=True)
        tmp.rename(out / "vocoder")
    acc.wait_for_everyone()
    return {
        "steps": step,
        "history": history,
        "vocoder": str(out / "vocoder"),
        "seconds": time.perf_counter() - t0,
    }
