"""`tokunify eval`: ASR WER/CER, TTS round-trip WER, unit resynthesis error and S2S, on a held-out store.

Each task names its metric (:attr:`tokunify.tasks.TaskFormat.metric`, a key of :data:`METRICS`),
which records it evaluates and their reference text; results are ``{task}_{field}``. ``resynth``
is not a task: it checks the vocoder and the speech tokenizer.

Text normaliser (applied to references and hypotheses before WER/CER): Whisper's
``BasicTextNormalizer`` as transformers ships it (lower case, punctuation and symbols to spaces,
any script kept, so non-English references never become empty), then runs of spaces collapse.

- ``asr_wer``/``asr_cer``: the bundle's ASR on the store's units against the transcripts.
- ``tts_roundtrip_wer``: TTS of the transcript -> vocoder -> re-tokenize with the bundle's speech
  tokenizer -> the bundle's own ASR, against the transcript.
- ``resynth_unit_error``: the store's units and durations -> vocoder -> re-tokenize; edit distance
  of the deduplicated sequences over the reference length. ``resynth_frame_error``: the share of
  frames whose unit differs (frame-aligned, length difference counted as errors).
- ``s2s_exact_match``/``s2s_wer``: for pairs (``--pair-key``, default ``s2s_target``, in the manifest),
  speech in -> speech out -> re-tokenize -> ASR, against the target utterance's transcript (exact
  match after normalising).
- ``tts_external_wer`` (with ``--asr-model``): the same vocoded TTS audio transcribed by an
  independent transformers ASR model. The round-trip WER is circular (the model's own ASR scores the
  model's own TTS); the external one is not.
- ``continue_*`` (task ``continue``): speech continuations of the first half of each utterance;
  ``continue_genppl`` (transcripts, by the model's ASR or ``--asr-model``, scored by ``--text-lm``),
  ``continue_auto_bleu`` (share of a transcript's word bigrams that occur elsewhere in it) and
  ``continue_unit_ttr`` (distinct units / units of the continuation).

Stores are checked like training checks them: the same speech and text tokenizer hashes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.core.textnorm import normalize
from tokunify.data.audio import resample
from tokunify.data.store import Record, TokenStore
from tokunify.generate.generator import Generator
from tokunify.tasks import (
    DEFAULT_PAIR_KEY,
    FORMATS,
    FormatError,
    TaskOptions,
    find_task,
    make_task,
)
from tokunify.train.data import check_compatible

RESYNTH = "resynth"
"""The evaluation of the vocoder round trip (not a task)."""


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True) if normalize(r)]
    if not pairs:
        return float("nan")
    return float(jiwer.wer([r for r, _ in pairs], [h if h else "<empty>" for _, h in pairs]))


def cer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True) if normalize(r)]
    if not pairs:
        return float("nan")
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def unit_edit_error(refs: list[np.ndarray], hyps: list[np.ndarray]) -> float:
    """Total edit distance of unit sequences over total reference length (jiwer on unit "words")."""
    import jiwer

    r = [" ".join(f"u{int(u)}" for u in x) for x in refs]
    h = [" ".join(f"u{int(u)}" for u in x) or "<empty>" for x in hyps]
    return float(jiwer.wer(r, h))


def frame_error(ref: list[np.ndarray], hyp: list[np.ndarray]) -> float:
    errors = total = 0
    for a, b in zip(ref, hyp, strict=True):
        n = min(len(a), len(b))
        errors += int((a[:n] != b[:n]).sum()) + abs(len(a) - len(b))
        total += len(a)
    return errors / max(total, 1)


@dataclass
class EvalArgs:
    """Evaluate a bundle on held-out token stores; writes eval.json and eval.md."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory (with a speech tokenizer and a vocoder recorded)."""
    store: list[str] = field(default_factory=list)
    """Held-out stores (one result block per store)."""
    out: str = "eval"
    """Output directory."""
    max_utts: int = 100
    """Utterances per store and task."""
    tasks: list[str] = field(default_factory=lambda: default_eval_tasks())
    """Which evaluations to run: tasks with a metric and resynth (default: all but continue)."""
    batch_size: int = 16
    """Generation batch size."""
    device: str = "cpu"
    """Device."""
    seed: int = 0
    """Sampling seed (TTS and S2S sample)."""
    pair_key: str = DEFAULT_PAIR_KEY
    """Manifest field naming the target utterance of a pair (s2s), as the training's data.s2s_key."""
    asr_model: str = ""
    """An independent transformers ASR model (hub id or local dir: Whisper, wav2vec2-CTC) for the TTS
    output and continuations; its WER is reported beside the circular round-trip WER."""
    text_lm: str = ""
    """A causal text LM (hub id or local dir) that scores continuation transcripts (GenPPL)."""


