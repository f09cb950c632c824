"""Task-mixture data from token stores, formatted at batch time, resumable to the exact position.

Each task walks its own cursor over this rank's share of the shuffled store order (records serve
every task they are eligible for: "tokenize once, format many"). The task of each document is
drawn from the mixture with a seeded generator; the generator state, the cursors and the packer's
pending document make up :meth:`TaskData.state`, so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokunify.core.vocab import UnifiedVocab
from tokunify.data.store import Record, StoreError, TokenStore
from tokunify.tasks import (
    FormatError,
    TaskFormat,
    TaskOptions,
    Utterance,
    align_words,
    make_task,
)
from tokunify.tokenizers.identity import text_tokenizer_hash
from tokunify.train.config import DataConfig
from tokunify.train.encoder_input import audio_of
from tokunify.train.packing import Doc, PackedBatch, Packer

# The watchdog of the training stream: this many draws in a row without a document to train on
# (no usable record, a format error, or a document the packer drops) is an error, never a spin.
WATCHDOG_DRAWS = 10_000


def is_eval_id(utt_id: str, fraction: float) -> bool:
    """Deterministic held-out split by utterance id."""
    h = int(hashlib.sha1(utt_id.encode()).hexdigest()[:8], 16)
    return h % 100000 < fraction * 100000


def word_encoder(tokenizer: Any) -> Callable[[str, int], list[int]]:
    """Per-word text ids that concatenate like the sentence: SentencePiece marks each word itself,
    byte-level BPE needs the leading space on every word but the first."""
    plain = tokenizer.encode("a", add_special_tokens=False) + tokenizer.encode(
        "b", add_special_tokens=False
    )
    spaced = tokenizer.encode("a", add_special_tokens=False) + tokenizer.encode(
        " b", add_special_tokens=False
    )
    whole = tokenizer.encode("a b", add_special_tokens=False)
    lead = whole == spaced and whole != plain

    def enc(word: str, i: int) -> list[int]:
        return tokenizer.encode((" " + word) if lead and i > 0 else word, add_special_tokens=False)

    return enc


@dataclass
class RecordSource:
    """The records of several stores as one index space, plus an id -> index map for s2s pairs."""

    stores: list[TokenStore]

    def __post_init__(self) -> None:
        self.starts = np.cumsum([0] + [len(s) for s in self.stores])
        self._ids: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> Record:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.stores[k][i - int(self.starts[k])]

    def lookup(self, utt_id: str) -> Record | None:
        """The record with this utterance id, or None."""
        j = self.index_of(utt_id)
        return None if j is None else self[j]

    def index_of(self, utt_id: str) -> int | None:
        if self._ids is None:
            self._ids = {}
            for k, s in enumerate(self.stores):
                for j, u in enumerate(s.ids()):
                    self._ids[u] = int(self.starts[k]) + j
        return self._ids.get(utt_id)

    def order(self, seed: int, epoch: int) -> np.ndarray:
        return (
            np.concatenate(
                [s.order(seed, epoch) + int(self.starts[k]) for k, s in enumerate(self.stores)]
            )
            if self.stores
            else np.zeros(0, np.int64)
        )


class Formatter:
    """Record(s) -> (ids, loss_mask) for a task: the task objects of :mod:`tokunify.tasks` decide
    which records they use and how they pair them; this class turns records into utterances."""

    def __init__(
        self,
        vocab: UnifiedVocab,
        tokenizer: Any,
        cfg: DataConfig,
        stream: str,
        frame_rate: float,
        input_streams: tuple[str, ...] = (),
    ):
        self.vocab, self.tokenizer, self.cfg, self.stream, self.frame_rate = (
            vocab,
            tokenizer,
            cfg,
            stream,
            frame_rate,
        )
        self.input_streams = input_streams
        self.placeholders = np.asarray(vocab.placeholder_ids(), dtype=np.int64)
        options = TaskOptions(
            stream=stream,
            input_streams=input_streams,
            loss_on_input=cfg.loss_on_input,
            pair_key=cfg.s2s_key,
            tokenizer=tokenizer,
            chat_loss_on=tuple(cfg.chat_loss_on),
            chat_template=cfg.chat_template,
            instructions=cfg.instructions,
            instruct_task_tag=cfg.instruct_task_tag,
            instruction_word_dropout=cfg.instruction_word_dropout,
        )
        self.formats: dict[str, TaskFormat] = {t: make_task(t, vocab, options) for t in cfg.mixture}
        self.encode_word = word_encoder(tokenizer)

    def text_ids(self, r: Record) -> np.ndarray | None:
        if r.text_ids is not None and len(r.text_ids):
            return r.text_ids.astype(np.int64)
        if r.text:
            return np.asarray(
                self.tokenizer.encode(r.text, add_special_tokens=False), dtype=np.int64
            )
        return None

    def utterance(self, r: Record, words: bool = False) -> Utterance:
        heard = dict.fromkeys((self.stream, *self.input_streams))
        speech = {s: np.asarray(r.streams[s]).astype(np.int64) for s in heard if s in r.streams}
        u = Utterance(text=self.text_ids(r), speech=speech)
        if words and r.words and self.stream in r.streams:
            ids = [self.encode_word(w, i) for i, (w, _, _) in enumerate(r.words)]
            u.words = align_words(
                r.words,
                ids,
                self.stream,
                speech[self.stream],
                self.frame_rate,
                r.durations.get(self.stream),
            )
        return u

    def eligible(self, task: str, r: Record) -> bool:
        return self.formats[task].eligible(r)

    def pair(
        self, task: str, r: Record, lookup: Callable[[str], Record | None]
    ) -> tuple[bool, Record | None]:
        """``(usable, target record)`` of a record for a task (see :meth:`TaskFormat.find_pair`)."""
        return self.formats[task].find_pair(r, lookup)

    def build(
        self, task: str, r: Record, target: Record | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        fmt = self.formats[task]
        words = "words" in fmt.requires
        return fmt.build_record(r, target, lambda x: self.utterance(x, words=words and x is r), rng)

    def doc(self, ti: int, r: Record, target: Record | None, rng: np.random.Generator) -> Doc:
        """The document of task ``tasks[ti]`` from a record, with the audio of its placeholders:
        the speech input a task hears is the record's own (a document whose placeholders are
        not all the record's frames is refused, :class:`FormatError`)."""
        ids, mask = self.build(list(self.formats)[ti], r, target, rng)
        n = int(np.isin(ids, self.placeholders).sum()) if self.placeholders.size else 0
        if not n:
            return Doc(ids, mask, ti)
        have = sum(
            int(np.asarray(r.streams[s])) for s in self.input_streams
            if s in r.streams and np.asarray(r.streams[s]).ndim == 0
        )  # fmt: skip
        if n != have:
            raise FormatError(
                f"record {r.id!r}: {n} speech-input placeholders, its audio gives {have} frames"
            )
        return Doc(ids, mask, ti, audio_of(r, n))


