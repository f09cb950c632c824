"""In-context examples for generation: k (input, target) pairs before the query, for any task.

SpiritLM's few-shot ASR/TTS and Audio Flamingo's in-context learning: the prompt holds k solved
examples of the task, then the query. With the task grammar of :mod:`tokunify.tasks`, an example
is the task's own training sequence without its ``<|bos|> <|task:T|>`` prefix and ``<|eos|>``, so
a 2-shot ASR prompt is::

    <|bos|> <|task:asr|> [units x1] [text y1] [units x2] [text y2] [units query] <|text_start|>

The task object builds each example (``TaskFormat.build``), so the rules stay with the task; this
module only turns what a user gives (files, texts, local ids, store records) into utterances.
Tasks whose examples are not an input segment followed by a target segment (``continue``, ``text``,
``interleave``) take no examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.tasks import FormatError, TaskFormat, Utterance, parse_sequence

Side = str | Path | np.ndarray
"""One side of an example: ``str`` text, ``Path`` an audio file, an integer array local speech ids."""


@dataclass
class Example:
    """One in-context pair. ``input``/``target``: text (``str``), an audio file (``Path``), or the
    stream's local ids (integer ``np.ndarray``), matching the task's input and output modality."""

    input: Side
    target: Side


def side_modality(x: Side) -> str:
    """``"text"`` or ``"speech"``: what one side of an example holds."""
    if isinstance(x, str):
        return "text"
    if isinstance(x, Path):
        return "speech"
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
        return "speech"
    raise FormatError(
        f"an example side is text (str), an audio file (Path) or local ids, got {type(x).__name__}"
    )


def example_utterances(
    fmt: TaskFormat, text: np.ndarray | None, source: np.ndarray | None, target: np.ndarray | None
) -> tuple[Utterance, Utterance | None]:
    """``(utterance, target utterance)`` for ``fmt.build``: text ids and speech ids of one pair.

    Text -> speech and speech -> text pairs are one utterance holding both; speech -> speech pairs
    (s2s) are a source and a target utterance."""
    stream = fmt.stream
    if fmt.input_modality == fmt.output_modality == "speech":
        return Utterance(speech={stream: source}), Utterance(speech={stream: target})
    speech = source if source is not None else target
    return Utterance(text=text, speech={stream: speech} if speech is not None else {}), None


def example_ids(fmt: TaskFormat, utt: Utterance, target: Utterance | None, name: str) -> np.ndarray:
    """The example's segments (global ids): its training sequence without prefix and ``<|eos|>``."""
    v = fmt.vocab
    ids, _ = fmt.build(utt, target)
    body = ids[v.prefix_len : -1]
    segments = parse_sequence(v, body).segments
    if len(segments) != 2:
        raise FormatError(
            f"{name}: task {fmt.task!r} takes no in-context examples (an example must be one input "
            f"and one target segment, it builds {len(segments)})"
        )
    return body


def with_examples(fmt: TaskFormat, prompt: np.ndarray, shots: Sequence[np.ndarray]) -> np.ndarray:
    """The query prompt with the examples' segments after its ``<|bos|> <|task:T|>`` prefix."""
    p = fmt.vocab.prefix_len
    return np.concatenate([prompt[:p], *shots, prompt[p:]]).astype(np.int64)


def check_example(fmt: TaskFormat, ex: Example, name: str) -> None:
    """Refuse a pair whose sides do not match the task's input and output modality."""
    for side, want, value in (
        ("input", fmt.input_modality, ex.input),
        ("target", fmt.output_modality, ex.target),
    ):
        got = side_modality(value)
        if got != want:
            shown = repr(value)[:60]
            raise FormatError(
                f"{name}: task {fmt.task!r} takes {want} as {side}, got {got} ({shown})"
            )


