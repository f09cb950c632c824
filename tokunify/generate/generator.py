"""Generation by task tag: one object loads a bundle once and serves many requests.

Every task rule (its prompt, input and output modality, decoding preset, how to read the output)
comes from the task objects of :mod:`tokunify.tasks`; this module names no task. Decoding is constrained by :class:`ModalityConstraint`;
batches are left-padded and decoded with the KV cache by ``model.generate``. Speech outputs go
through the bundle's unit vocoder (units) or codec decoder (EnCodec) behind one ``decode`` call.

A bundle with a speech input (``Bundle.speech_input``: encoder + adapter) hears audio through it,
exactly where a unit bundle would tokenize it: speech-input tasks read its continuous stream
(``TaskOptions.input_streams``), the prompt holds one placeholder per adapter frame, and
``model.generate`` starts from ``inputs_embeds`` whose placeholder rows are the adapter's frames
(:func:`~tokunify.model.speech_input.embed_inputs`). A task that reads only its own stream
(``continue``) keeps hearing units.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from tokunify.data.audio import load as load_audio
from tokunify.generate.constraints import ModalityConstraint
from tokunify.generate.fewshot import Example, resolve_examples, with_examples
from tokunify.model.bundle import Bundle, BundleError
from tokunify.model.bundle import load as load_bundle
from tokunify.model.encoders import SAMPLE_RATE
from tokunify.model.speech_input import embed_inputs
from tokunify.tasks import (
    FormatError,
    TaskFormat,
    TaskOptions,
    Utterance,
    find_task,
    generation_tasks,
    make_task,
)
from tokunify.vocoder.codec import bundle_vocoder


@dataclass
class GenerationResult:
    task: str
    text: str | None = None
    units: np.ndarray | None = None  # local ids of the generated speech ([T] or [n_q, T])
    audio: np.ndarray | None = None  # [N] float32 at sample_rate
    sample_rate: int | None = None
    hit_limit: bool = (
        False  # max_new_tokens reached before <|eos|>: the output is what was generated
    )
    ids: list[int] = field(default_factory=list)  # generated global ids


class Generator:
    """A bundle loaded once (LM, text tokenizer, speech tokenizer, vocoder) serving requests."""

    def __init__(
        self,
        bundle: str | Path | Bundle,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        stream: str | None = None,
    ):
        self.device = torch.device(device)
        self.bundle = (
            bundle
            if isinstance(bundle, Bundle)
            else load_bundle(bundle, device=self.device, dtype=dtype)
        )
        if self.bundle.model is None:
            raise BundleError("Generator needs a bundle loaded with its model")
        self.model = self.bundle.model.to(self.device).eval()
        self.vocab = self.bundle.vocab
        self.stream = stream or self.vocab.default_stream
        si = self.bundle.speech_input
        self.speech_input = None if si is None else si.to(self.device).eval()
        self._speech_tok = None
        self._vocoder = None

    # ---- components ----------------------------------------------------------------------------
    @property
    def speech_tokenizer(self) -> Any:
        if self._speech_tok is None:
            self._speech_tok = self.bundle.speech_tokenizer(self.stream, device=self.device)
        return self._speech_tok

    @property
    def vocoder(self) -> Any:
        """The stream's vocoder: the bundle's unit vocoder, or the codec tokenizer's own decoder."""
        if self._vocoder is None:
            self._vocoder = bundle_vocoder(
                self.bundle, self.stream, self.device, lambda: self.speech_tokenizer
            )
        return self._vocoder

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    def decode(
        self, units: Sequence[np.ndarray], durations: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """Local ids -> waveforms through :attr:`vocoder` (a codec decodes its own codes)."""
        t = [torch.from_numpy(np.array(u, dtype=np.int64)) for u in units]
        d = (
            [torch.from_numpy(np.array(x, dtype=np.int64)) for x in durations]
            if durations is not None
            else None
        )
        return [w.numpy() for w in self.vocoder(t, d)]

    def encode_audio(
        self, audio: Sequence[str | Path | np.ndarray], sample_rate: int | None = None
    ) -> list[np.ndarray]:
        """Audio files or arrays -> local ids of the stream (deduplicated as the tokenizer does)."""
        tok = self.speech_tokenizer
        paths = [a for a in audio if isinstance(a, (str, Path))]
        if len(paths) == len(audio):
            out = tok.encode_files(paths)
        elif not paths:
            out = tok.encode(list(audio), sample_rate=sample_rate)
        else:
            raise ValueError("pass either audio files or arrays, not a mix")
        return [i.numpy() for i in out.ids]

    # ---- generation -----------------------------------------------------------------------------
    def task(self, task: str) -> TaskFormat:
        """The task object for a tag; refuses tasks that do not generate or this vocab lacks.
        With a speech input, the task hears its continuous stream where it can read other input
        streams (a task that reads only its own stream refuses them, and hears that one)."""
        known = generation_tasks()
        if task not in known:
            raise FormatError(f"unknown task {task!r}; generation knows {sorted(known)}")
        if self.speech_input is not None:
            heard = TaskOptions(stream=self.stream, input_streams=(self.speech_input.stream,))
            try:
                return make_task(task, self.vocab, heard)
            except FormatError:
                pass
        return make_task(task, self.vocab, TaskOptions(stream=self.stream))

    def hears_encoder(self, fmt: TaskFormat) -> bool:
        """Whether a task's speech input goes through the bundle's encoder + adapter."""
        return (
            self.speech_input is not None
            and fmt.input_modality == "speech"
            and self.speech_input.stream in fmt.input_streams
        )

    def wavs(
        self, audio: Sequence[str | Path | np.ndarray], sample_rate: int | None = None
    ) -> list[np.ndarray]:
        """Audio files or arrays -> mono float32 wavs at 16 kHz, as the speech input reads them."""
        if all(isinstance(a, (str, Path)) for a in audio):
            return [load_audio(a, SAMPLE_RATE) for a in audio]
        if any(isinstance(a, (str, Path)) for a in audio):
            raise ValueError("pass either audio files or arrays, not a mix")
        if sample_rate is None:
            raise ValueError("audio arrays need their sample_rate")
        return self.speech_input.encoder.prepare(list(audio), sample_rate)

    def speech_embeds(self, prompts: torch.Tensor, wavs: Sequence[np.ndarray]) -> torch.Tensor:
        """``inputs_embeds [B, L, H]`` of (left-padded) prompt ids ``[B, L]``: each row's
        placeholders hold the adapter frames of its wav."""
        feats, lengths = self.speech_input(list(wavs), SAMPLE_RATE)  # [B, T', H], [B]
        ph = self.vocab.placeholder(self.speech_input.stream)
        return embed_inputs(self.model, prompts, feats, ph, lengths)

    def example_ids(self, task: str, examples: Sequence[Example]) -> list[np.ndarray]:
        """In-context examples -> their segments (global ids), as :meth:`prompts` places them."""
        return resolve_examples(self.task(task), examples, self.encode_text, self.encode_audio)

    def encode_text(self, text: str) -> np.ndarray:
        """Typed text -> its text ids ``[T]``. Text that spells a token of the unified vocab
        (``<|eos|>``, ``<|units:3|>``, ...) is refused (:class:`FormatError` naming it): in a
        prompt it would end the input or become speech."""
        ids = np.asarray(self.bundle.tokenizer.encode(text, add_special_tokens=False), np.int64)
        if ids.size and ids.max() >= self.vocab.text_size:
            tok = self.bundle.tokenizer.convert_ids_to_tokens(
                int(ids[ids >= self.vocab.text_size][0])
            )
            raise FormatError(
                f"text {text[:40]!r} holds {tok!r}, a token of the speech vocabulary; it cannot be "
                "typed (speech comes as audio)"
            )
        return ids

    def prompts(
        self,
        task: str,
        inputs: Sequence[Any],
        sample_rate: int | None = None,
        examples: Sequence[Example] | None = None,
    ) -> list[np.ndarray]:
        """Generation prompts; ``examples`` (k in-context pairs) go before each query, in order."""
        return self.speech_prompts(task, inputs, sample_rate, examples)[0]

    def speech_prompts(
        self,
        task: str,
        inputs: Sequence[Any],
        sample_rate: int | None = None,
        examples: Sequence[Example] | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Generation prompts and, for a task that hears the encoder, each prompt's 16 kHz wav
        (its placeholders' frames: the prompt holds ``speech_input.output_lengths`` of them)."""
        fmt = self.task(task)
        if not inputs:
            raise ValueError("empty input: nothing to generate from")
        if self.hears_encoder(fmt):
            if examples:
                raise ValueError(
                    f"{task}: in-context examples are not supported with a speech-input encoder"
                )
            wavs = self.wavs(inputs, sample_rate)
            counts = self.speech_input.output_lengths([len(w) for w in wavs]).tolist()
            stream = self.speech_input.stream
            utts = [Utterance(speech={stream: np.asarray(int(n))}) for n in counts]
            return [fmt.prompt(u) for u in utts], wavs
        shots = self.example_ids(task, examples) if examples else []
        if fmt.input_modality == "text":
            utts = []
            for x in inputs:
                if not isinstance(x, str) or not x.strip():
                    raise ValueError(f"{task}: inputs must be non-empty strings, got {x!r}")
                utts.append(Utterance(text=self.encode_text(x)))
        else:
            if all(isinstance(x, np.ndarray) and x.dtype.kind in "iu" for x in inputs):
                units = list(inputs)  # already local ids
            else:
                units = self.encode_audio(inputs, sample_rate)
            utts = [Utterance(speech={fmt.input_streams[0]: u}) for u in units]
        return [with_examples(fmt, fmt.prompt(u), shots) for u in utts], None

    @torch.inference_mode()
    def generate_ids(
        self,
        task: str,
        prompts: list[np.ndarray],
        wavs: Sequence[np.ndarray] | None = None,
        **overrides: Any,
    ) -> list[tuple[list[int], bool]]:
        """Constrained, batched decoding (left padding, KV cache). Returns (generated ids, hit_limit).
        ``wavs``: the audio of each prompt's speech-input placeholders (:meth:`speech_prompts`)."""
        fmt = self.task(task)
        cfg = {**(fmt.preset or {}), **overrides}
        if wavs is None and self.vocab.placeholder_ids():
            held = np.isin(np.concatenate(prompts), self.vocab.placeholder_ids())
            if held.any():
                raise ValueError(
                    f"{task}: the prompts hold speech-input placeholders but no audio was given "
                    "for them (Generator.speech_prompts gives both)"
                )
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), self.vocab.pad, dtype=torch.long)
        att = torch.zeros((len(prompts), n), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, n - len(p) :] = torch.as_tensor(p)
            att[i, n - len(p) :] = 1
        # tokens of the target segment already in each prompt (a continuation ends inside it)
        offsets = torch.tensor([fmt.target_offset(p) for p in prompts])
        constraint = ModalityConstraint(
            self.vocab,
            fmt.target_modality,
            n,
            offsets if bool(offsets.any()) else None,
            self.device,
        )
        ids = ids.to(self.device)
        embeds = {} if wavs is None else {"inputs_embeds": self.speech_embeds(ids, wavs)}
        out = self.model.generate(
            input_ids=ids,
            **embeds,
            attention_mask=att.to(self.device),
            logits_processor=LogitsProcessorList([constraint]),
            eos_token_id=self.vocab.eos,
            pad_token_id=self.vocab.pad,
            use_cache=True,
            **cfg,
        )
        res = []
        for row in out[:, n:].tolist():
            hit = self.vocab.eos not in row
            if not hit:
                row = row[: row.index(self.vocab.eos) + 1]
            res.append((row, hit))
        return res

    def generate(
        self,
        task: str,
        inputs: Sequence[Any],
        batch_size: int = 16,
        sample_rate: int | None = None,
        vocode: bool = True,
        examples: Sequence[Example] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]:
        """``task`` in asr, tts, s2s, continue, text. Inputs: strings (tts, text), audio files/arrays
        or local unit arrays (asr, s2s, continue). ``examples``: in-context pairs placed before every
        query (:mod:`tokunify.generate.fewshot`)."""
        fmt = self.task(task)
        prompts, wavs = self.speech_prompts(task, inputs, sample_rate, examples)
        results: list[GenerationResult] = []
        for a in range(0, len(prompts), batch_size):
            batch = prompts[a : a + batch_size]
            heard = None if wavs is None else wavs[a : a + batch_size]
            for prompt, (gen, hit) in zip(
                batch, self.generate_ids(task, batch, heard, **overrides), strict=True
            ):
                results.append(self._result(fmt, prompt, gen, hit))
        if vocode and fmt.output_modality == "speech":
            ok = [r for r in results if r.units is not None and r.units.shape[-1] > 0]
            for r, wav in zip(ok, self.decode([r.units for r in ok]), strict=True):
                r.audio, r.sample_rate = wav, self.sample_rate
        return results

    def _result(
        self, fmt: TaskFormat, prompt: np.ndarray, gen: list[int], hit: bool
    ) -> GenerationResult:
        seg = fmt.parse_output(prompt, gen)
        r = GenerationResult(task=fmt.task, hit_limit=hit, ids=gen)
        if seg is None:
            return r
        if fmt.output_modality == "text":
            r.text = self.bundle.tokenizer.decode(
                seg.ids.tolist(), skip_special_tokens=True
            ).strip()
        else:
            r.units = seg.ids
        return r

    def stream_tts(
        self, text: str, chunk: int = 25, context: int = 24, **overrides: Any
    ) -> Iterator[np.ndarray]:
        """TTS that yields audio chunks while the LM is still generating (unit streams): the
        registered text -> speech task of this vocab, through :meth:`stream_speech`."""
        task = find_task("text", "speech", self.vocab)
        return self.stream_speech(task, text, chunk=chunk, context=context, **overrides)

    def stream_speech(
        self,
        task: str,
        request: Any,
        chunk: int = 25,
        context: int = 24,
        examples: Sequence[Example] | None = None,
        **overrides: Any,
    ) -> Iterator[np.ndarray]:
        """A speech-output task that yields audio chunks while the LM is still generating."""
        fmt = self.task(task)
        if fmt.output_modality != "speech":
            raise ValueError(f"streaming synthesis needs a speech-output task, {task!r} gives text")
        if self.vocab.stream(self.stream).kind != "units":
            raise ValueError("streaming synthesis needs a unit stream")
        prompt = self.prompts(task, [request], examples=examples)[0]
        return self._stream(fmt, prompt, chunk, context, overrides)

    def _stream(
        self, fmt: TaskFormat, prompt: np.ndarray, chunk: int, context: int, overrides: dict
    ) -> Iterator[np.ndarray]:
        q: queue.Queue = queue.Queue()
        streamer = _UnitStreamer(q, self.vocab, self.stream, skip=1)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                cfg = {**(fmt.preset or {}), **overrides}
                ids = torch.as_tensor(prompt)[None].to(self.device)
                offset = fmt.target_offset(prompt)
                constraint = ModalityConstraint(
                    self.vocab,
                    fmt.target_modality,
                    ids.shape[1],
                    torch.tensor([offset]) if offset else None,
                    self.device,
                )
                with torch.inference_mode():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), logits_processor=LogitsProcessorList([constraint]),
                                        eos_token_id=self.vocab.eos, pad_token_id=self.vocab.pad, streamer=streamer, **cfg)  # fmt: skip
            except BaseException as e:
                errors.append(e)
            finally:
                q.put(None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        chunks = self.vocoder.chunks(chunk, context)
        while (u := q.get()) is not None:
            for wav in chunks.push([u]):
                yield wav.numpy()
        for wav in chunks.finish():
            yield wav.numpy()
        thread.join()
        if errors:
            raise errors[0]


class _UnitStreamer(BaseStreamer):
    """Receives generated ids from ``model.generate`` and queues local unit ids."""

    def __init__(self, q: queue.Queue, vocab: Any, stream: str, skip: int):
        self.q, self.vocab, self.stream, self.skip = q, vocab, stream, skip
        self.code = vocab.modality_code(stream)

    def put(self, value: torch.Tensor) -> None:
        if self.skip:  # the first call carries the prompt
            self.skip -= 1
            return
        ids = value.view(-1).cpu()
        units = ids[self.vocab.modality_of(ids) == self.code]
        for u in self.vocab.to_local(self.stream, units).tolist():
            self.q.put(int(u))

    def end(self) -> None:
        pass
