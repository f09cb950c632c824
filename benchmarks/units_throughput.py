"""P1: unit tokenization throughput, tokunify vs the fairseq/textless recipe, on the same audio.

Both sides use a base-size HuBERT (random init: no download), layer 6 and the same 500 centroids.

- reference: per utterance, the full HF forward with ``output_hidden_states=True``, then
  scikit-learn ``predict``, then Python dedup (what fairseq's dump_hubert_feature + dump_km_label
  and textlesslib do);
- tokunify: ``UnitTokenizer`` (only layers 1..6 run, batched matmul k-means, torch dedup), batched
  and one utterance at a time.

Run: python benchmarks/units_throughput.py [--utterances 40] [--layer 6]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _corpus import speech

from tokunify.tokenizers.base import pad_batch
from tokunify.tokenizers.features import SSLFeatures
from tokunify.tokenizers.kmeans import KMeans
from tokunify.tokenizers.units import UnitTokenizer


def python_dedup(units: list[int]) -> tuple[list[int], list[int]]:
    out, dur = [], []
    for u, g in itertools.groupby(units):
        out.append(u)
        dur.append(len(list(g)))
    return out, dur


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=40)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    from sklearn.cluster import MiniBatchKMeans
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig()).eval()  # base: 12 layers, 768 dims, 95 M parameters
    wavs = speech(args.utterances, 16000, ["en-us", "en-us+m3", "en+f2", "en-us+f3"])
    audio_s = sum(len(w) for w in wavs) / 16000

    feats = SSLFeatures(model, args.layer)
    with torch.inference_mode():
        train = torch.cat(
            [feats(torch.from_numpy(w)[None], torch.tensor([len(w)]))[0] for w in wavs[:12]]
        )
    # float64, so that sklearn's own predict is exact: in float32 it is off on ~0.3% of the frames
    # of layer-normed features, and not even reproducible run to run (threaded chunking).
    skm = MiniBatchKMeans(n_clusters=args.k, random_state=0, n_init=1, batch_size=4096).fit(
        train.double().numpy()
    )
    km = KMeans(torch.from_numpy(skm.cluster_centers_))
    tok = UnitTokenizer(feats, km, dedup=True)

    # reference recipe
    t0 = time.perf_counter()
    ref = []
    with torch.inference_mode():
        for w in wavs:
            hs = model(torch.from_numpy(w)[None], output_hidden_states=True).hidden_states[
                args.layer
            ][0]
            ref.append(python_dedup(skm.predict(hs.double().numpy()).tolist()))
    t_ref = time.perf_counter() - t0

    def run(batch: int) -> tuple[float, float, list]:
        t_feat = 0.0
        out = []
        t0 = time.perf_counter()
        for a in range(0, len(wavs), batch):
            x, lens = pad_batch(wavs[a : a + batch])
            t1 = time.perf_counter()
            f = feats(x, lens)
            t_feat += time.perf_counter() - t1
            sizes = [len(v) for v in f]
            units = km.assign(torch.cat(f)).split(sizes)
            out += [torch.unique_consecutive(u, return_counts=True) for u in units]
        return time.perf_counter() - t0, t_feat, out

    t_b, feat_b, ours_b = run(args.batch)
    t_1, feat_1, ours_1 = run(1)
    same = all(
        u.tolist() == r[0] and d.tolist() == r[1] for (u, d), r in zip(ours_b, ref, strict=True)
    )
    same_1 = all(torch.equal(a[0], b[0]) for a, b in zip(ours_b, ours_1, strict=True))
    api_same = tok.encode(wavs[:4]).ids[0].tolist() == ref[0][0]  # the public API, same units

    print(
        f"audio: {len(wavs)} espeak utterances, {audio_s:.1f} s; HuBERT base (random init), layer {args.layer}, K={args.k}; torch threads {torch.get_num_threads()}"
    )
    print()
    print("| pipeline | wall s | audio s / wall s | vs reference | outside SSL forward |")
    print("|---|---|---|---|---|")
    print(
        f"| reference: full forward + sklearn predict + python dedup, per utterance | {t_ref:.2f} | {audio_s / t_ref:.1f} | 1.00x | n/a |"
    )
    print(
        f"| tokunify, batch {args.batch} | {t_b:.2f} | {audio_s / t_b:.1f} | {t_ref / t_b:.2f}x | {100 * (t_b - feat_b) / t_b:.2f}% |"
    )
    print(
        f"| tokunify, one at a time | {t_1:.2f} | {audio_s / t_1:.1f} | {t_ref / t_1:.2f}x | {100 * (t_1 - feat_1) / t_1:.2f}% |"
    )
    print()
    print(
        f"identical units and durations to the reference: {same}; batch == one-at-a-time: {same_1}; public encode() too: {api_same}"
    )


if __name__ == "__main__":
    main()
