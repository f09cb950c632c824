"""Launcher-aware slices: torchrun / accelerate / SLURM environments, explicit --shard wins."""

from __future__ import annotations

import itertools

import pytest

from tokunify.data.launcher import LaunchError, detect_launch, device_for

CHUNKS = 23


def owners(launches) -> dict[int, list[int]]:
    return {c: [k for k, la in enumerate(launches) if la.owns(c)] for c in range(CHUNKS)}


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_torchrun_ranks_partition_the_chunks(world):
    launches = [
        detect_launch(env={"RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r % 4)})
        for r in range(world)
    ]
    assert {la.launcher for la in launches} == {"torchrun"}
    assert [la.local_rank for la in launches] == [r % 4 for r in range(world)]
    # every chunk has exactly one writer: two ranks never write the same chunk
    assert all(len(o) == 1 for o in owners(launches).values())


def test_slurm_array_and_srun_tasks_partition_the_chunks():
    # --array=1-3 (ids start at 1) x srun --ntasks 2: 6 disjoint slices
    launches = [
        detect_launch(
            env={
                "SLURM_ARRAY_TASK_ID": str(a),
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_PROCID": str(p),
                "SLURM_NTASKS": "2",
                "SLURM_LOCALID": str(p),
            }
        )
        for a, p in itertools.product(range(1, 4), range(2))
    ]
    assert sorted(la.index for la in launches) == list(range(6))
    assert {la.count for la in launches} == {6} and {la.launcher for la in launches} == {"slurm"}
    assert all(len(o) == 1 for o in owners(launches).values())
    # older SLURM: no _COUNT, only _MIN/_MAX
    la = detect_launch(
        env={"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_MAX": "7"}
    )
    assert (la.index, la.count) == (3, 4)
    # a plain srun step: SLURM_PROCID of the step's own task count
    la = detect_launch(env={"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2"})
    assert (la.index, la.count) == (1, 2)


def test_precedence_and_errors():
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURM_ARRAY_TASK_COUNT": "4",
    }
    assert detect_launch(env=env).launcher == "torchrun"  # torchrun inside a SLURM job
    la = detect_launch("2/3", env=env)  # an explicit --shard wins
    assert (la.index, la.count, la.launcher) == (2, 3, "--shard")
    assert (detect_launch(env={}).index, detect_launch(env={}).count) == (0, 1)
    with pytest.raises(LaunchError, match="expected i/N"):
        detect_launch("half")
    with pytest.raises(LaunchError, match="0 <= i < N"):
        detect_launch("3/3")
    with pytest.raises(LaunchError, match="RANK=2 is outside WORLD_SIZE=2"):
        detect_launch(env={"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match="contiguous"):
        detect_launch(env={"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"})
    with pytest.raises(LaunchError, match="not an integer"):
        detect_launch(env={"RANK": "x", "WORLD_SIZE": "2"})


def test_cuda_goes_to_the_local_rank():
    la = detect_launch(env={"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert device_for("cuda", la) == "cuda:1"
    assert device_for("cuda:3", la) == "cuda:3"  # an explicit index stays
    assert device_for("cpu", la) == "cpu"