def metric_tasks() -> list[str]:
    """Registered tasks that name a metric."""
    return [t for t, c in FORMATS.items() if c.metric is not None]


def default_eval_tasks() -> list[str]:
    """What `eval` runs without --tasks: the tasks whose metric is cheap enough for every run, and
    resynth (continuation metrics generate long samples: ask for them by name)."""
    return [t for t in metric_tasks() if FORMATS[t].eval_by_default] + [RESYNTH]


# ---- tokenizer identity, independent ASR, generative metrics ------------------------------------
def check_store_tokenizers(store: TokenStore, gen: Any) -> None:
    """Refuse a store made by other tokenizers than the bundle's (hashes, not only sizes): the
    rule training applies (``train.data.check_compatible``), asked of the same owner."""

    b = gen.bundle
    check_compatible([store], gen.vocab, b.tokenizer, b.spec, gen.stream)


@dataclass
class ExternalModels:
    """Models that are not the bundle: an ASR pipeline and a causal text LM (both optional)."""

    asr: Any = None  # transformers AutomaticSpeechRecognitionPipeline
    text_lm: Any = None  # (model, tokenizer)
    device: str = "cpu"

    @classmethod
    def load(cls, asr_model: str, text_lm: str, device: str = "cpu") -> ExternalModels:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

        asr = None
        if asr_model:
            asr = pipeline(
                "automatic-speech-recognition", model=asr_model, device=torch.device(device)
            )
        lm = None
        if text_lm:
            lm = (
                AutoModelForCausalLM.from_pretrained(text_lm).to(device).eval(),
                AutoTokenizer.from_pretrained(text_lm),
            )
        return cls(asr, lm, device)


