"""Token store read throughput next to what training consumes, and bytes per token on disk.

- reader: ``TokenStore.iterate`` (shuffled, decoding shards) -> records/s and stream+text tokens/s;
- reader + formatting + packing: the whole data path of ``tokunify train`` (task mixture);
- training: a step of the demo-size model (Llama 4 x 192, packed 8 x 512) on the same data.

Run: python benchmarks/store_read.py [--utterances 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    from _corpus import build_store

    from tokunify.core.vocab import UnifiedVocab, units_stream
    from tokunify.data.store import TokenStore
    from tokunify.model.extend import add_vocab_tokens, scratch_model
    from tokunify.tokenizers.text import load_text_tokenizer
    from tokunify.train import attention
    from tokunify.train.config import DataConfig
    from tokunify.train.data import Formatter, RecordSource, TaskData
    from tokunify.train.step import forward, token_losses

    paths = build_store(Path(tempfile.mkdtemp()), n_utts=args.utterances, k=100)
    root = paths["store"]

    # 1. raw reader: fresh store object (shards decoded inside the timing), several epochs
    t0 = time.perf_counter()
    records = tokens = 0
    store = TokenStore(root)
    for epoch in range(args.epochs):
        for r in store.iterate(seed=0, epoch=epoch):
            records += 1
            tokens += sum(v.size for v in r.streams.values()) + (
                len(r.text_ids) if r.text_ids is not None else 0
            )
    t_read = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in root.glob("shard-*.parquet"))
    per_epoch_tokens = tokens // args.epochs

    # 2. the training data path: mixture sampling, formatting, packing
    tok = load_text_tokenizer(paths["sp"])
    vocab = UnifiedVocab(len(tok), (units_stream("units", 100),))
    add_vocab_tokens(tok, vocab)
    cfg = DataConfig(stores=[str(root)], seq_len=512, eval_fraction=0,
                     mixture={"asr": 0.3, "tts": 0.3, "continue": 0.2, "text": 0.1, "interleave": 0.1})  # fmt: skip
    data = TaskData(
        RecordSource([TokenStore(root)]), Formatter(vocab, tok, cfg, "units", 50.0), cfg, seed=0
    )
    t0 = time.perf_counter()
    n_batches, packed_tokens = 30, 0
    for _ in range(n_batches):
        packed_tokens += data.next_batch(8).num_tokens
    t_pipe = time.perf_counter() - t0

    # 3. what a training step consumes
    model = scratch_model("llama-small", vocab).train()
    attention.enable(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [data.next_batch(8) for _ in range(6)]
    t0 = time.perf_counter()
    train_tokens = 0
    for b in batches:
        loss, _, _ = token_losses(forward(model, b), b, len(cfg.mixture))
        loss.backward()
        opt.step()
        opt.zero_grad()
        train_tokens += b.num_tokens
    t_train = time.perf_counter() - t0
    train_tps = train_tokens / t_train
    lm_tokens_per_record = packed_tokens / max(data.docs_seen, 1)
    train_rps = train_tps / lm_tokens_per_record

    print(
        f"store: {len(store)} utterances, {store.seconds / 3600:.3f} h, {per_epoch_tokens} stored tokens (units + text ids); {disk} bytes of Parquet (zstd)"
    )
    print()
    print("| stage | records/s | tokens/s | headroom vs training |")
    print("|---|---|---|---|")
    print(
        f"| store reader (shuffled, {args.epochs} epochs) | {records / t_read:,.0f} | {tokens / t_read:,.0f} | {(records / t_read) / train_rps:,.0f}x |"
    )
    print(
        f"| reader + task formatting + packing | {data.docs_seen / t_pipe:,.0f} | {packed_tokens / t_pipe:,.0f} LM tokens | {(packed_tokens / t_pipe) / train_tps:,.0f}x |"
    )
    print(
        f"| training step (llama-small, 8 x 512 packed, CPU) | {train_rps:,.1f} | {train_tps:,.0f} LM tokens | 1x |"
    )
    print()
    print(
        f"bytes per stored token on disk: {disk / per_epoch_tokens:.2f} (uint32 lists, zstd; durations, words and text included in the bytes)"
    )
    lengths = np.array([len(r.streams["units"]) for r in store.iterate(shuffle=False)])
    print(f"units per utterance: mean {lengths.mean():.0f}, max {lengths.max()}")


if __name__ == "__main__":
    main()
