"""`tokunify make-chat-data`: conversation stores from an utterance store and a text chat model.

Modal invariance (AudioChatLlama): a text chat model M answers each utterance's *transcript* as the
user turn; its answer becomes the assistant turn of a conversation whose user turn is the
utterance's *speech*. Trained on these, a speech LM learns to answer speech as M answers text, with
no curated pairs. ``--mode chain`` writes SpeechGPT's chain-of-modality target instead: the
assistant turn is the transcript, then the text answer, then the spoken answer (a recording of the
answer from the store when one exists, else the units of a bundle's TTS). ``--mode chain_text``
stops the chain at the text answer (transcript, then answer; no spoken answer): a speech-in,
text-out model that writes down what it heard before it answers.

M is any Hugging Face causal LM whose tokenizer has a chat template (hub id or local directory,
rendered by ``apply_chat_template``), or a tokunify bundle (its text side through its own chat
template, :func:`tokunify.tasks.templates.template_for`). Generation is batched.

The job is the store job of :mod:`tokunify.data.store.job`: resumable (finished chunks are skipped),
sharded (``--shard i/N`` or the launcher), records without a transcript or speech become rejects.
The output store's ``store.json`` records the provenance under ``provenance.chat_data``: the source
store's fingerprint, the model (path and content hash), mode, prompts and decoding settings; a
rerun with other settings is refused by the store's one provenance check
(:meth:`tokunify.data.store.StoreMeta.differences`), naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from tokunify.chat.engine import ChatEngine
from tokunify.core.fsio import content_hash
from tokunify.data.store import Record, Reject, StoreError, StoreMeta, TokenStore, shard_file
from tokunify.data.store.job import JobOptions, report_store, run_store_job
from tokunify.eval.generative import normalize
from tokunify.generate.decoding import Decoding
from tokunify.generate.generator import Generator
from tokunify.tasks import DEFAULT_PAIR_KEY, find_task
from tokunify.tasks.conversation import Conversation, Message, SpeechPart
from tokunify.tasks.instructions import InstructionPool, drop_words, instruction_conversation

if TYPE_CHECKING:
    from tokunify.generate.decoding import Decoding

PROVENANCE_KEY = "chat_data"


@dataclass
class MakeChatDataArgs:
    """Make a conversation store: user turn = each utterance's speech, assistant turn = a text chat
    model's answer to its transcript (AudioChatLlama's modal invariance), or SpeechGPT's chain."""

    store: str = field(metadata={"positional": True})
    """Utterance store with transcripts and a speech stream."""
    model: str
    """The text chat model: a HF causal LM with a chat template (hub id or local dir) or a tokunify bundle."""
    out: str
    """Output conversation store (an existing one made with the same settings is resumed)."""
    mode: Literal["answer", "chain", "chain_text"] = "answer"
    """answer: assistant = M's answer; chain: transcript, text answer, then spoken answer (SpeechGPT);
    chain_text: transcript, then text answer."""
    stream: str | None = None
    """Speech stream of the store (default: its first)."""
    system: str | None = None
    """System prompt for M, also kept as the conversation's system turn."""
    instruction: str | None = None
    """Text before the speech in the user turn (default: none; the speech alone, as in AudioChatLlama)."""
    instruction_task: str | None = None
    """Draw the user turn's instruction per record from this task's instruction pool (seeded by the record id)."""
    instruction_split: Literal["train", "dev", "heldout"] = "train"
    """Which phrasings of the pool to draw from."""
    instructions: str | None = None
    """Instruction pool YAML (default: the built-in pool)."""
    speech_alone: float = 0.0
    """With --instruction-task: the share of records (drawn per record id) whose user turn is the
    speech alone, with no instruction, as in AudioChatLlama; the rest get a drawn phrasing."""
    instruction_word_dropout: float = 0.0
    """With --instruction-task: drop each word of the drawn phrasing with this probability (at
    least one kept; drawn per record id, apart from the phrasing draws)."""
    chain_format: str = "[ta] {transcript} [ua] {answer} [sa]"
    """chain: the assistant's text before its spoken answer (SpeechGPT's markers by default)."""
    chain_text_format: str = "[ta] {transcript} [ua] {answer}"
    """chain_text: the assistant's whole turn."""
    tts_bundle: str | None = None
    """chain: bundle whose TTS speaks answers that have no recording (default: --model if it is a bundle)."""
    tts_temperature: float = 0.0
    """chain: TTS sampling temperature (0 = greedy)."""
    tts_max_new_tokens: int = 400
    """chain: length limit of a spoken answer (tokens)."""
    batch_size: int = 16
    """Transcripts per generation batch."""
    max_new_tokens: int = 64
    """Length limit of M's answer."""
    temperature: float = 0.0
    """Sampling temperature of M (0 = greedy)."""
    seed: int = 0
    """Seed (sampling, instruction draws)."""
    chunk_size: int = 500
    """Records per output shard."""
    shard: str | None = None
    """This job's slice i/N of the chunks (default: the launcher's, else 0/1)."""
    workers: int = 1
    """Local worker processes."""
    device: str = "cpu"
    """Device for the models; `cuda` means cuda:LOCAL_RANK under a launcher."""
    progress: bool = True
    """Show a progress bar."""


