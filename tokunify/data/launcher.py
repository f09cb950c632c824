"""Which slice of a job this process owns, read from the launcher that started it.

``torchrun`` / ``accelerate launch`` set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. SLURM sets
``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (``_MIN``/``_MAX`` on older versions) for array
jobs and ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` for ``srun`` tasks; both together
(an array of multi-task steps) give ``array_task * ntasks + procid`` of ``array_count * ntasks``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """This process's slice ``index`` of ``count``, its GPU index on the node, and who said so."""

    index: int = 0
    count: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "none", "torchrun", "slurm", "--shard"

    def owns(self, chunk: int) -> bool:
        """Chunk ``c`` belongs to slice ``c % count``: slices are disjoint and cover every chunk."""
        return chunk % self.count == self.index

    @property
    def distributed(self) -> bool:
        return self.count > 1


class LaunchError(ValueError):
    """The launcher's environment variables do not describe a valid slice."""


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise LaunchError(f"environment variable {key}={env[key]!r} is not an integer") from None


def parse_slice(s: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)``."""
    i, _, n = s.partition("/")
    try:
        a, b = int(i), int(n)
    except ValueError:
        raise LaunchError(f"--shard {s!r}: expected i/N") from None
    if not 0 <= a < b:
        raise LaunchError(f"--shard {s!r}: need 0 <= i < N")
    return a, b


def _slurm_array(env: Mapping[str, str]) -> tuple[int, int] | None:
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    lo = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
    if "SLURM_ARRAY_TASK_COUNT" in env:
        count = _int(env, "SLURM_ARRAY_TASK_COUNT")
    elif "SLURM_ARRAY_TASK_MAX" in env:
        count = _int(env, "SLURM_ARRAY_TASK_MAX") - lo + 1
    else:
        raise LaunchError("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MAX")
    # --array=a-b with step 1 numbers tasks lo..lo+count-1; a step or list would leave gaps.
    if not 0 <= task - lo < count:
        raise LaunchError(
            f"SLURM array task {task} is outside {lo}..{lo + count - 1}; use a contiguous --array=0-{count - 1}"
        )
    return task - lo, count


def detect_launch(shard: str | None = None, env: Mapping[str, str] | None = None) -> Launch:
    """This process's slice: an explicit ``--shard i/N`` wins, then torchrun, then SLURM, else 0/1."""
    env = os.environ if env is None else env
    local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    if shard is not None:
        i, n = parse_slice(shard)
        return Launch(i, n, local, "--shard")
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        if not 0 <= rank < world:
            raise LaunchError(f"RANK={rank} is outside WORLD_SIZE={world}")
        return Launch(rank, world, local, "torchrun")
    array = _slurm_array(env)
    if array is not None or "SLURM_PROCID" in env:
        a, a_n = array or (0, 1)
        p = _int(env, "SLURM_PROCID") if "SLURM_PROCID" in env else 0
        # Inside an srun step its own task count; a batch script alone sees the allocation's.
        key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        p_n = _int(env, key) if key in env else 1
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        if not 0 <= p < p_n:
            raise LaunchError(f"SLURM_PROCID={p} is outside SLURM_NTASKS={p_n}")
        return Launch(a * p_n + p, a_n * p_n, local, "slurm")
    return Launch()


def device_for(device: str, launch: Launch) -> str:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process on a node); explicit indices stay."""
    return f"cuda:{launch.local_rank}" if device == "cuda" else device