class TaskData:
    """The resumable training stream of packed batches for one rank."""

    def __init__(
        self,
        source: RecordSource,
        formatter: Formatter,
        cfg: DataConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        exclude_eval: bool = True,
    ):
        self.source, self.fmt, self.cfg = source, formatter, cfg
        self.seed, self.rank, self.world = seed, rank, world_size
        self.exclude_eval = exclude_eval
        self.tasks = list(cfg.mixture)
        w = np.array([cfg.mixture[t] for t in self.tasks], dtype=np.float64)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng([seed, rank, 7])
        self.cursor = {t: [0, 0] for t in self.tasks}  # task -> [epoch, position]
        self._orders: dict[int, np.ndarray] = {}
        self.packer = Packer(
            cfg.seq_len,
            formatter.vocab.pad,
            long_documents=cfg.long_documents,
            placeholders=formatter.vocab.placeholder_ids(),
        )
        self.docs_seen = 0

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: self.source.order(self.seed, epoch)[self.rank :: self.world]}
        return self._orders[epoch]

    def _next_record(self, task: str) -> tuple[Record, Record | None, np.random.Generator]:
        epoch, pos = self.cursor[task]
        scanned = wraps = 0
        while True:
            order = self._order(epoch)
            if pos >= len(order):
                epoch, pos, wraps = epoch + 1, 0, wraps + 1
                if scanned > 2 * max(len(order), 1) or (wraps > 2 and not scanned):
                    raise StoreError(
                        f"{self.store_names()}: no record of this rank's share (rank {self.rank} "
                        f"of {self.world}) is usable for task {task!r}"
                    )
                continue
            r = self.source[int(order[pos])]
            pos += 1
            scanned += 1
            if (
                self.exclude_eval
                and self.cfg.eval_fraction > 0
                and not self.cfg.eval_stores
                and is_eval_id(r.id, self.cfg.eval_fraction)
            ):
                continue
            if not self.fmt.eligible(task, r):
                continue
            usable, target = self.fmt.pair(task, r, self.source.lookup)
            if not usable:
                continue
            self.cursor[task] = [epoch, pos]
            rng = np.random.default_rng([self.seed, self.tasks.index(task), epoch, pos])
            return r, target, rng

    def store_names(self) -> str:
        return ", ".join(str(s.root) for s in self.source.stores) or "no stores"

    def next_doc(self) -> Doc:
        """The next document of the mixture; :data:`WATCHDOG_DRAWS` draws in a row without one
        (format errors, or documents that ``long_documents: drop`` would drop) raise."""
        dropping = self.cfg.long_documents == "drop"
        for _ in range(WATCHDOG_DRAWS):
            ti = int(self.rng.choice(len(self.tasks), p=self.weights))
            task = self.tasks[ti]
            r, target, rng = self._next_record(task)
            try:
                doc = self.fmt.doc(ti, r, target, rng)
            except FormatError:
                continue
            if dropping and len(doc.ids) > self.cfg.seq_len:
                continue
            self.docs_seen += 1
            return doc
        raise StoreError(
            f"{self.store_names()}: no trainable document in {WATCHDOG_DRAWS} draws of the mixture "
            f"{dict(self.cfg.mixture)} (records fail to format"
            + (f" or are longer than data.seq_len={self.cfg.seq_len}" if dropping else "")
            + ")"
        )

    def next_batch(self, rows: int) -> PackedBatch:
        batch, _ = self.packer.next_batch(rows, self.next_doc)
        return batch

    def state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "cursor": {t: list(c) for t, c in self.cursor.items()},
            "pending": self.packer.state(),
            "docs_seen": self.docs_seen,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.cursor = {t: list(c) for t, c in state["cursor"].items()}
        self.packer.load_state(state["pending"])
        self.docs_seen = int(state["docs_seen"])


