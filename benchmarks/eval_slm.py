"""Speech-LM pair scoring speed: length-sorted batches vs one pair at a time.

The same model (the demo's ``llama-small`` preset, from scratch: 128 units, 512 text pieces), the
same pairs (unit sequences of 15-150 units, the length range of the demo's minimal pairs) and the
same conventions; ``score_sequences`` is the function ``tokunify eval-slm`` calls. The baseline
scores each pair's two sequences in its own forward pass (batch 1), as a simple per-pair loop does.
Scores must be identical (same pair accuracy, log-likelihoods within float noise).

Run: python benchmarks/eval_slm.py [--pairs 128] [--batch-size 32] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tokunify.core.vocab import UnifiedVocab, units_stream
from tokunify.eval.slm.scoring import Conventions, pair_scores, score_sequences, speech_sequence
from tokunify.model.extend import scratch_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--preset", default="llama-small")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = UnifiedVocab(text_size=512, streams=(units_stream("units", 128),))
    model = scratch_model(args.preset, vocab, seed=0).eval()
    rng = np.random.default_rng(0)
    seqs = [
        speech_sequence(
            vocab, "units", rng.integers(0, 128, int(rng.integers(15, 151))), "continue"
        )
        for _ in range(2 * args.pairs)
    ]
    pos, neg = seqs[: args.pairs], seqs[args.pairs :]
    conv = Conventions("mean", "full", "all")
    score_sequences(model, vocab, seqs[:4], conv, batch_size=4)  # warm-up

    t0 = time.perf_counter()
    single = np.concatenate(
        [
            score_sequences(model, vocab, [p, n], conv, batch_size=1)
            for p, n in zip(pos, neg, strict=True)
        ]
    )
    t_single = time.perf_counter() - t0
    single_pos, single_neg = single[0::2], single[1::2]

    t0 = time.perf_counter()
    batched = score_sequences(model, vocab, pos + neg, conv, batch_size=args.batch_size)
    t_batched = time.perf_counter() - t0
    b_pos, b_neg = batched[: args.pairs], batched[args.pairs :]

    acc_single = float(pair_scores(single_pos, single_neg).mean())
    acc_batched = float(pair_scores(b_pos, b_neg).mean())
    max_diff = float(np.abs(np.concatenate([b_pos - single_pos, b_neg - single_neg])).max())
    n = args.pairs
    print(
        f"{args.preset}, {n} pairs, torch threads {torch.get_num_threads()}, conventions {conv.to_dict()}\n"
    )
    print("| method | seconds | pairs/s | accuracy | speed-up |")
    print("|---|---|---|---|---|")
    print(
        f"| one pair at a time (batch 1) | {t_single:.2f} | {n / t_single:.1f} | {acc_single:.4f} | 1.0x |"
    )
    print(f"| length-sorted batches of {args.batch_size} | {t_batched:.2f} | {n / t_batched:.1f} | {acc_batched:.4f} "
          f"| {t_single / t_batched:.1f}x |")  # fmt: skip
    print(
        f"\nmax |LL difference| {max_diff:.2e}; identical pair scores: {acc_single == acc_batched}"
    )


if __name__ == "__main__":
    main()
