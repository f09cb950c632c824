"""The unified vocabulary: the single owner of every id range.

Layout of the global id space (``V`` = :attr:`UnifiedVocab.size`, a multiple of ``pad_to_multiple_of``)::

    [0, text_size)                  the base text tokenizer, untouched
    specials                        <|pad|> <|bos|> <|eos|> <|text_start|> <|text_end|> <|empty|>
    stream markers                  <|{stream}_start|> <|{stream}_end|> for every speech stream
    task tags                       <|task:text|> <|task:asr|> ...
    stream ids, stream by stream    units:  <|{stream}:{i}|>          i < K
                                    codec:  <|{stream}:{q}:{c}|>      q < n_q, c < C (codebook-major)
                                    continuous: <|{stream}_frame|>    one placeholder id
    reserved                        <|reserved:{j}|> up to the next multiple of pad_to_multiple_of

Every other module asks this class for ids: no offset literal lives anywhere else. Tokenizers emit
*local* ids (unit ``i``, codebook ``q`` code ``c``); :meth:`UnifiedVocab.to_global` and
:meth:`UnifiedVocab.to_local` map them, vectorised over numpy arrays or torch tensors.

A ``continuous`` stream is speech heard through an encoder and an adapter (SpeechVerse, SALMONN,
Qwen-Audio): its one id, the placeholder ``<|{stream}_frame|>``, stands for one adapter output
frame, whose embedding overwrites the placeholder's row at the LM input
(:mod:`tokunify.model.speech_input`). It is input only: its placeholder and its markers
(:meth:`UnifiedVocab.input_only_ids`) are never generated nor trained on. Task decoding allows only
its target modality, which a task refuses to be a continuous stream; the chat reply grammar
removes :meth:`UnifiedVocab.input_only_mask` from what it allows; :attr:`UnifiedVocab.default_stream`
is never a continuous stream while the vocab has a units or codec one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from tokunify.core.layouts import LAYOUTS

VOCAB_FORMAT = "tokunify.vocab"  # a file-format name, not a module path
VOCAB_VERSION = 1
VOCAB_FILE = "vocab.json"

SPECIALS: tuple[str, ...] = ("pad", "bos", "eos", "text_start", "text_end", "empty")
"""Named special tokens. ``empty`` fills the gaps of the codec ``delay`` layout."""

DEFAULT_TASKS: tuple[str, ...] = ("text", "speech", "asr", "tts", "s2s", "continue", "interleave")

StreamKind = Literal["units", "codec", "continuous"]
STREAM_KINDS: tuple[str, ...] = ("units", "codec", "continuous")
CODEC_LAYOUTS: tuple[str, ...] = tuple(LAYOUTS)
"""The layouts registered at import (validation asks :data:`tokunify.core.layouts.LAYOUTS` itself)."""

# Modality codes in the per-id kind table. Stream i has code STREAM_BASE + i.
TEXT, SPECIAL, MARKER, TASK, RESERVED, STREAM_BASE = 0, 1, 2, 3, 4, 5

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED_NAMES = {"text", "special", "marker", "task", "reserved"}

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class VocabError(ValueError):
    """A vocabulary layout is invalid or does not match a model, tokenizer or store."""


@dataclass(frozen=True)
class StreamSpec:
    """One speech stream: ``units`` (K ids), ``codec`` (``codebooks`` x ``size`` ids) or
    ``continuous`` (one placeholder id; the speech itself is encoder frames, not ids)."""

    name: str
    kind: StreamKind
    size: int
    """Units: number of units K. Codec: codebook size C. Continuous: 1 (the placeholder)."""
    codebooks: int = 1
    """Codec: number of codebooks n_q. Always 1 for units."""
    layout: str = "flatten"
    """Codec: how [n_q, T] codes become one sequence (see :mod:`tokunify.core.layouts`)."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or self.name in _RESERVED_NAMES:
            raise VocabError(
                f"stream name {self.name!r} must match {_NAME_RE.pattern} and not be one of "
                f"{sorted(_RESERVED_NAMES)}"
            )
        if self.kind not in STREAM_KINDS:
            raise VocabError(
                f"stream {self.name!r}: kind must be one of {STREAM_KINDS}, got {self.kind!r}"
            )
        if self.size < 1 or self.codebooks < 1:
            raise VocabError(f"stream {self.name!r}: size and codebooks must be >= 1")
        if self.kind != "codec" and self.codebooks != 1:
            raise VocabError(f"stream {self.name!r}: a {self.kind} stream has exactly one codebook")
        if self.kind == "continuous" and self.size != 1:
            raise VocabError(
                f"stream {self.name!r}: a continuous stream owns exactly one id (size 1), got size {self.size}"
            )
        if self.layout not in LAYOUTS:
            raise VocabError(
                f"stream {self.name!r}: unknown layout {self.layout!r}; registered: {tuple(LAYOUTS)}"
            )

    @property
    def num_ids(self) -> int:
        return self.size * self.codebooks

    @property
    def continuous(self) -> bool:
        """Whether the stream is encoder input (one placeholder id, never generated)."""
        return self.kind == "continuous"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "size": self.size}
        if self.kind == "codec":
            d.update(codebooks=self.codebooks, layout=self.layout)
        return d