def eval_docs(
    source: RecordSource, fmt: Formatter, cfg: DataConfig, n: int, use_split: bool, seed: int
) -> dict[str, list[Doc]]:
    """Per task, the first ``n`` eligible held-out documents in store order (deterministic)."""
    out: dict[str, list[Doc]] = {t: [] for t in cfg.mixture}
    for i in range(len(source)):
        if all(len(v) >= n for v in out.values()):
            break
        r = source[i]
        if use_split and not is_eval_id(r.id, cfg.eval_fraction):
            continue
        for ti, task in enumerate(cfg.mixture):
            if len(out[task]) >= n or not fmt.eligible(task, r):
                continue
            usable, target = fmt.pair(task, r, source.lookup)
            if not usable:
                continue
            try:
                doc = fmt.doc(ti, r, target, np.random.default_rng([seed, ti, i]))
            except FormatError:
                continue
            out[task].append(doc)
    return out


def check_usable(source: RecordSource, fmt: Formatter, cfg: DataConfig) -> None:
    """Refuse at start-up stores with no record usable for a task of the mixture (weight > 0),
    naming the stores and the task; scans until one record per task is found."""
    names = ", ".join(str(s.root) for s in source.stores)
    if len(source) == 0:
        raise StoreError(f"{names}: the training stores hold no records")
    todo = [t for t, w in cfg.mixture.items() if w > 0]
    for i in range(len(source)):
        if not todo:
            return
        r = source[i]
        todo = [t for t in todo if not (fmt.eligible(t, r) and fmt.pair(t, r, source.lookup)[0])]
    if todo:
        needs = {t: sorted(fmt.formats[t].requires) for t in todo}
        raise StoreError(
            f"{names}: no record is usable for task {todo[0]!r} of data.mixture "
            f"(of {len(source)} records; the task needs {needs[todo[0]]}); "
            "drop the task from the mixture or add a store that has it"
        )


def check_compatible(
    stores: list[TokenStore], vocab: UnifiedVocab, tokenizer: Any, spec: Any, stream: str
) -> None:
    """Refuse stores whose tokenizers do not match the bundle's vocab (streams, sizes, hashes, text).
    A continuous stream is heard through the speech input, never stored: only the text is checked."""
    s = vocab.stream(stream)
    expected = {stream: (s.kind, s.size, s.codebooks)} if not s.continuous else {}
    bundle_cfg = (spec.speech_tokenizers or {}).get(stream)
    text_hash = text_tokenizer_hash(tokenizer, vocab.text_size)
    for st in stores:
        st.check_streams(expected)
        info = st.meta.streams.get(stream)
        if (
            info is not None
            and bundle_cfg is not None
            and bundle_cfg.get("hash")
            and bundle_cfg["hash"] != info.hash
        ):
            raise StoreError(
                f"{st.root}: stream {stream!r} was made by tokenizer {info.hash}, the bundle's is {bundle_cfg['hash']}; "
                "re-tokenize with the bundle's speech tokenizer"
            )
        tt = st.meta.text_tokenizer
        if tt is not None and tt.get("hash") != text_hash:
            raise StoreError(
                f"{st.root}: text_ids come from another text tokenizer ({tt.get('source')}) than the bundle's; "
                "re-tokenize with the bundle's text tokenizer"
            )