def resolve_examples(
    fmt: TaskFormat,
    examples: Sequence[Example],
    encode_text: Callable[[str], np.ndarray],
    encode_audio: Callable[[list[Path]], list[np.ndarray]],
) -> list[np.ndarray]:
    """Examples -> their segments (global ids), audio files encoded in one batch."""
    for i, ex in enumerate(examples):
        check_example(fmt, ex, f"example {i + 1}")
    files = [x for ex in examples for x in (ex.input, ex.target) if isinstance(x, Path)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"example audio {f}: no such file")
    encoded = dict(zip(files, encode_audio(files), strict=True)) if files else {}

    def speech(x: Side) -> np.ndarray:
        return np.asarray(encoded[x] if isinstance(x, Path) else x, dtype=np.int64)

    out = []
    for i, ex in enumerate(examples):
        name = f"example {i + 1}"
        text = next((encode_text(x) for x in (ex.input, ex.target) if isinstance(x, str)), None)
        if text is not None and len(text) == 0:
            raise FormatError(f"{name}: empty text")
        src = None if isinstance(ex.input, str) else speech(ex.input)
        tgt = None if isinstance(ex.target, str) else speech(ex.target)
        for side, ids in (("input", src), ("target", tgt)):
            if ids is not None and ids.shape[-1] == 0:
                raise FormatError(f"{name}: the {side} speech has no frames")
        utt, target = example_utterances(fmt, text, src, tgt)
        out.append(example_ids(fmt, utt, target, name))
    return out


def examples_from_store(fmt: TaskFormat, store: Any, ids: Sequence[str]) -> list[Example]:
    """Examples from records of a token store: the task's input and target of each record (its
    paired record's for tasks that pair, e.g. s2s). Unknown ids and records the task cannot use
    are refused by name."""
    index = {u: i for i, u in enumerate(store.ids())}

    def lookup(u: str) -> Any:
        return store[index[u]] if u in index else None

    def side(r: Any, modality: str) -> Side:
        if modality == "text":
            if not r.text:
                raise FormatError(f"{store.root}: record {r.id!r} has no text for the example")
            return str(r.text)
        if fmt.stream not in r.streams:
            raise FormatError(f"{store.root}: record {r.id!r} has no stream {fmt.stream!r}")
        return np.asarray(r.streams[fmt.stream], dtype=np.int64)

    out = []
    for u in ids:
        r = lookup(u)
        if r is None:
            raise FormatError(f"{store.root}: no record {u!r} for an example")
        if not fmt.eligible(r):
            raise FormatError(
                f"{store.root}: record {u!r} cannot serve as a {fmt.task} example (needs {fmt.requires})"
            )
        usable, target = fmt.find_pair(r, lookup)
        if not usable:
            raise FormatError(f"{store.root}: record {u!r} has no usable {fmt.task} pair")
        out.append(Example(side(r, fmt.input_modality), side(target or r, fmt.output_modality)))
    return out


def parse_example_files(specs: Sequence[str]) -> list[Example]:
    """``INPUT=TARGET`` specs of files -> examples: an audio file (any format soundfile reads) is
    speech, a ``.txt`` file is text (its stripped contents). One-line errors name the spec."""
    import soundfile as sf

    audio = {"." + k.lower() for k in sf.available_formats()} | {".mp3", ".opus"}

    def side(p: str, spec: str) -> Side:
        path = Path(p)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise FileNotFoundError(f"--examples {spec!r}: no such file {p}")
            text = path.read_text().strip()
            if not text:
                raise FormatError(f"--examples {spec!r}: {p} is empty")
            return text
        if path.suffix.lower() in audio:
            if not path.is_file():
                raise FileNotFoundError(f"--examples {spec!r}: no such file {p}")
            return path
        raise FormatError(f"--examples {spec!r}: {p!r} is neither an audio file nor a .txt file")

    out = []
    for spec in specs:
        a, sep, b = spec.partition("=")
        if not sep or not a or not b:
            raise FormatError(f"--examples {spec!r}: expected INPUT=TARGET (files: audio or .txt)")
        out.append(Example(side(a, spec), side(b, spec)))
    return out
