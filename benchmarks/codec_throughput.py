"""P2: codec tokenization throughput, tokunify's batched EnCodec path vs per-file `encodec` calls.

Same weights on both sides: a random-init 24 kHz EnCodec from the `encodec` package, saved as an
original checkpoint and loaded by tokunify into transformers' ``EncodecModel``. Needs the
``encodec`` extra (CI leg 2's environment).

Run: python benchmarks/codec_throughput.py [--utterances 32] [--bandwidth 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _corpus import speech

from tokunify.tokenizers.base import pad_batch, tokenizer_from_config


def best_of_two(fn):
    times, out = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=32)
    ap.add_argument("--bandwidth", type=float, default=6.0)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    from encodec import EncodecModel

    torch.manual_seed(0)
    pkg = EncodecModel.encodec_model_24khz(pretrained=False).eval()
    for layer in pkg.quantizer.vq.layers:
        layer._codebook.embed.normal_()
    pkg.set_target_bandwidth(args.bandwidth)
    ckpt = Path(tempfile.mkdtemp()) / "encodec_24khz.th"
    torch.save(pkg.state_dict(), ckpt)

    wavs = speech(args.utterances, 24000, ["en-us", "en+f2"])
    audio_s = sum(len(w) for w in wavs) / 24000

    # reference: one `encodec` call per file, as its README does. Every pipeline runs twice and
    # the faster run counts: the first call per input shape pays for oneDNN kernel set-up.
    def reference():
        with torch.inference_mode():
            return [
                torch.cat([f[0][0] for f in pkg.encode(torch.from_numpy(w)[None, None])], -1)
                for w in wavs
            ]

    t_ref, ref = best_of_two(reference)

    tok = tokenizer_from_config(
        {"kind": "encodec", "source": str(ckpt), "bandwidth": args.bandwidth}
    )
    model = tok.backend.model
    t_fwd = 0.0

    def timed(fn):  # wrap encoder + quantizer to measure the share inside the codec forward
        def inner(*a, **k):
            nonlocal t_fwd
            t1 = time.perf_counter()
            out = fn(*a, **k)
            t_fwd += time.perf_counter() - t1
            return out

        return inner

    enc, qenc = model.encoder.forward, model.quantizer.encode
    model.encoder.forward, model.quantizer.encode = timed(enc), timed(qenc)

    shares = []

    def batched():
        nonlocal t_fwd
        t_fwd, t0, ours = 0.0, time.perf_counter(), []
        for a in range(0, len(wavs), args.batch):
            x, lens = pad_batch(wavs[a : a + args.batch])
            ours += tok.encode_batch(x, lens).ids
        shares.append(t_fwd / (time.perf_counter() - t0))
        return ours

    t_ours, ours = best_of_two(batched)
    fwd_share = min(shares)
    t_single, single = best_of_two(lambda: [tok.encode_batch(*pad_batch([w])).ids[0] for w in wavs])
    same = all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    same_single = all(torch.equal(a, b) for a, b in zip(single, ref, strict=True))

    print(
        f"audio: {len(wavs)} espeak utterances, {audio_s:.1f} s at 24 kHz; EnCodec 24 kHz (random init), {args.bandwidth} kbps = {tok.num_codebooks} codebooks; torch threads {torch.get_num_threads()}"
    )
    print()
    print("| pipeline | wall s | audio s / wall s | vs reference | inside codec forward |")
    print("|---|---|---|---|---|")
    print(
        f"| reference: `encodec` package, one call per file | {t_ref:.2f} | {audio_s / t_ref:.1f} | 1.00x | n/a |"
    )
    print(
        f"| tokunify (transformers backend), batch {args.batch} | {t_ours:.2f} | {audio_s / t_ours:.1f} | {t_ref / t_ours:.2f}x | {100 * fwd_share:.1f}% |"
    )
    print(
        f"| tokunify, one at a time | {t_single:.2f} | {audio_s / t_single:.1f} | {t_ref / t_single:.2f}x | |"
    )
    print()
    print(f"identical codes to the reference: batched {same}, one at a time {same_single}")


if __name__ == "__main__":
    main()
