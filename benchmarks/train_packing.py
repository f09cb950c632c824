"""Training throughput of `tokunify train` (packing + per-document attention) vs the HF Trainer.

The packed rows run through the functions `tokunify train` runs (``setup`` then ``train`` of
tokunify.train.loop, on a bundle from ``tokunify extend scratch:llama-small``), once with the
per-document attention path and once with the dense ``[B, 1, L, L]`` block-mask fallback, at
seq_len 512, 2048 and 8192 with the same tokens per step. The baseline is the transformers Trainer
with a padding collator on the same documents (the same task-mixture stream, same model, same
optimizer and LR). Reports effective (non-pad) tokens/s and each variant's peak RSS (its own
subprocess; 8 GiB address-space cap, so an out-of-memory variant reports instead of swapping).

Run: python benchmarks/train_packing.py [--docs 600] [--tokens-per-step 4096] [--work DIR (reuse)]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MIXTURE = {"asr": 0.3, "tts": 0.3, "continue": 0.2, "text": 0.1, "interleave": 0.1}
SEQ_LENS = (512, 2048, 8192)
LR = 1e-3


def train_config(work: Path, seq_len: int, batch: int, steps: int, packed: bool):  # type: ignore[no-untyped-def]
    from tokunify.train.config import DataConfig, OptimConfig, TrainConfig

    return TrainConfig(
        bundle=str(work / "bundle"),
        out=str(work / f"run-{seq_len}-{'packed' if packed else 'dense'}"),
        data=DataConfig(
            stores=[str(work / "store")], mixture=dict(MIXTURE), eval_fraction=0.0, seq_len=seq_len
        ),
        optim=OptimConfig(lr=LR, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0),
        steps=steps,
        batch_size=batch,
        eval_every=0,
        eval_examples=0,
        save_every=0,
        log_every=steps,
        progress=False,
        cpu=True,
        mixed_precision="no",
        resume=False,
        overwrite=True,  # a --work of an earlier run: measure afresh
        packed_attention=packed,
    )


def prepare(work: Path, n_docs: int) -> dict:
    """An espeak corpus -> mel units -> store -> bundle; the first ``n_docs`` documents of the stream."""
    from _corpus import build_store

    from tokunify.cli import main

    if (work / "bundle" / "tokunify.json").is_file():  # --work of an earlier run: reuse its store
        return _docs(work, n_docs)
    paths = build_store(work, n_utts=200, k=100)
    assert main(["extend", "scratch:llama-small", "--text-tokenizer", str(paths["sp"]), "--units", "100",
                 "--speech-tokenizer", f"units={paths['tokenizer']}", "--out", str(work / "bundle")]) == 0  # fmt: skip
    return _docs(work, n_docs)


def _docs(work: Path, n_docs: int) -> dict:
    import tokunify
    from tokunify.train.setup import build_data

    bundle = tokunify.load(work / "bundle")
    cfg = train_config(work, max(SEQ_LENS), 1, 1, True)
    data, _ = build_data(
        cfg, bundle, SimpleNamespace(process_index=0, num_processes=1, device="cpu")
    )
    docs = []
    for _ in range(n_docs):  # the order `tokunify train` draws them in (same seed, same mixture)
        d = data.next_doc()
        docs.append((d.ids.tolist(), d.mask.tolist()))
    return {"docs": docs, "pad": bundle.vocab.pad}


def run_packed(work: Path, seq_len: int, batch: int, steps: int, packed: bool) -> dict:
    from tokunify.train.setup import setup
    from tokunify.train.step import train

    run = setup(train_config(work, seq_len, batch, steps, packed))
    t0 = time.perf_counter()
    train(run)
    dt = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in run.log.history if "tokens" in r)
    return {"tokens": tokens, "seconds": dt, "steps": steps, "attention": run.attention,
            "fill": tokens / (steps * batch * seq_len)}  # fmt: skip


def run_trainer(work: Path, batch: int, docs: list, pad: int) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    import tokunify

    class Docs(torch.utils.data.Dataset):
        def __len__(self):
            return len(docs)

        def __getitem__(self, i):
            ids, mask = docs[i]
            return {"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)]}  # fmt: skip

    pad_id = pad

    class Tok:  # the collator only needs the pad id and the padding side
        pad_token_id = pad_id
        padding_side = "right"

        def pad(self, features, **kw):
            n = max(len(f["input_ids"]) for f in features)
            ids = torch.full((len(features), n), pad_id)
            att = torch.zeros((len(features), n), dtype=torch.long)
            for i, f in enumerate(features):
                ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                att[i, : len(f["input_ids"])] = 1
            return {"input_ids": ids, "attention_mask": att}

    model = tokunify.load(work / "bundle").model
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=batch, learning_rate=LR,
        lr_scheduler_type="constant", weight_decay=0.0, num_train_epochs=1, report_to=[],
        save_strategy="no", logging_strategy="no", use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(Tok(), padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=Docs(), data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    tokens = sum(len(i) for i, _ in docs)
    return {"tokens": tokens, "seconds": dt, "steps": -(-len(docs) // batch), "attention": "sdpa, padding mask"}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    cap = 8 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    work = Path(args.work)
    meta = json.loads((work / "docs.json").read_text())
    try:
        if args.variant == "trainer":
            res = run_trainer(work, args.batch, meta["docs"], meta["pad"])
        else:
            res = run_packed(work, args.seq_len, args.batch, args.steps, args.variant == "packed")
    except (MemoryError, RuntimeError) as e:
        res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"}
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--tokens-per-step", type=int, default=4096)
    ap.add_argument("--trainer-batch", type=int, default=8)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=list(SEQ_LENS))
    ap.add_argument("--variant", choices=["packed", "dense", "trainer"])
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.variant:
        child(args)
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp())
    meta = prepare(work, args.docs)
    (work / "docs.json").write_text(json.dumps(meta))
    lengths = np.array([len(d[0]) for d in meta["docs"]])

    def sub(variant: str, seq_len: int, batch: int, steps: int) -> dict:
        cmd = [sys.executable, __file__, "--variant", variant, "--work", str(work), "--seq-len", str(seq_len),
               "--batch", str(batch), "--steps", str(steps)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = res.stdout.strip().splitlines()
        if res.returncode or not lines or not lines[-1].startswith("{"):
            return {"error": f"exit {res.returncode}: {res.stderr.strip().splitlines()[-1:]}"}
        return json.loads(lines[-1])

    print(
        f"{len(lengths)} docs ({'/'.join(MIXTURE)} from an espeak store), length {lengths.min()}-{lengths.max()} "
        f"(mean {lengths.mean():.0f}); Llama 4 x 192 (scratch:llama-small); torch threads {torch.get_num_threads()}"
    )  # fmt: skip
    print()
    print("| variant | attention | seq_len | rows/step | steps | effective tokens | s | effective tokens/s | vs Trainer | peak RSS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    base = sub("trainer", max(lengths), args.trainer_batch, 0)
    ref = base["tokens"] / base["seconds"] if "error" not in base else float("nan")

    def show(
        name: str, seq_len: int | str, batch: int, r: dict
    ) -> None:  # one row as soon as it is measured
        if "error" in r:
            print(f"| {name} | - | {seq_len} | {batch} | - | - | - | {r['error']} | - | {r.get('peak_rss_mb', 0):.0f} |", flush=True)  # fmt: skip
            return
        tps = r["tokens"] / r["seconds"]
        print(f"| {name} | {r['attention']} | {seq_len} | {batch} | {r['steps']} | {r['tokens']} | {r['seconds']:.1f} | {tps:.0f} | {tps / ref:.2f}x | {r['peak_rss_mb']:.0f} |", flush=True)  # fmt: skip

    show("Trainer + padding collator", "-", args.trainer_batch, base)
    for seq_len in args.seq_lens:
        batch = max(1, args.tokens_per_step // seq_len)
        # as many steps as the documents fill at ~97% packing
        steps = max(1, math.ceil(lengths.sum() / (0.97 * batch * seq_len)))
        for variant in ("packed", "dense"):
            show(f"tokunify train, {variant}", seq_len, batch, sub(variant, seq_len, batch, steps))


if __name__ == "__main__":
    main()