def units_stream(name: str, k: int) -> StreamSpec:
    return StreamSpec(name=name, kind="units", size=k)


def continuous_stream(name: str) -> StreamSpec:
    """A continuous (encoder-input) stream: one placeholder id ``<|{name}_frame|>``."""
    return StreamSpec(name=name, kind="continuous", size=1)


def codec_stream(
    name: str, codebooks: int, codebook_size: int, layout: str = "flatten"
) -> StreamSpec:
    return StreamSpec(
        name=name, kind="codec", size=codebook_size, codebooks=codebooks, layout=layout
    )


@dataclass(frozen=True)
class UnifiedVocab:
    """The id layout of one unified speech-text model. Immutable; derive ids, never store them."""

    text_size: int
    """Size of the base text vocabulary (``len(tokenizer)`` of the base text tokenizer)."""
    streams: tuple[StreamSpec, ...] = ()
    tasks: tuple[str, ...] = DEFAULT_TASKS
    pad_to_multiple_of: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.text_size < 1:
            raise VocabError(f"text_size must be >= 1, got {self.text_size}")
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise VocabError(f"duplicate stream names: {names}")
        if len(set(self.tasks)) != len(self.tasks):
            raise VocabError(f"duplicate task tags: {self.tasks}")
        for t in self.tasks:
            if not _NAME_RE.match(t):
                raise VocabError(f"task tag {t!r} must match {_NAME_RE.pattern}")
        if self.pad_to_multiple_of < 1:
            raise VocabError("pad_to_multiple_of must be >= 1")

    # ---- ranges ---------------------------------------------------------------------------
    @cached_property
    def _offsets(self) -> dict[str, int]:
        off = self.text_size
        out = {"special": off}
        off += len(SPECIALS)
        out["marker"] = off
        off += 2 * len(self.streams)
        out["task"] = off
        off += len(self.tasks)
        for s in self.streams:
            out["stream:" + s.name] = off
            off += s.num_ids
        out["reserved"] = off
        return out

    @property
    def num_used(self) -> int:
        """Ids that carry a meaning (everything but the reserved padding rows)."""
        return self._offsets["reserved"]

    @property
    def size(self) -> int:
        """Total vocabulary size, padded to ``pad_to_multiple_of``: embedding rows of the model."""
        m = self.pad_to_multiple_of
        return -(-self.num_used // m) * m

    @property
    def num_new(self) -> int:
        """Ids added on top of the base text vocabulary."""
        return self.size - self.text_size

    def stream(self, name: str) -> StreamSpec:
        for s in self.streams:
            if s.name == name:
                return s
        raise VocabError(
            f"unknown stream {name!r}; this vocab has {[s.name for s in self.streams]}"
        )

    @property
    def default_stream(self) -> str:
        """The first stream generation can emit (units or codec); a vocab whose streams are all
        continuous gives its first."""
        if not self.streams:
            raise VocabError("this vocab has no speech stream")
        return next((s.name for s in self.streams if not s.continuous), self.streams[0].name)

    def placeholder(self, name: str) -> int:
        """The one id of a continuous stream, ``<|{name}_frame|>``: one adapter frame."""
        s = self.stream(name)
        if not s.continuous:
            raise VocabError(
                f"stream {name!r} is a {s.kind} stream; only continuous streams have a placeholder"
            )
        return self.stream_range(name)[0]

    def placeholder_ids(self) -> list[int]:
        """The placeholder of every continuous stream, in stream order."""
        return [self.placeholder(s.name) for s in self.streams if s.continuous]

    def stream_range(self, name: str) -> tuple[int, int]:
        """``[start, stop)`` of all global ids of a stream."""
        start = self._offsets["stream:" + self.stream(name).name]
        return start, start + self.stream(name).num_ids

    def codebook_range(self, name: str, q: int) -> tuple[int, int]:
        s = self.stream(name)
        if not 0 <= q < s.codebooks:
            raise VocabError(f"stream {name!r} has {s.codebooks} codebooks, asked for codebook {q}")
        start = self.stream_range(name)[0] + q * s.size
        return start, start + s.size

    # ---- named ids --------------------------------------------------------------------------
    def special(self, name: str) -> int:
        if name not in SPECIALS:
            raise VocabError(f"unknown special token {name!r}; known: {SPECIALS}")
        return self._offsets["special"] + SPECIALS.index(name)

    @property
    def pad(self) -> int:
        return self.special("pad")

    @property
    def bos(self) -> int:
        return self.special("bos")

    @property
    def eos(self) -> int:
        return self.special("eos")

    @property
    def text_start(self) -> int:
        return self.special("text_start")

    @property
    def text_end(self) -> int:
        return self.special("text_end")

    @property
    def empty(self) -> int:
        return self.special("empty")

    def stream_start(self, name: str | None = None) -> int:
        """Start-of-speech marker of a stream (the first stream by default)."""
        i = self._stream_index(name)
        return self._offsets["marker"] + 2 * i

    def stream_end(self, name: str | None = None) -> int:
        """End-of-speech marker of a stream (the first stream by default)."""
        return self.stream_start(name) + 1

    def task(self, name: str) -> int:
        """Id of a task tag. Unknown tags raise with the list of known ones."""
        if name not in self.tasks:
            raise VocabError(f"unknown task tag {name!r}; this vocab knows {list(self.tasks)}")
        return self._offsets["task"] + self.tasks.index(name)

    def task_name(self, task_id: int) -> str:
        """The task tag of a task id (inverse of :meth:`task`). Other ids raise."""
        i = int(task_id) - self._offsets["task"]
        if not 0 <= i < len(self.tasks):
            raise VocabError(f"id {int(task_id)} is not a task tag of this vocab")
        return self.tasks[i]

    def prefix(self, task: str) -> np.ndarray:
        """``[2]`` int64: the head every sequence of a task starts with, ``<|bos|> <|task:T|>``."""
        return np.array([self.bos, self.task(task)], dtype=np.int64)

    @property
    def prefix_len(self) -> int:
        """Length of :meth:`prefix` (the same for every task)."""
        return 2  # <|bos|>, <|task:T|>

    def _stream_index(self, name: str | None) -> int:
        name = self.default_stream if name is None else name
        for i, s in enumerate(self.streams):
            if s.name == name:
                return i
        raise VocabError(
            f"unknown stream {name!r}; this vocab has {[s.name for s in self.streams]}"
        )

    # ---- per-id tables and masks ---------------------------------------------------------
    @cached_property
    def kind_table(self) -> np.ndarray:
        """``[V]`` int16: the modality code of every id (TEXT, SPECIAL, ..., STREAM_BASE + i)."""
        o = self._offsets
        t = np.full(self.size, RESERVED, dtype=np.int16)
        t[: self.text_size] = TEXT
        t[o["special"] : o["marker"]] = SPECIAL
        t[o["marker"] : o["task"]] = MARKER
        t[o["task"] : o["task"] + len(self.tasks)] = TASK
        for i, s in enumerate(self.streams):
            a, b = self.stream_range(s.name)
            t[a:b] = STREAM_BASE + i
        t.setflags(write=False)
        return t

    @cached_property
    def codebook_table(self) -> np.ndarray:
        """``[V]`` int16: the codebook index of every stream id, -1 elsewhere."""
        t = np.full(self.size, -1, dtype=np.int16)
        for s in self.streams:
            a, b = self.stream_range(s.name)
            t[a:b] = np.arange(s.num_ids) // s.size
        t.setflags(write=False)
        return t

    def modality_code(self, modality: str) -> int:
        fixed = {
            "text": TEXT,
            "special": SPECIAL,
            "marker": MARKER,
            "task": TASK,
            "reserved": RESERVED,
        }
        if modality in fixed:
            return fixed[modality]
        return STREAM_BASE + self._stream_index(modality)

    def mask(self, *modalities: str, device: torch.device | str | None = None) -> torch.Tensor:
        """``[V]`` bool: True for ids of any of the given modalities.

        Modalities: ``text``, ``special``, ``marker``, ``task``, ``reserved`` or a stream name.
        """
        codes = np.array([self.modality_code(m) for m in modalities], dtype=np.int16)
        return torch.from_numpy(np.isin(self.kind_table, codes)).to(device)

    def codebook_mask(
        self, name: str, q: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``[V]`` bool: True for the ids of codebook ``q`` of stream ``name``."""
        a, b = self.codebook_range(name, q)
        m = torch.zeros(self.size, dtype=torch.bool, device=device)
        m[a:b] = True
        return m

    def input_only_ids(self) -> list[int]:
        """Ids generation must never emit: every continuous stream's placeholder and its two
        markers (the stream is encoder input only)."""
        out: list[int] = []
        for s in self.streams:
            if s.continuous:
                out += [
                    self.stream_start(s.name),
                    self.stream_end(s.name),
                    self.placeholder(s.name),
                ]
        return sorted(out)

    def input_only_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[V]`` bool: True for :meth:`input_only_ids`. Generation masks are ``& ~`` this."""
        return self.ids_mask(self.input_only_ids(), device)

    def ids_mask(self, ids: list[int], device: torch.device | str | None = None) -> torch.Tensor:
        m = torch.zeros(self.size, dtype=torch.bool, device=device)
        m[torch.as_tensor(ids, dtype=torch.long, device=device)] = True
        return m

    def modality_of(self, ids: Array) -> Array:
        """Modality code of every id (vectorised table lookup)."""
        self._check_global(ids)
        if isinstance(ids, torch.Tensor):
            return torch.as_tensor(self.kind_table.copy(), device=ids.device)[ids.long()]
        return self.kind_table[np.asarray(ids, dtype=np.int64)]

    # ---- local <-> global -------------------------------------------------------------------
    def to_global(self, name: str, local: Array) -> Array:
        """Local stream ids to global ids.

        Units: ``[..., T]`` -> ``[..., T]``. Codec: ``[n, T]`` codes of codebooks ``0..n-1``
        (``n <= n_q``) -> ``[n, T]`` global ids. Continuous: local 0 (its one id) -> the
        placeholder. Out-of-range codes raise.
        """
        s = self.stream(name)
        x = _as_int64(local)
        if x.numel() if isinstance(x, torch.Tensor) else x.size:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= s.size:
                raise VocabError(
                    f"stream {name!r}: local ids must lie in [0, {s.size}), got range [{lo}, {hi}]"
                )
        start = self.stream_range(name)[0]
        if s.kind != "codec":
            return x + start
        n = _check_codec_rows(s, x)
        return x + _like(x, start + s.size * np.arange(n))[:, None]

    def to_local(self, name: str, ids: Array) -> Array:
        """Global ids back to local stream ids (inverse of :meth:`to_global`). Foreign ids raise."""
        s = self.stream(name)
        x = _as_int64(ids)
        if s.kind != "codec":
            a, b = self.stream_range(name)
            _check_in_range(x, a, b, f"stream {name!r}")
            return x - a
        n = _check_codec_rows(s, x)
        starts = _like(x, self.stream_range(name)[0] + s.size * np.arange(n))[:, None]
        if x.numel() if isinstance(x, torch.Tensor) else x.size:
            local = x - starts
            bad = (local < 0) | (local >= s.size)
            if bool(bad.any()):
                raise VocabError(
                    f"stream {name!r}: row q of a [n_q, T] codec array must hold codebook q ids; "
                    f"{int(bad.sum())} ids are foreign"
                )
            return local
        return x

    def _check_global(self, ids: Array) -> None:
        _check_in_range(_as_int64(ids), 0, self.size, "global ids")

    # ---- token strings ----------------------------------------------------------------------
    def token_strings(self) -> list[str]:
        """Strings of every id in ``[text_size, size)``, in id order, for the HF tokenizer."""
        out = [f"<|{n}|>" for n in SPECIALS]
        for s in self.streams:
            out += [f"<|{s.name}_start|>", f"<|{s.name}_end|>"]
        out += [f"<|task:{t}|>" for t in self.tasks]
        for s in self.streams:
            if s.kind == "units":
                out += [f"<|{s.name}:{i}|>" for i in range(s.size)]
            elif s.continuous:
                out.append(f"<|{s.name}_frame|>")
            else:
                out += [f"<|{s.name}:{q}:{c}|>" for q in range(s.codebooks) for c in range(s.size)]
        out += [f"<|reserved:{j}|>" for j in range(self.size - self.num_used)]
        return out

    def special_token_strings(self) -> list[str]:
        """The structural tokens (specials, markers, tasks, reserved): hidden by ``skip_special_tokens``."""
        strings = self.token_strings()
        kinds = self.kind_table[self.text_size :]
        return [
            s for s, k in zip(strings, kinds, strict=True) if k in (SPECIAL, MARKER, TASK, RESERVED)
        ]

    # ---- checks against models and tokenizers ------------------------------------------
    def check_tokenizer(self, tokenizer: Any, source: str = "tokenizer") -> None:
        """Raise :class:`VocabError` unless ``tokenizer`` maps every token string to this layout."""
        n = len(tokenizer)
        if n != self.size:
            raise VocabError(
                f"{source}: tokenizer has {n} tokens but vocab.json expects {self.size} "
                f"(text {self.text_size} + {self.num_new} new); layout and tokenizer do not match"
            )
        found = tokenizer.convert_tokens_to_ids(self.token_strings())
        got = np.asarray([-1 if i is None else i for i in found], dtype=np.int64)
        want = np.arange(self.text_size, self.size)
        if not np.array_equal(got, want):
            i = int(np.flatnonzero(got != want)[0])
            raise VocabError(
                f"{source}: token {self.token_strings()[i]!r} has id {got[i]} in the tokenizer "
                f"but {want[i]} in vocab.json; layout and tokenizer do not match"
            )

    def check_model_config(self, config: Any, source: str = "model") -> None:
        """Raise :class:`VocabError` unless the model's embedding size equals :attr:`size`."""
        n = getattr(config, "vocab_size", None)
        if n != self.size:
            raise VocabError(
                f"{source}: model config has vocab_size={n} but vocab.json expects {self.size}; "
                "layout and model do not match"
            )

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "text_size": self.text_size,
            "specials": list(SPECIALS),
            "tasks": list(self.tasks),
            "streams": [s.to_dict() for s in self.streams],
            "pad_to_multiple_of": self.pad_to_multiple_of,
            # Derived, stored for humans and for consistency checks on load.
            "size": self.size,
            "ranges": dict(self._offsets),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "vocab.json") -> UnifiedVocab:
        if d.get("format") != VOCAB_FORMAT:
            raise VocabError(f"{source}: not a tokunify vocab (format={d.get('format')!r})")
        if d.get("version") != VOCAB_VERSION:
            raise VocabError(
                f"{source}: vocab version {d.get('version')!r} is not supported (expected {VOCAB_VERSION})"
            )
        if list(d.get("specials", SPECIALS)) != list(SPECIALS):
            raise VocabError(
                f"{source}: special tokens {d.get('specials')} differ from {list(SPECIALS)}"
            )
        try:
            v = cls(
                text_size=int(d["text_size"]),
                streams=tuple(StreamSpec(**s) for s in d.get("streams", [])),
                tasks=tuple(d.get("tasks", DEFAULT_TASKS)),
                pad_to_multiple_of=int(d.get("pad_to_multiple_of", 64)),
            )
        except (KeyError, TypeError) as e:
            raise VocabError(f"{source}: malformed vocab: {e}") from e
        if "size" in d and d["size"] != v.size:
            raise VocabError(
                f"{source}: stored size {d['size']} disagrees with the layout ({v.size})"
            )
        return v

    @classmethod
    def from_json(cls, text: str, source: str = "vocab.json") -> UnifiedVocab:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise VocabError(f"{source}: not valid JSON: {e}") from e
        return cls.from_dict(d, source)

    def save(self, path: str | Path) -> Path:
        """Write ``vocab.json`` (``path`` may be a directory or a file path)."""
        p = Path(path)
        if p.is_dir():
            p = p / VOCAB_FILE
        p.write_text(self.to_json() + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> UnifiedVocab:
        p = Path(path)
        if p.is_dir():
            p = p / VOCAB_FILE
        if not p.exists():
            raise VocabError(
                f"{p}: missing; this directory is not a tokunify bundle (no vocab.json)"
            )
        return cls.from_json(p.read_text(), source=str(p))


# ---- small array helpers (numpy and torch alike) --------------------------------------------
def _as_int64(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.long()
    return np.asarray(x, dtype=np.int64)


def _like(x: Any, values: np.ndarray) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(values, dtype=torch.long, device=x.device)
    return values.astype(np.int64)


def _check_in_range(x: Any, lo: int, hi: int, what: str) -> None:
    if (x.numel() if isinstance(x, torch.Tensor) else x.size) == 0:
        return
    a, b = int(x.min()), int(x.max())
    if a < lo or b >= hi:
        raise VocabError(f"{what}: ids must lie in [{lo}, {hi}), got range [{a}, {b}]")


def _check_codec_rows(s: StreamSpec, x: Any) -> int:
    if x.ndim != 2:
        raise VocabError(
            f"stream {s.name!r}: codec ids must be [n_q, T], got shape {tuple(x.shape)}"
        )
    n = int(x.shape[0])
    if not 1 <= n <= s.codebooks:
        raise VocabError(f"stream {s.name!r}: got {n} codebooks, the stream has {s.codebooks}")
    return n


__all__ = [
    "CODEC_LAYOUTS",
    "DEFAULT_TASKS",
    "SPECIALS",
    "STREAM_KINDS",
    "VOCAB_FILE",
    "StreamSpec",
    "UnifiedVocab",
    "VocabError",
    "codec_stream",
    "continuous_stream",
    "units_stream",
]