# ---- text chat models ------------------------------------------------------------------------
def _weights_hash(path: Path) -> str | None:
    """Content hash of a local model directory (every file: weights, config, tokenizer); None
    for a hub id (its name is the provenance)."""
    return content_hash(path) if path.is_dir() else None


def _decoding(temperature: float, max_new_tokens: int) -> Decoding:
    """make-chat-data's decoding: greedy at temperature 0, else plain temperature sampling."""

    return Decoding(temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)


class Responder:
    """A text chat model answering batches of user texts."""

    kind: ClassVar[str]

    @classmethod
    def accepts(cls, path: str) -> bool:
        raise NotImplementedError

    def respond(self, texts: Sequence[str], seeds: Sequence[int] | None = None) -> list[str]:
        """Answers to ``texts``; ``seeds`` (one per text) seed sampled replies where the model
        samples per row (a bundle does; a HF model draws from torch's global generator)."""
        raise NotImplementedError


class BundleResponder(Responder):
    """A tokunify bundle, through the :class:`~tokunify.chat.engine.ChatEngine`: the user text
    rendered by the bundle's chat template; the reply is generated as text (the template's reply
    grammar) and its text parts joined."""

    kind = "bundle"

    @classmethod
    def accepts(cls, path: str) -> bool:
        return (Path(path) / "vocab.json").is_file() and (Path(path) / "tokunify.json").is_file()

    def __init__(self, path: str, device: str, system: str | None, decoding: Decoding):

        self.engine = ChatEngine(path, device=device)
        self.system, self.decoding = system, decoding

    def respond(self, texts: Sequence[str], seeds: Sequence[int] | None = None) -> list[str]:

        sys = [Message("system", self.system)] if self.system else []
        convs = [Conversation([*sys, Message("user", t)]) for t in texts]
        replies = self.engine.reply(
            convs, self.decoding, list(seeds) if seeds is not None else 0, "text",
            batch_size=len(convs),
        )  # fmt: skip
        return [
            " ".join(p.strip() for p in r.content if isinstance(p, str)).strip() for r in replies
        ]


class HFResponder(Responder):
    """A Hugging Face causal LM with a chat template (``apply_chat_template``)."""

    kind = "hf"

    @classmethod
    def accepts(cls, path: str) -> bool:
        return True

    def __init__(self, path: str, device: str, system: str | None, decoding: Decoding):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(
                f"--model {path}: its tokenizer has no chat_template; give a chat model or a tokunify bundle"
            )
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        self.system, self.decoding, self.device = system, decoding, device

    def respond(self, texts: Sequence[str], seeds: Sequence[int] | None = None) -> list[str]:
        import torch

        rendered = []
        for t in texts:
            msgs = ([{"role": "system", "content": self.system}] if self.system else []) + [
                {"role": "user", "content": t}
            ]
            rendered.append(
                self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            )
        enc = self.tok(rendered, add_special_tokens=False, padding=True, return_tensors="pt")
        ids, att = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)  # [B, n]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=att,
                pad_token_id=self.tok.pad_token_id,
                **self.decoding.generate_kwargs(),
            )
        new = out[:, ids.shape[1] :]
        return [s.strip() for s in self.tok.batch_decode(new, skip_special_tokens=True)]


RESPONDERS: tuple[type[Responder], ...] = (BundleResponder, HFResponder)
"""Kinds of text chat model, asked in order: the first that accepts the path serves it."""


def responder_class(path: str) -> type[Responder]:
    return next(c for c in RESPONDERS if c.accepts(path))


# ---- the job ---------------------------------------------------------------------------------
def provenance(args: MakeChatDataArgs, source: TokenStore, stream: str) -> dict[str, Any]:
    """What made the store: recorded in store.json and compared on resume."""
    kind = responder_class(args.model).kind
    tts = _tts_path(args)
    settings = {k: v for k, v in asdict(args).items() if k not in ("store", "out", "shard", "workers", "device", "progress", "model")}  # fmt: skip
    return {
        "source_store": str(Path(args.store).resolve()),
        "source_fingerprint": source.meta.fingerprint(),
        "stream": stream,
        "model": args.model,
        "model_kind": kind,
        "model_hash": _weights_hash(Path(args.model)),
        "tts_bundle": tts,
        "tts_hash": _weights_hash(Path(tts)) if tts else None,
        "settings": settings,
    }


