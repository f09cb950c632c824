"""Generation and vocoder speed.

1. Constrained vs unconstrained decoding: the same model and prompts, greedy, the same number of
   new tokens (end tokens disabled) -> overhead of the modality constraint.
2. Batch 16 vs batch 1 throughput (KV cache, left padding).
3. Vocoder real-time factor on CPU: tokunify's CodeHiFiGAN (weight norm folded; and torch.compile)
   against the speech-resynthesis generator with the same weights, set up as its inference script
   does (weight norm removed). Pass ``--reference-repo`` pointing at a checkout of
   facebookresearch/speech-resynthesis to include it; it is imported from there, never vendored.

Run: python benchmarks/generation.py [--reference-repo PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
import types

import torch
from transformers import LogitsProcessorList

from tokunify.core.vocab import UnifiedVocab, units_stream
from tokunify.generate.constraints import ModalityConstraint
from tokunify.model.extend import scratch_model
from tokunify.vocoder import CodeHiFiGAN, CodeHiFiGANConfig, UnitVocoder


def timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decoding(new_tokens: int = 300) -> None:
    vocab = UnifiedVocab(500, (units_stream("units", 100),))
    model = scratch_model("llama-small", vocab).eval()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 500, (16, 24), generator=g)
    prompts[:, -1] = vocab.stream_start("units")

    def run(batch: torch.Tensor, constrained: bool) -> None:
        procs = (
            LogitsProcessorList([ModalityConstraint(vocab, "units", batch.shape[1])])
            if constrained
            else None
        )
        with torch.inference_mode():
            out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, logits_processor=procs, eos_token_id=None, pad_token_id=vocab.pad)  # fmt: skip
        assert out.shape[1] == batch.shape[1] + new_tokens

    rows = []
    for bs in (1, 16):
        b = prompts[:bs]
        run(b, False)
        run(b, True)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(7):  # interleaved, best of 7: drift hits both alike
            for con in (False, True):
                t0 = time.perf_counter()
                run(b, con)
                best[con] = min(best[con], time.perf_counter() - t0)
        rows.append((bs, best[False], best[True]))
    print(
        f"decoding: llama-small (1.9 M + embeddings), {new_tokens} new tokens per sequence, greedy, KV cache; torch threads {torch.get_num_threads()}"
    )
    print()
    print("| batch | unconstrained s | constrained s | overhead | tokens/s (constrained) |")
    print("|---|---|---|---|---|")
    for bs, f, c in rows:
        print(
            f"| {bs} | {f:.2f} | {c:.2f} | {100 * (c / f - 1):+.1f}% | {bs * new_tokens / c:,.0f} |"
        )
    print(
        f"\nbatch 16 vs batch 1 throughput (constrained): {(16 * new_tokens / rows[1][2]) / (new_tokens / rows[0][2]):.1f}x"
    )


def vocoder(reference_repo: str | None, seconds: float = 4.0) -> None:
    cfg = CodeHiFiGANConfig(
        num_embeddings=100
    )  # the published v1 architecture (hubert100_dw1.0), random weights
    torch.manual_seed(0)
    state = CodeHiFiGAN(cfg).state_dict()  # one set of weights for every generator below
    codes = torch.randint(0, 100, (8, int(seconds * 50)))
    runners = {}
    ref = None
    if reference_repo:
        sys.path.insert(0, reference_repo)
        mpl = types.ModuleType("matplotlib")
        mpl.use = lambda *a, **k: None
        sys.modules.setdefault("matplotlib", mpl)
        sys.modules.setdefault("matplotlib.pylab", types.ModuleType("matplotlib.pylab"))
        from models import CodeGenerator
        from utils import AttrDict

        from tokunify.vocoder.codehifigan import _to_theirs

        ref = CodeGenerator(AttrDict(cfg.to_dict()))
        ref.load_state_dict(_to_theirs(state))
        ref.eval().remove_weight_norm()  # as their inference script does

        def run_ref(bs: int) -> torch.Tensor:
            with torch.inference_mode():
                return ref(code=codes[:bs])[:, 0]

        runners["speech-resynthesis"] = run_ref
    variants = {
        "tokunify": {},
        "tokunify compiled": {"compile": True},
        "tokunify bf16": {"dtype": torch.bfloat16},
    }
    for name, kw in variants.items():
        voc = UnitVocoder(load_copy(cfg, state), **kw)
        runners[name] = lambda bs, voc=voc: torch.stack(voc.frames(list(codes[:bs])))
    outs = {name: fn(1)[0] for name, fn in runners.items()}  # also the warm-up (and compilation)
    times: dict[tuple[str, int], float] = {}
    for _ in range(3):  # interleaved, best of 3: the machine's drift hits every generator alike
        for name, fn in runners.items():
            for bs in (1, 8):
                t0 = time.perf_counter()
                fn(bs)
                times[(name, bs)] = min(
                    times.get((name, bs), float("inf")), time.perf_counter() - t0
                )
    print(
        f"\nvocoder: CodeHiFiGAN v1 (upsample 512 ch, rates 5-4-4-2-2, 3 resblocks), {seconds:.0f} s of audio per utterance, CPU, torch threads {torch.get_num_threads()}"
    )
    print()
    print(
        "| generator | batch 1 RTF | batch 8 RTF | speed vs reference, batch 1 | batch 8 | max abs diff vs tokunify fp32 |"
    )
    print("|---|---|---|---|---|---|")
    base = "speech-resynthesis" if ref is not None else "tokunify"
    for name in runners:
        r1, r8 = times[(name, 1)] / seconds, times[(name, 8)] / (8 * seconds)
        diff = (outs[name].float() - outs["tokunify"]).abs().max()
        print(
            f"| {name} | {r1:.4f} | {r8:.4f} | {times[(base, 1)] / times[(name, 1)]:.2f}x | {times[(base, 8)] / times[(name, 8)]:.2f}x | {diff:.1e} |"
        )


def load_copy(cfg: CodeHiFiGANConfig, state: dict) -> CodeHiFiGAN:
    m = CodeHiFiGAN(cfg)
    m.load_state_dict(state)
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo")
    ap.add_argument("--skip-decoding", action="store_true")
    ap.add_argument("--skip-vocoder", action="store_true")
    args = ap.parse_args()
    if not args.skip_decoding:
        decoding()
    if not args.skip_vocoder:
        vocoder(args.reference_repo)


if __name__ == "__main__":
    main()
