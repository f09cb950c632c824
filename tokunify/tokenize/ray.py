"""`tokunify tokenize --engine ray`: the same chunks and store, run by Ray Data (extra ``[ray]``).

The job's chunks become a Ray dataset (one row per chunk: its index and its manifest rows). Ray
tasks decode and check the audio; a pool of tokenizer actors (``--ray-actors``, ``num_gpus`` each
on GPU) batches each chunk by audio seconds, tokenizes it and publishes the shard with
:func:`tokunify.data.store.write_chunk`, exactly as the native path does. Only unfinished chunks enter
the dataset, so a rerun resumes; ``TokenStore`` and ``train`` read the result unchanged.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from tokunify.data.store import StoreMeta
from tokunify.tokenize.job import (
    ChunkWorker,
    Decoder,
    Row,
    TokenizeArgs,
    chunk_of,
    tokenizer_limits,
)
from tokunify.tokenizers.base import tokenizer_from_config

# Ray tasks exchange rows as pickled bytes: manifest entries and decoded waveforms are Python
# objects that Arrow blocks cannot hold natively, and one binary cell per chunk keeps blocks small.


def _decode(item: dict[str, Any], decoder: Decoder) -> dict[str, Any]:
    """Ray task: read and check the audio of one chunk (loads no tokenizer)."""
    rows: list[Row] = pickle.loads(item["rows"])
    good, rejects = decoder.decode(rows)
    return {
        "chunk": item["chunk"],
        "decoded": pickle.dumps((good, rejects), protocol=pickle.HIGHEST_PROTOCOL),
        "total": len(rows),
    }


class _Encoder:
    """Ray actor: loads the tokenizers once, then tokenizes and writes whole chunks."""

    def __init__(self, args: TokenizeArgs, meta: StoreMeta, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.worker = ChunkWorker(args, meta, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for chunk, decoded, total in zip(
            batch["chunk"], batch["decoded"], batch["total"], strict=True
        ):
            good, rejects = pickle.loads(decoded)
            stats = self.worker.encode_and_write(int(chunk), good, rejects, int(total))
            for k, v in stats.items():
                out.setdefault(k, []).append(v)
        return out


def run_ray(
    args: TokenizeArgs,
    meta: StoreMeta,
    rows: list[Row],
    todo: list[int],
    device: str,
    done: Callable[[dict[str, Any]], None],
) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'tokunify[ray]'") from None
    if not todo:
        return
    if not ray.is_initialized():
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    gpu = device.startswith("cuda")

    limits = tokenizer_limits(  # loaded once on the driver, on CPU, for their rates and limits
        {n: tokenizer_from_config(i.tokenizer, device="cpu") for n, i in meta.streams.items()}
    )
    items = [
        {
            "chunk": c,
            "rows": pickle.dumps(chunk_of(rows, meta, c), protocol=pickle.HIGHEST_PROTOCOL),
        }
        for c in todo
    ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # A ray_remote_args_fn keeps Ray Data from fusing the decode tasks into the tokenizer actors:
    # decoding then scales on CPUs apart from the (GPU) actor pool.
    decode_cpus = args.ray_decode_cpus
    ds = ds.map(
        _decode,
        fn_kwargs={"decoder": Decoder(args, limits)},
        ray_remote_args_fn=lambda: {"num_cpus": decode_cpus},
    )
    ds = ds.map_batches(
        _Encoder,
        fn_constructor_kwargs={
            "args": args,
            "meta": meta,
            "device": "cuda" if gpu else device,  # Ray sets CUDA_VISIBLE_DEVICES per actor
            "threads": max(1, int(args.ray_cpus_per_actor)),
        },
        batch_size=1,
        concurrency=args.ray_actors,
        num_cpus=args.ray_cpus_per_actor,
        num_gpus=args.ray_gpus_per_actor if gpu else 0,
    )
    for stats in ds.iter_rows():
        done({k: (v.item() if hasattr(v, "item") else v) for k, v in stats.items()})
    ops = [  # "Operator 1 Map(_decode): ..." -> "Map(_decode)"
        ln.split(":")[0].split(" ", 2)[-1]
        for ln in ds.stats().splitlines()
        if ln.startswith("Operator")
    ]
    print("ray operators: " + " -> ".join(ops))
