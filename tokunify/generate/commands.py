"""`tokunify generate` and `tokunify attach-vocoder`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokunify.data.store import TokenStore
from tokunify.generate.decoding import Decoding
from tokunify.generate.fewshot import examples_from_store, parse_example_files
from tokunify.generate.generator import Generator
from tokunify.model.bundle import attach_vocoder
from tokunify.tasks import FormatError, generation_tasks


@dataclass
class GenerateArgs:
    """Generate by task tag: texts for text-input tasks, wav files for speech-input tasks."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory."""
    task: str
    """Task tag (a registered task that generates, e.g. asr, tts, s2s, continue, text)."""
    input: list[str] = field(default_factory=list)
    """Wav files (speech-input tasks: asr, s2s, continue) or texts (tts, text); @FILE reads one input per line."""
    out: str = "generated"
    """Output directory: results.jsonl and NNNN.wav."""
    device: str = "cpu"
    """Device."""
    batch_size: int = 16
    """Requests per batch."""
    max_new_tokens: int | None = None
    """Override the task preset's length limit."""
    temperature: float | None = None
    """Override the sampling temperature (0: greedy)."""
    greedy: bool = False
    """Greedy decoding for every task."""
    num_beams: int | None = None
    """Beam search width (ASR/text)."""
    seed: int = 0
    """Sampling seed."""
    stream: bool = False
    """Speech-output tasks on unit streams: synthesize chunk by chunk while generating (writes the concatenated chunks)."""
    examples: list[str] = field(default_factory=list)
    """In-context example pairs INPUT=TARGET, each side an audio file (speech) or a .txt file (text), placed in this order before every query."""
    example_store: str | None = None
    """Token store that --example-ids name records of."""
    example_ids: list[str] = field(default_factory=list)
    """In-context examples as record ids of --example-store (the task's input and target of each record), after --examples."""


def run_generate(args: GenerateArgs) -> list[dict]:
    import soundfile as sf
    import torch

    inputs: list[str] = []
    for x in args.input:
        if x.startswith("@"):
            inputs += [
                line.strip() for line in Path(x[1:]).read_text().splitlines() if line.strip()
            ]
        else:
            inputs.append(x)
    if not inputs:
        raise ValueError("generate needs --input (texts, wav files, or @FILE)")
    if args.task not in generation_tasks():
        raise FormatError(f"--task {args.task!r}: generation knows {generation_tasks()}")
    greedy = args.greedy or (
        args.temperature is not None and Decoding(temperature=args.temperature).greedy
    )
    over = {
        k: v
        for k, v in {
            "max_new_tokens": args.max_new_tokens,
            "temperature": None if greedy else args.temperature,
            "num_beams": args.num_beams,
        }.items()
        if v is not None
    }
    if greedy:
        over.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    if args.example_ids and not args.example_store:
        raise ValueError("--example-ids needs --example-store (the store holding those records)")
    examples = parse_example_files(args.examples)
    torch.manual_seed(args.seed)
    gen = Generator(args.bundle, device=args.device)
    if args.example_ids:
        store = TokenStore(args.example_store)
        examples += examples_from_store(gen.task(args.task), store, args.example_ids)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.stream:
        for i, text in enumerate(inputs):
            chunks = list(gen.stream_speech(args.task, text, examples=examples, **over))
            wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            sf.write(out / f"{i:04d}.wav", wav, gen.sample_rate)
            rows.append({"input": text, "wav": f"{i:04d}.wav", "chunks": len(chunks)})
    else:
        for i, (x, r) in enumerate(
            zip(
                inputs,
                gen.generate(
                    args.task, inputs, batch_size=args.batch_size, examples=examples, **over
                ),
                strict=True,
            )
        ):
            row = {"input": x, "text": r.text, "hit_limit": r.hit_limit}
            if r.units is not None:
                row["units"] = r.units.tolist()
            if r.audio is not None:
                sf.write(out / f"{i:04d}.wav", r.audio, r.sample_rate)
                row["wav"] = f"{i:04d}.wav"
            rows.append(row)
            if r.hit_limit:
                print(
                    f"warning: {x!r}: hit max_new_tokens before the end marker; output is partial"
                )
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "units"}))
    return rows


@dataclass
class AttachVocoderArgs:
    """Copy a unit vocoder into a bundle and record it (its unit count must match the stream)."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory."""
    vocoder: str = field(metadata={"positional": True})
    """Vocoder directory: config.json + generator.safetensors (train-vocoder) or a published g_* file."""
    stream: str | None = None
    """Unit stream (default: the bundle's first)."""


def run_attach_vocoder(args: AttachVocoderArgs) -> None:

    entry = attach_vocoder(args.bundle, args.vocoder, args.stream)
    print(f"attached {entry['weights']} to {args.bundle}")