def _tts_path(args: MakeChatDataArgs) -> str | None:
    if args.mode != "chain":
        return None
    if args.tts_bundle:
        return args.tts_bundle
    return args.model if BundleResponder.accepts(args.model) else None


class ChatDataWorker:
    """Turns chunks of source records into conversation records (one per process)."""

    def __init__(self, args: MakeChatDataArgs, stream: str, device: str):
        import torch

        torch.manual_seed(args.seed)
        self.args, self.stream = args, stream
        self.source = TokenStore(args.store)
        decoding = _decoding(args.temperature, args.max_new_tokens)
        self.responder = responder_class(args.model)(args.model, device, args.system, decoding)
        self.pool = None
        if args.instruction_task:
            self.pool = InstructionPool.load(args.instructions)
        self.tts = None
        self._texts: dict[str, list[int]] | None = None
        tts = _tts_path(args)
        if tts:
            self.tts = Generator(tts, device=device, stream=stream)

    # chain mode: recordings of answers, by normalised text
    def recordings(self) -> dict[str, list[int]]:
        if self._texts is None:
            import pyarrow.parquet as pq

            self._texts = {}
            i = 0
            for c in self.source.chunks:
                for t in (
                    pq.read_table(shard_file(self.source.root, c), columns=["text"])
                    .column("text")
                    .to_pylist()
                ):
                    if t and normalize(t):
                        self._texts.setdefault(normalize(t), []).append(i)
                    i += 1
        return self._texts

    def recording(self, r: Record, answer: str) -> tuple[np.ndarray, str] | None:
        """Units of a recording of ``answer`` (texts compared as eval compares them,
        :func:`~tokunify.eval.generative.normalize`: case and punctuation aside, so "Five." is a
        recording of "five"): the record's own pair first, then the same speaker."""
        hits = [self.source[i] for i in self.recordings().get(normalize(answer), [])]
        hits = [h for h in hits if self.stream in h.streams]
        if not hits:
            return None
        pair = next((h for h in hits if h.id == r.meta.get(DEFAULT_PAIR_KEY)), None)
        same = next((h for h in hits if h.speaker == r.speaker), None)
        h = pair or same or hits[0]
        return np.asarray(h.streams[self.stream], dtype=np.int64), h.id

    def record_seed(self, r: Record) -> int:
        """The record's own seed (from --seed and its id): its draws do not depend on its chunk."""
        return int(hashlib.sha1(f"{self.args.seed}:{r.id}".encode()).hexdigest()[:8], 16)

    def instruction(self, r: Record) -> str | None:
        if self.pool is None:
            return self.args.instruction
        seed = self.record_seed(r)
        alone = np.random.default_rng([seed, 1]).random() < self.args.speech_alone
        if alone:  # its own stream: the phrasing draws stay those of --speech-alone 0
            return None
        phrasing = self.pool.sample(
            self.args.instruction_task, self.args.instruction_split, np.random.default_rng(seed)
        )
        return drop_words(
            phrasing, self.args.instruction_word_dropout, np.random.default_rng([seed, 2])
        )

    def process(self, chunk: int, rows: list[int]) -> tuple[list[Record], list[Reject]]:
        recs = [self.source[i] for i in rows]
        rejects: list[Reject] = []
        ok: list[Record] = []
        for r in recs:
            if not (r.text and r.text.strip()):
                rejects.append(Reject(r.id, r.audio, "no transcript"))
            elif self.stream not in r.streams or np.asarray(r.streams[self.stream]).shape[-1] == 0:
                rejects.append(Reject(r.id, r.audio, f"no speech in stream {self.stream!r}"))
            else:
                ok.append(r)
        answers: list[str] = []
        b = self.args.batch_size
        for a in range(0, len(ok), b):
            batch = ok[a : a + b]
            answers += self.responder.respond(
                [str(r.text).strip() for r in batch], [self.record_seed(r) for r in batch]
            )
        good = [(r, ans) for r, ans in zip(ok, answers, strict=True) if ans]
        rejects += [
            Reject(r.id, r.audio, "the model's answer is empty")
            for r, ans in zip(ok, answers, strict=True)
            if not ans
        ]
        spoken: dict[str, tuple[np.ndarray, str]] = {}
        if self.args.mode == "chain":
            spoken, more = self.spoken_answers(good)
            rejects += more
            good = [(r, ans) for r, ans in good if r.id in spoken]
        return [self.conversation(r, ans, spoken.get(r.id)) for r, ans in good], rejects

    def spoken_answers(
        self, good: list[tuple[Record, str]]
    ) -> tuple[dict[str, tuple[np.ndarray, str]], list[Reject]]:
        """Units of each answer: a recording when one exists, else the TTS bundle's."""
        out: dict[str, tuple[np.ndarray, str]] = {}
        need: list[tuple[Record, str]] = []
        for r, ans in good:
            hit = self.recording(r, ans)
            if hit is not None:
                out[r.id] = (hit[0], f"recording:{hit[1]}")
            else:
                need.append((r, ans))
        rejects = []
        if need and self.tts is None:
            rejects = [
                Reject(r.id, r.audio, "no recording of the answer and no --tts-bundle")
                for r, _ in need
            ]
        elif need:
            task = find_task("text", "speech", self.tts.vocab)
            over = _decoding(self.args.tts_temperature, self.args.tts_max_new_tokens)
            res = self.tts.generate(
                task, [a for _, a in need], batch_size=self.args.batch_size, vocode=False,
                **over.generate_kwargs(),
            )  # fmt: skip
            for (r, _), g in zip(need, res, strict=True):
                if g.units is None or g.units.shape[-1] == 0:
                    rejects.append(Reject(r.id, r.audio, "the TTS gave no speech for the answer"))
                else:
                    out[r.id] = (np.asarray(g.units, dtype=np.int64), "tts")
        return out, rejects

    def conversation(self, r: Record, answer: str, spoken: tuple[np.ndarray, str] | None) -> Record:
        """The conversation record: user = [instruction,] speech; assistant = the answer (answer
        mode), transcript and answer (chain_text) or transcript, answer and spoken answer (chain)."""

        instruction = self.instruction(r)
        speech = SpeechPart(self.stream, np.asarray(r.streams[self.stream], dtype=np.int64), r.id)
        said = str(r.text).strip()
        if self.args.mode == "chain_text":
            reply: list[Any] = [self.args.chain_text_format.format(transcript=said, answer=answer)]
        elif spoken is None:
            reply = [answer]
        else:
            text = self.args.chain_format.format(transcript=said, answer=answer)
            reply = [text, SpeechPart(self.stream, spoken[0])]
        if instruction:  # the instruction turn as the instruct_* tasks write it
            conv = instruction_conversation(
                self.args.instruction_task or "chat",
                instruction,
                [speech],
                reply,
                system=self.args.system,
            )
        else:  # AudioChatLlama: the speech alone
            msgs = [Message("system", self.args.system)] if self.args.system else []
            conv = Conversation([*msgs, Message("user", [speech]), Message("assistant", reply)])
        conv.meta.update(source=r.id, transcript=r.text, answer=answer, mode=self.args.mode)
        if spoken is not None:
            conv.meta["answer_speech"] = spoken[1]
        return conv.to_record(r.id, seconds=r.seconds, speaker=r.speaker)


