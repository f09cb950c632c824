"""The checkpoints and bundles of an LM run (on top of :mod:`tokunify.train.checkpoints`, the
run-directory primitives it shares with vocoder training): what a checkpoint holds and how the
bundle is written."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from tokunify.model.bundle import Bundle, BundleSpec, save_bundle
from tokunify.train import attention, checkpoints
from tokunify.train.checkpoints import CKPT_DIR, TRAINER_FILE
from tokunify.train.config import TrainConfig


# ---- checkpoints ---------------------------------------------------------------------------------
def latest_checkpoint(out: Path) -> Path | None:
    return checkpoints.latest(out)


def weight_digest(model: torch.nn.Module) -> str:
    """sha256 of this process's parameters (DDP replicas must agree bit for bit)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(
    acc: Any,
    model: torch.nn.Module,
    bundle: Bundle,
    cfg: TrainConfig,
    step: int,
    data_states: list[dict],
    log_tail: int,
    speech_input: Any = None,
) -> Path:
    """Atomically write checkpoints/step-N: accelerate state (the speech input's weights too), a
    loadable bundle (with ``speech_input/``) and trainer.json."""
    from accelerate.utils import gather_object

    out = Path(cfg.out)
    tmp = Path(cfg.out) / CKPT_DIR / f".step-{step:06d}.tmp"
    if acc.is_main_process:
        checkpoints.stage(out, step)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / "state"))
    with_speech = {"speech_input": speech_input} if speech_input is not None else {}
    write_bundle(acc, model, bundle, tmp / "bundle", **with_speech)  # every rank: gathers shards
    digests = gather_object([weight_digest(model)]) if cfg.weight_digests else None
    final = out / CKPT_DIR / f"step-{step:06d}"
    if acc.is_main_process:
        meta = {
            "step": step,
            "world_size": acc.num_processes,
            "data": data_states,
            "log_lines": log_tail,
            "config": asdict(cfg),
            **({"weight_digests": digests} if digests else {}),
        }
        (tmp / TRAINER_FILE).write_text(json.dumps(meta) + "\n")
        final = checkpoints.commit(out, step, cfg.keep_checkpoints)
        if cfg.checkpoint_notify:  # a FIFO blocks here until a reader opens it
            with open(cfg.checkpoint_notify, "a") as f:
                f.write(f"{final}\n")
    acc.wait_for_everyone()
    return final


def write_bundle(
    acc: Any, model: torch.nn.Module, bundle: Bundle, path: Path, speech_input: Any = None
) -> None:
    """The full model as a bundle, with ``speech_input/`` (encoder + adapter) where the run has a
    speech input. Call on every rank: ``get_state_dict`` gathers FSDP shards and DeepSpeed ZeRO-3
    partitions; the main process writes."""
    state = acc.get_state_dict(model)
    if not acc.is_main_process:
        return
    unwrapped = acc.unwrap_model(model)
    packed = attention.path_of(unwrapped) == attention.PER_DOCUMENT
    if hasattr(unwrapped, "merge_and_unload"):  # LoRA: the bundle holds merged plain weights
        merged = copy.deepcopy(unwrapped)
        merged.load_state_dict(state)
        plain, state = merged.merge_and_unload(), None
    else:
        plain = unwrapped
    attention.disable(plain)  # the saved config names a stock attention implementation
    spec = BundleSpec(**{**bundle.spec.__dict__})
    spec.extra = {**spec.extra, "trained_from": str(bundle.path)}
    try:
        save_bundle(
            path,
            plain,
            bundle.tokenizer,
            bundle.vocab,
            spec,
            copy_from=bundle.path,
            state_dict=state,
            speech_input=speech_input,
        )
    finally:
        if packed and plain is unwrapped:
            attention.enable(unwrapped)
