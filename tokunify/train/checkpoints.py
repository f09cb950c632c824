"""Run-directory checkpoints, one helper for LM and vocoder training.

A checkpoint is ``<run>/checkpoints/step-NNNNNN/`` holding at least ``trainer.json``. It is staged in
a hidden ``.step-NNNNNN.tmp`` and renamed into place only once complete, so a crash leaves either
the previous checkpoints or the new one, never half of one; a directory without ``trainer.json``
is never resumed from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tokunify.core.fsio import refuse_non_empty

CKPT_DIR = "checkpoints"
TRAINER_FILE = "trainer.json"


def completed(run: str | Path) -> list[Path]:
    """The complete checkpoints of a run directory, oldest first."""
    d = Path(run) / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step-*") if (p / TRAINER_FILE).is_file())


def latest(run: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    done = completed(run)
    return done[-1] if done else None


def stage(run: str | Path, step: int) -> Path:
    """A fresh, empty staging directory for the checkpoint of ``step`` (main process only)."""
    tmp = Path(run) / CKPT_DIR / f".step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(run: str | Path, step: int, keep: int) -> Path:
    """Move the staged checkpoint of ``step`` into place, then keep only the newest ``keep``."""
    d = Path(run) / CKPT_DIR
    tmp, final = d / f".step-{step:06d}.tmp", d / f"step-{step:06d}"
    if not (tmp / TRAINER_FILE).is_file():
        raise ValueError(f"{tmp}: staged checkpoint has no {TRAINER_FILE}")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)  # the checkpoint exists only once it is complete
    older = [p for p in sorted(d.glob("step-*")) if p != final]
    for p in older[: max(0, len(older) - (max(keep, 1) - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def prepare_out(run: str | Path, overwrite: bool, owned: tuple[str, ...]) -> None:
    """The ``--out`` of a resumable trainer: a directory with a checkpoint resumes; ``overwrite``
    deletes the files the trainer writes (``owned``, nothing else) so it starts afresh; any other
    non-empty directory is refused (one line)."""
    run = Path(run)
    if overwrite:
        for name in (CKPT_DIR, *owned):
            p = run / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        return
    if latest(run) is None:
        refuse_non_empty(run, False)