def run_make_chat_data(args: MakeChatDataArgs) -> dict[str, Any]:
    source = TokenStore(args.store)
    stream = args.stream or next(iter(source.meta.streams), None)
    if stream is None or stream not in source.meta.streams:
        raise StoreError(
            f"{args.store}: no speech stream {stream!r} (has {sorted(source.meta.streams)})"
        )
    if args.mode == "chain" and _tts_path(args) is None:
        print(
            "note: --mode chain without a bundle (--tts-bundle): answers without a recording are rejected"
        )
    if args.instruction and args.instruction_task:
        raise ValueError("give --instruction or --instruction-task, not both")
    if not 0.0 <= args.speech_alone <= 1.0 or (args.speech_alone and not args.instruction_task):
        raise ValueError("--speech-alone is a share in [0, 1] and needs --instruction-task")
    if not 0.0 <= args.instruction_word_dropout < 1.0 or (
        args.instruction_word_dropout and not args.instruction_task
    ):
        raise ValueError(
            "--instruction-word-dropout is a probability in [0, 1) and needs --instruction-task"
        )
    if args.chunk_size < 1 or args.batch_size < 1:
        raise ValueError("--chunk-size and --batch-size must be >= 1")
    prov = provenance(args, source, stream)
    meta = StoreMeta(
        # conversation records keep the ids, not the run lengths: no durations column
        streams={stream: replace(source.meta.streams[stream], dedup=False)},
        text_tokenizer=None,
        manifest=str(Path(args.store).resolve()),
        manifest_rows=len(source),
        chunk_size=args.chunk_size,
        provenance={PROVENANCE_KEY: prov},  # a resume with other settings is refused, naming them
    )
    out = Path(args.out)
    opts = JobOptions(shard=args.shard, workers=args.workers, device=args.device, progress=args.progress,
                      name="make-chat-data", unit="record")  # fmt: skip
    result = run_store_job(
        out, meta, list(range(len(source))), partial(ChatDataWorker, args, stream), opts
    )
    summary = result.summary()
    print(json.dumps(summary))
    report_store(out, meta, result.complete)
    return summary
