"""``tokunify info``: a bundle's vocabulary layout and spec, without its weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokunify.model.bundle import load


@dataclass
class InfoArgs:
    """Print the vocabulary layout and the spec of a bundle (reads no weights)."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory."""


def run_info(args: InfoArgs) -> None:
    b = load(args.bundle, with_model=False)
    v = b.vocab
    print(f"bundle {b.path}")
    print(f"  base: {b.spec.base}   text tokenizer: {b.spec.text_tokenizer}")
    print(
        f"  vocab: {v.size} ids = text {v.text_size} + {v.num_new} new (padded to {v.pad_to_multiple_of})"
    )
    print(f"  tasks: {', '.join(v.tasks)}")
    for s in v.streams:
        a, z = v.stream_range(s.name)
        extra = (
            f", {s.codebooks} x {s.size}, layout {s.layout}"
            if s.kind == "codec"
            else f", K={s.size}"
        )
        tok = "yes" if s.name in b.spec.speech_tokenizers else "no"
        print(
            f"  stream {s.name}: {s.kind}{extra}, ids [{a}, {z}), speech tokenizer recorded: {tok}"
        )
