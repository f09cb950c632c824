"""Training throughput: tokunify's packed batches vs the transformers Trainer with a padding collator.

Same tiny Llama, same length-varied documents (ASR/TTS/continuation/text docs formatted from an
espeak token store, plus their lengths' spread), same optimizer. Reports effective (non-pad)
tokens per second and peak memory (RSS), each variant in its own subprocess.

Run: python benchmarks/train_packing.py [--docs 600] [--seq-len 512] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_docs(work: Path, n_docs: int) -> tuple[list[tuple[list[int], list[bool]]], int, int]:
    """An espeak corpus -> mel units -> store -> formatted docs of a task mixture."""
    from _corpus import build_store

    from tokunify.extend import add_vocab_tokens
    from tokunify.store import TokenStore
    from tokunify.tokenizers.text import load_text_tokenizer
    from tokunify.train.config import DataConfig
    from tokunify.train.data import Formatter, RecordSource, TaskData
    from tokunify.vocab import UnifiedVocab, units_stream

    paths = build_store(work, n_utts=200, k=100)
    tok = load_text_tokenizer(paths["sp"])
    vocab = UnifiedVocab(len(tok), (units_stream("units", 100),))
    add_vocab_tokens(tok, vocab)
    cfg = DataConfig(
        stores=[str(paths["store"])],
        mixture={"asr": 0.3, "tts": 0.3, "continue": 0.2, "text": 0.1, "interleave": 0.1},
        eval_fraction=0,
    )
    data = TaskData(
        RecordSource([TokenStore(paths["store"])]),
        Formatter(vocab, tok, cfg, "units", 50.0),
        cfg,
        seed=0,
    )
    docs = []
    for _ in range(n_docs):
        d = data.next_doc()
        docs.append((d.ids.tolist(), d.mask.tolist()))
    return docs, vocab.size, vocab.pad


def model_for(vocab_size: int, pad: int):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=6,
            pad_token_id=pad,
        )
    )


def run_packed(docs, vocab_size, pad, seq_len, batch) -> dict:  # type: ignore[no-untyped-def]
    from tokunify.train import attention
    from tokunify.train.loop import forward, token_losses
    from tokunify.train.packing import Doc, Packer

    model = model_for(vocab_size, pad).train()
    attention.enable(model)  # as `tokunify train` does: per-document SDPA
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = iter(
        [Doc(np.asarray(i), np.asarray(m), 0) for i, m in docs] * 2
    )  # the packer's pool looks ahead
    packer, batches, seen = Packer(seq_len, pad), [], 0
    while seen < len(
        docs
    ):  # the same documents as the Trainer run, packed as tokunify train packs them
        b, used = packer.next_batch(batch, stream.__next__)
        batches.append(b)
        seen += len(used)
    t0 = time.perf_counter()
    tokens = 0
    for b in batches:
        loss, _, _ = token_losses(forward(model, b), b, 1)
        loss.backward()
        opt.step()
        opt.zero_grad()
        tokens += b.num_tokens
    dt = time.perf_counter() - t0
    slots = len(batches) * batch * seq_len
    return {"tokens": tokens, "seconds": dt, "steps": len(batches), "fill": tokens / slots}


def run_trainer(docs, vocab_size, pad, seq_len, batch, work) -> dict:  # type: ignore[no-untyped-def]
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    class Docs(torch.utils.data.Dataset):
        def __len__(self):
            return len(docs)

        def __getitem__(self, i):
            ids, mask = docs[i]
            ids = ids[:seq_len]
            return {
                "input_ids": ids,
                "labels": [t if m else -100 for t, m in zip(ids, mask[:seq_len], strict=True)],
            }

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

    model = model_for(vocab_size, pad)
    # the same batch size in sequences as the packed run (each packed row holds several documents)
    per_batch = batch
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=per_batch,
        learning_rate=1e-3,
        num_train_epochs=1,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Docs(),
        data_collator=DataCollatorForSeq2Seq(Tok(), padding=True, label_pad_token_id=-100),
    )
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    tokens = sum(min(len(i), seq_len) for i, _ in docs)
    n_steps = -(-len(docs) // per_batch)
    return {"tokens": tokens, "seconds": dt, "steps": n_steps, "docs_per_batch": per_batch}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variant", choices=["packed", "trainer"])
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.variant:
        work = Path(args.work)
        meta = json.loads((work / "docs.json").read_text())
        fn = run_packed if args.variant == "packed" else run_trainer
        extra = () if args.variant == "packed" else (work,)
        res = fn(meta["docs"], meta["vocab"], meta["pad"], args.seq_len, args.batch, *extra)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    work = Path(tempfile.mkdtemp())
    docs, vocab_size, pad = make_docs(work, args.docs)
    (work / "docs.json").write_text(json.dumps({"docs": docs, "vocab": vocab_size, "pad": pad}))
    lengths = np.array([len(d[0]) for d in docs])
    out = {}
    for variant in ("packed", "trainer"):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--work",
            str(work),
            "--seq-len",
            str(args.seq_len),
            "--batch",
            str(args.batch),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    p, t = out["packed"], out["trainer"]
    print(
        f"{len(docs)} docs (asr/tts/continue/text/interleave from an espeak store), length {lengths.min()}-{lengths.max()} (mean {lengths.mean():.0f}); Llama 4 x 192; torch threads {torch.get_num_threads()}"
    )
    print()
    print("| variant | steps | effective tokens | seconds | effective tokens/s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    print(
        f"| tokunify packing ({args.batch} x {args.seq_len}, fill {100 * p['fill']:.0f}%) | {p['steps']} | {p['tokens']} | {p['seconds']:.1f} | {p['tokens'] / p['seconds']:.0f} | {p['peak_rss_mb']:.0f} |"
    )
    print(
        f"| Trainer + padding collator ({t['docs_per_batch']} docs per batch, padded to the longest) | {t['steps']} | {t['tokens']} | {t['seconds']:.1f} | {t['tokens'] / t['seconds']:.0f} | {t['peak_rss_mb']:.0f} |"
    )
    print()
    print(
        f"ratio (effective tokens/s, packed / Trainer): {(p['tokens'] / p['seconds']) / (t['tokens'] / t['seconds']):.2f}x"
    )


if __name__ == "__main__":
    main()