def transcribe(
    pipe: Any, wavs: list[np.ndarray], sample_rate: int, batch_size: int = 8
) -> list[str]:
    """Waveforms -> text with a transformers ASR pipeline. Audio is resampled here with soxr to the
    model's rate (the pipeline's own resampling needs torchaudio)."""

    sr = pipe.feature_extractor.sampling_rate
    inputs = [
        {"raw": resample(np.asarray(w, np.float32), sample_rate, sr) if len(w) else np.zeros(sr // 10, np.float32),
         "sampling_rate": sr}
        for w in wavs
    ]  # fmt: skip
    return [o["text"] for o in pipe(inputs, batch_size=batch_size)]


def external_asr_metrics(
    pipe: Any, wavs: list[np.ndarray], sample_rate: int, refs: list[str], batch_size: int = 8
) -> dict[str, Any]:
    hyps = transcribe(pipe, wavs, sample_rate, batch_size)
    return {
        "external_wer": wer(refs, hyps),
        "external_asr": getattr(pipe.model, "name_or_path", ""),
        "external_examples": [
            {"ref": r, "hyp": h} for r, h in zip(refs[:3], hyps[:3], strict=False)
        ],
    }


def auto_bleu(words: list[str], n: int = 2) -> float:
    """Share of the n-grams of ``words`` that occur elsewhere in the same sequence (GSLM's
    auto-BLEU, a repetition rate: 0 = no n-gram repeats). NaN when there is no n-gram."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return float("nan")
    counts: dict[tuple[str, ...], int] = {}
    for gram in grams:
        counts[gram] = counts.get(gram, 0) + 1
    return sum(counts[gram] > 1 for gram in grams) / len(grams)


def unit_ttr(units: np.ndarray) -> float:
    """Distinct units over units (type/token ratio of a generated unit sequence)."""
    units = np.asarray(units).reshape(-1)
    return float(len(np.unique(units)) / len(units)) if len(units) else float("nan")


def text_perplexity(model: Any, tokenizer: Any, texts: list[str], device: str = "cpu") -> float:
    """Corpus perplexity of ``texts`` under a causal LM: exp(total NLL / predicted tokens)."""
    import torch

    nll, n = 0.0, 0
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for t in texts:
            ids = tokenizer(t, add_special_tokens=False)["input_ids"]
            if not ids:
                continue
            x = torch.tensor([[bos, *ids]], device=device)
            logits = model(input_ids=x).logits[0, :-1].float()  # [T, V]
            nll += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            n += len(ids)
    return float(np.exp(nll / n)) if n else float("nan")


@dataclass
class MetricContext:
    """What a metric may use beside the generated results: re-tokenizing and transcribing speech,
    and the models that are not the bundle."""

    gen: Any
    retokenize: Callable[[list[np.ndarray]], tuple[list[np.ndarray], list[np.ndarray]]]
    transcribe: Callable[[list[np.ndarray]], list[str]]
    external: ExternalModels = field(default_factory=ExternalModels)
    batch_size: int = 16


Metric = Callable[[MetricContext, list[str], list[Any], list[Any]], dict[str, Any]]
"""(context, reference texts, generated results, generation requests) -> result fields."""


def text_wer(
    ctx: MetricContext, refs: list[str], results: list[Any], requests: list[Any]
) -> dict[str, Any]:
    """Generated text against the references: WER, CER and the first examples."""
    hyps = [r.text or "" for r in results]
    return {
        "wer": wer(refs, hyps),
        "cer": cer(refs, hyps),
        "examples": [{"ref": r, "hyp": h} for r, h in zip(refs[:5], hyps[:5], strict=False)],
    }


def speech_roundtrip(
    ctx: MetricContext, refs: list[str], results: list[Any], requests: list[Any]
) -> dict[str, Any]:
    """Generated speech -> vocoder -> re-tokenize -> the bundle's own speech-to-text task, against
    the references (WER, and exact match after normalising). With an external ASR model, the same
    audio is also transcribed by it (``external_wer``: not circular)."""
    sr = ctx.gen.sample_rate
    wavs = [r.audio if r.audio is not None else np.zeros(1600, np.float32) for r in results]
    re_units, _ = ctx.retokenize(wavs)
    hyps = ctx.transcribe(re_units)
    exact = [normalize(h) == normalize(r) for r, h in zip(refs, hyps, strict=True)]
    out = {
        "roundtrip_wer": wer(refs, hyps),
        "exact_match": float(np.mean(exact)),
        "hit_limit": float(np.mean([r.hit_limit for r in results])),
        "seconds_per_utt": float(np.mean([len(w) / sr for w in wavs])),
        "n": len(results),
    }
    if ctx.external.asr is not None:
        out.update(external_asr_metrics(ctx.external.asr, wavs, sr, refs, ctx.batch_size))
    return out


def continuation(
    ctx: MetricContext, refs: list[str], results: list[Any], requests: list[Any]
) -> dict[str, Any]:
    """Speech continuations of the prompts (``requests``): transcribed (external ASR on the vocoded
    audio when given, else the model's own ASR on the units), then GenPPL (with a text LM),
    auto-BLEU and the unit type/token ratio of what the model added."""
    gen = ctx.gen
    # the parsed segment starts with the prompt: keep what the model added
    conts = [
        r.units[..., p.shape[-1] :] if r.units is not None else p[..., :0]
        for r, p in zip(results, requests, strict=True)
    ]
    if ctx.external.asr is not None:
        ok = [i for i, c in enumerate(conts) if c.shape[-1]]  # an empty continuation says ""
        heard = (
            transcribe(
                ctx.external.asr, gen.decode([conts[i] for i in ok]), gen.sample_rate,
                ctx.batch_size,
            )
            if ok
            else []
        )  # fmt: skip
        texts = [""] * len(conts)
        for i, t in zip(ok, heard, strict=True):
            texts[i] = t
    else:
        texts = ctx.transcribe(conts)
    texts = [normalize(t) for t in texts]
    out: dict[str, Any] = {
        "auto_bleu": float(np.nanmean([auto_bleu(t.split()) for t in texts] or [np.nan])),
        "unit_ttr": float(np.nanmean([unit_ttr(c) for c in conts] or [np.nan])),
        "transcriber": "external" if ctx.external.asr is not None else "model",
        "examples": texts[:3],
    }
    if ctx.external.text_lm is not None:
        out["genppl"] = text_perplexity(*ctx.external.text_lm, texts, ctx.external.device)
    return out


METRICS: dict[str, Metric] = {
    "text_wer": text_wer,
    "speech_roundtrip": speech_roundtrip,
    "continuation": continuation,
}
"""Metric name (as tasks name it) -> function of the generated results and reference texts."""


def evaluate_store(
    gen: Any,
    store: TokenStore,
    max_utts: int,
    tasks: list[str],
    batch_size: int = 16,
    pair_key: str = DEFAULT_PAIR_KEY,
    external: ExternalModels | None = None,
) -> dict[str, Any]:
    import torch

    known = [*metric_tasks(), RESYNTH]
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise FormatError(f"eval --tasks: {unknown} have no metric; known: {known}")

    stream = gen.stream
    recs: list[Record] = []
    by_id: dict[str, Record] = {}
    for i in range(len(store)):
        r = store[i]
        by_id[r.id] = r
        if stream in r.streams and r.text and len(recs) < max_utts:
            recs.append(r)
    units = [r.streams[stream].astype(np.int64) for r in recs]
    out: dict[str, Any] = {"n_utts": len(recs)}
    t0 = time.perf_counter()

    def retokenize(wavs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        tok = gen.speech_tokenizer
        ok = [
            w
            if len(w) >= tok.min_samples * gen.sample_rate / tok.sample_rate + 1
            else np.zeros(int(gen.sample_rate * 0.1), np.float32)
            for w in wavs
        ]
        res = tok.encode(ok, sample_rate=gen.sample_rate)
        dur = res.durations or [torch.ones_like(x) for x in res.ids]
        return [x.numpy() for x in res.ids], [d.numpy() for d in dur]

    def own_asr(unit_lists: list[np.ndarray]) -> list[str]:
        task = find_task("speech", "text", gen.vocab)
        return [r.text or "" for r in gen.generate(task, unit_lists, batch_size=batch_size)]

    if (
        RESYNTH in tasks and recs
    ):  # first: it draws from the global RNG, as it always did before TTS
        durs = [r.durations.get(stream, np.ones_like(u)) for r, u in zip(recs, units, strict=True)]
        wavs = gen.decode(units, durs)
        re_units, re_durs = retokenize(wavs)
        out["resynth_unit_error"] = unit_edit_error(units, re_units)
        out["resynth_frame_error"] = frame_error(
            [np.repeat(u, d) for u, d in zip(units, durs, strict=True)],
            [np.repeat(u, d) for u, d in zip(re_units, re_durs, strict=True)],
        )
    ctx = MetricContext(gen, retokenize, own_asr, external or ExternalModels(), batch_size)
    options = TaskOptions(stream=stream, pair_key=pair_key)
    for name in tasks:
        if name == RESYNTH:
            continue
        fmt = make_task(name, gen.vocab, options)
        items = []
        for r in recs:
            usable, target = fmt.find_pair(r, by_id.get) if fmt.eligible(r) else (False, None)
            if usable:
                items.append((r, target))
        if not items:
            continue
        requests = [fmt.request(r) for r, _ in items]
        res = gen.generate(name, requests, batch_size=batch_size)
        refs = [fmt.reference_text(r, t) for r, t in items]
        scores = METRICS[fmt.metric](ctx, refs, res, requests)
        out.update({f"{name}_{fmt.metric_keys.get(k, k)}": v for k, v in scores.items()})
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(results: dict[str, dict[str, Any]]) -> str:
    keys = [
        "n_utts",
        "asr_wer",
        "asr_cer",
        "tts_roundtrip_wer",
        "resynth_unit_error",
        "resynth_frame_error",
        "s2s_exact_match",
        "s2s_wer",
        "tts_external_wer",
        "continue_genppl",
        "continue_auto_bleu",
        "continue_unit_ttr",
    ]
    cols = [k for k in keys if any(k in r for r in results.values())]
    lines = ["| store | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in results.items():
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_eval(args: EvalArgs) -> dict[str, Any]:
    import torch

    if not args.store:
        raise ValueError("eval needs at least one --store")
    torch.manual_seed(args.seed)
    gen = Generator(args.bundle, device=args.device)
    external = ExternalModels.load(args.asr_model, args.text_lm, args.device)
    results = {}
    for s in args.store:
        store = TokenStore(s)
        store.check_streams(
            {
                gen.stream: (
                    "units" if gen.vocab.stream(gen.stream).kind == "units" else "codec",
                    gen.vocab.stream(gen.stream).size,
                    gen.vocab.stream(gen.stream).codebooks,
                )
            }
        )
        check_store_tokenizers(store, gen)
        results[Path(s).name] = evaluate_store(
            gen, store, args.max_utts, list(args.tasks), args.batch_size, args.pair_key, external
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "eval.md").write_text(table)
    print(table)
    return results
