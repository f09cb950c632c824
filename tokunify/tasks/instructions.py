"""Natural-language instruction pools, and tasks rendered as instruction-following chat turns.

An :class:`InstructionPool` holds, per task, paraphrased instructions split into ``train``,
``dev`` and ``heldout`` phrasings (the package's ``instructions.yaml``, or a user YAML of the same
shape; ``dev`` is optional)::

    asr:
      train: [Transcribe the audio., What does the speaker say?, ...]
      dev: [Put what you just heard into writing., ...]
      heldout: [Can you write down exactly what the speaker says in this recording?, ...]

``train`` phrasings are trained on. ``dev`` and ``heldout`` never are: ``dev`` is for choosing
settings (its results may be looked at while tuning), ``heldout`` for the final measurement.

:func:`instruction_conversation` renders any task's (input, target) as a chat turn: user =
instruction + input, assistant = target. The task tag is optional: with ``task_tag=True`` the
conversation's ``meta["task"]`` names the task (the default template then writes ``<|task:T|>``);
without it, only the instruction says what to do.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tokunify.tasks.conversation import Conversation, Message, Part

SPLITS: tuple[str, ...] = ("train", "dev", "heldout")
DEFAULT_FIELDS: Mapping[str, str] = {"language": "English"}
"""Values of the placeholders an instruction may hold (``Repeat after me in {language}.``)."""


class InstructionError(ValueError):
    """An instruction pool file is malformed, or a task or split is missing from it."""


@dataclass(frozen=True)
class InstructionPool:
    """Per task and split, the instruction phrasings."""

    pools: Mapping[str, Mapping[str, tuple[str, ...]]]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        fields = {f for t in self.pools.values() for s in t.values() for x in s for f in _fields(x)}
        unknown = fields - set(DEFAULT_FIELDS)
        if unknown:
            raise InstructionError(
                f"{self.source}: unknown placeholders {sorted(unknown)}; known: {sorted(DEFAULT_FIELDS)}"
            )
        for task, splits in self.pools.items():
            for i, a in enumerate(SPLITS):
                for b in SPLITS[i + 1 :]:
                    overlap = set(splits.get(a, ())) & set(splits.get(b, ()))
                    if overlap:
                        raise InstructionError(
                            f"{self.source}: task {task!r} has phrasings in both {a} and {b}: {sorted(overlap)[:3]}"
                        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> InstructionPool:
        """The pool in ``path`` (YAML), or the package's default pool."""
        if path is None:
            text = resources.files("tokunify.tasks").joinpath("instructions.yaml").read_text()
            source = "tokunify/tasks/instructions.yaml"
        else:
            p = Path(path)
            if not p.is_file():
                raise InstructionError(f"{p}: no such instruction file")
            text, source = p.read_text(), str(p)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InstructionError(f"{source}: not valid YAML: {e}") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> InstructionPool:
        if not isinstance(data, dict) or not data:
            raise InstructionError(
                f"{source}: expected a mapping task -> {{train: [...], dev: [...], heldout: [...]}}"
            )
        pools: dict[str, dict[str, tuple[str, ...]]] = {}
        for task, splits in data.items():
            if not isinstance(splits, dict) or not set(splits) <= set(SPLITS) or not splits:
                raise InstructionError(
                    f"{source}: task {task!r} must map to splits among {SPLITS}, got {splits!r:.80}"
                )
            pools[str(task)] = {}
            for split, items in splits.items():
                if not isinstance(items, list) or not all(
                    isinstance(x, str) and x.strip() for x in items
                ):
                    raise InstructionError(
                        f"{source}: {task}.{split} must be a list of non-empty strings"
                    )
                pools[str(task)][split] = tuple(x.strip() for x in items)
        return cls(pools, source)

    def tasks(self) -> list[str]:
        return list(self.pools)

    def phrasings(self, task: str, split: str = "train") -> tuple[str, ...]:
        """Every phrasing of a task's split; unknown task or split, or an empty one, raises."""
        if task not in self.pools:
            raise InstructionError(
                f"{self.source}: no instructions for task {task!r}; has {self.tasks()}"
            )
        items = self.pools[task].get(split, ())
        if not items:
            raise InstructionError(f"{self.source}: task {task!r} has no {split!r} phrasings")
        return items

    def sample(
        self, task: str, split: str = "train", rng: np.random.Generator | None = None, **fields: str
    ) -> str:
        """One phrasing, drawn uniformly with ``rng``, its placeholders filled (``fields`` over
        :data:`DEFAULT_FIELDS`)."""
        items = self.phrasings(task, split)
        rng = rng if rng is not None else np.random.default_rng()
        return fill(items[int(rng.integers(len(items)))], **fields)


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def fill(text: str, **fields: str) -> str:
    """An instruction with its placeholders filled."""
    return text.format_map({**DEFAULT_FIELDS, **fields}) if _fields(text) else text


def drop_words(text: str, p: float, rng: np.random.Generator) -> str:
    """``text`` with each word (whitespace-separated, punctuation kept with it) dropped with
    probability ``p``, at least one kept: instruction word dropout, a training augmentation that
    makes a model weigh every word of an instruction rather than a few it memorised."""
    if p <= 0:
        return text
    words = text.split()
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[int(rng.integers(len(words)))] = True
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


def _parts(x: Part | Sequence[Part]) -> list[Part]:
    return [x] if isinstance(x, str) or not isinstance(x, Sequence) else list(x)


def instruction_conversation(
    task: str,
    instruction: str,
    input: Part | Sequence[Part],
    target: Part | Sequence[Part] | None = None,
    task_tag: bool = False,
    system: str | None = None,
    separator: str = " ",
) -> Conversation:
    """A task example as a chat turn: user = ``instruction`` + ``separator`` + input, assistant =
    target (left out when None: a generation request). ``meta`` keeps the task and the
    instruction; ``meta["task"]`` only with ``task_tag``."""
    inp = _parts(input)
    user: list[Part] = [instruction + separator, *inp] if inp else [instruction]
    msgs = [Message("system", system)] if system else []
    msgs.append(Message("user", user))
    if target is not None:
        msgs.append(Message("assistant", _parts(target)))
    meta: dict[str, Any] = {"instruction": instruction, "source_task": task}
    if task_tag:
        meta["task"] = task
    return Conversation(msgs, meta)


__all__ = [
    "DEFAULT_FIELDS",
    "SPLITS",
    "InstructionError",
    "InstructionPool",
    "drop_words",
    "fill",
    "instruction_conversation",
]
