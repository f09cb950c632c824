"""`tokunify train`: the accelerate training loop.

One loop for one CPU and for many GPUs/nodes: the distributed setup (DDP, FSDP, DeepSpeed) comes
from ``accelerate launch`` and its config; nothing here is hand-written distributed code.
:func:`run_train` reads as its steps, as torchtune's recipes do: :func:`~tokunify.train.setup.setup`
(accelerator, data, model, optimizer, resume; :mod:`tokunify.train.setup`) ->
:func:`~tokunify.train.step.train` (the optimizer steps; :mod:`tokunify.train.step`) -> :func:`cleanup`
(final eval, checkpoint and bundle; :mod:`tokunify.train.checkpointing`).

Invariants a multi-process run keeps (tests/train/test_distributed.py):

- the learning-rate schedule is a function of the optimizer step, the same on 1 or N processes and
  with gradient accumulation: the scheduler stays out of ``accelerator.prepare`` (whose wrapper
  steps it once per process) and steps once per optimizer step;
- checkpoints and ``final/`` hold the full model (``accelerator.get_state_dict``, which gathers
  FSDP shards and ZeRO-3 partitions; run by our tests under DDP only, as accelerate engages FSDP and
  DeepSpeed only on GPUs), and eval runs through the prepared model;
- a launch config that asks for FSDP/DeepSpeed where accelerate did not set it up is refused
  (:func:`check_sharding`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tokunify.core.fsio import exclusive_lock
from tokunify.train.checkpointing import write_bundle
from tokunify.train.checkpoints import CKPT_DIR, TRAINER_FILE
from tokunify.train.config import TrainConfig
from tokunify.train.setup import LOCK_FILE, Run, setup
from tokunify.train.step import checkpoint_step, eval_step, train

__all__ = ["CKPT_DIR", "LOCK_FILE", "TRAINER_FILE", "cleanup", "run_train", "setup", "train"]


def cleanup(run: Run, done: int) -> dict[str, Any]:
    """Final eval, checkpoint and ``final/`` bundle; the run's summary."""
    acc, out = run.acc, Path(run.cfg.out)
    eval_step(run, done)
    checkpoint_step(run, done)
    write_bundle(acc, run.model, run.bundle, out / "final", run.speech_input)  # atomic
    acc.wait_for_everyone()
    acc.end_training()
    return {
        "steps": run.cfg.steps,
        "last_step": done,
        "world_size": acc.num_processes,
        "attention": run.attention,
        "resumed_from": run.resumed_from,
        "history": run.log.history,
        "final": str(out / "final"),
    }


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    """`tokunify train`: setup -> train -> cleanup, holding ``OUT/train.lock``.

    One run per ``out``: the main process (global rank 0 of a launch; the other ranks are its
    own run) holds an exclusive lock, so a second ``train`` on the same ``out`` fails at once.
    """
    cfg.validate()
    if int(os.environ.get("RANK", "0")) != 0:
        return _run(cfg)
    with exclusive_lock(Path(cfg.out) / LOCK_FILE, "train"):
        return _run(cfg)


def _run(cfg: TrainConfig) -> dict[str, Any]:
    run = setup(cfg)
    done = train(run)
    return cleanup(run, done)
