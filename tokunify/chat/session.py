"""A multi-turn chat with a bundle: the history is kept and re-rendered for every reply.

>>> chat = ChatSession("run/final", system="Answer briefly.")   # doctest: +SKIP
>>> chat.say("what is two plus three").text                     # doctest: +SKIP
>>> chat.say("question.wav").wav                                  # a wav path when the reply is speech

Each turn: the user's text, or a wav file (encoded by the bundle's speech tokenizer into a speech
part), is appended to the :class:`~tokunify.chat.conversation.Conversation`; the chat template
renders the whole history plus the assistant header (:meth:`ChatTemplate.prompt`); the LM
generates until an end-of-turn id under the template's :class:`ReplyGrammar`; the reply's parts are
appended to the history; speech parts go through the bundle's vocoder to a wav in ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from tokunify.bundle import Bundle, BundleError
from tokunify.chat.conversation import Conversation, Message, Part, SpeechPart
from tokunify.chat.templates import ChatTemplate, ReplyGrammar, template_for
from tokunify.generate.generator import Generator

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_DECODING: dict[str, Any] = {"do_sample": True, "temperature": 0.7, "top_p": 0.95}


@dataclass
class Reply:
    """One assistant turn: its text, its speech parts (local ids) and their wav, when written."""

    content: list[Part]
    ids: list[int] = field(default_factory=list)  # generated global ids
    hit_limit: bool = False  # max_new_tokens reached before an end-of-turn id
    wav: Path | None = None

    @property
    def text(self) -> str:
        return "".join(p for p in self.content if isinstance(p, str)).strip()

    @property
    def speech(self) -> list[SpeechPart]:
        return [p for p in self.content if isinstance(p, SpeechPart)]


class _GrammarProcessor(LogitsProcessor):
    """Masks what the reply grammar forbids after each row's generated ids."""

    def __init__(self, grammar: ReplyGrammar, prompt_len: int):
        self.grammar, self.prompt_len = grammar, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # input_ids [B, prompt_len + n], scores [B, V_model] (V_model >= vocab.size)
        n = self.grammar.vocab.size
        for b, row in enumerate(input_ids[:, self.prompt_len :].tolist()):
            allowed = torch.from_numpy(self.grammar.allowed(self.grammar.prefix + row))
            scores[b, :n] = scores[b, :n].masked_fill(~allowed.to(scores.device), float("-inf"))
            scores[b, n:] = float("-inf")
        return scores


class ChatSession:
    """A conversation with a bundle (a path, a loaded :class:`Bundle` or a :class:`Generator`)."""

    def __init__(
        self,
        bundle_or_generator: str | Path | Bundle | Generator,
        system: str | None = None,
        template: str | ChatTemplate | None = None,
        out: str | Path | None = None,
        reply: str = "any",
        device: str = "cpu",
        max_new_tokens: int = 200,
        **decoding: Any,
    ):
        self.gen = (
            bundle_or_generator
            if isinstance(bundle_or_generator, Generator)
            else Generator(bundle_or_generator, device=device)
        )
        self.vocab, self.tokenizer = self.gen.vocab, self.gen.bundle.tokenizer
        self.template = (
            template
            if isinstance(template, ChatTemplate)
            else template_for(self.tokenizer, template)
        )
        self.grammar = self.template.reply_grammar(self.vocab, self.tokenizer, reply)
        self.out = Path(out) if out is not None else None
        self.decoding = {**DEFAULT_DECODING, "max_new_tokens": max_new_tokens, **decoding}
        self.conversation = Conversation([Message("system", system)] if system else [])
        self.prompts: list[np.ndarray] = []  # the prompt of every reply, for inspection
        self._wavs = 0

    # ---- one turn ------------------------------------------------------------------------------
    def user_part(self, turn: str | Path | np.ndarray | SpeechPart) -> Part:
        """A turn as a content part: a speech part for an audio file path or local ids, else text."""
        if isinstance(turn, SpeechPart):
            return turn
        if isinstance(turn, np.ndarray):
            return SpeechPart(self.gen.stream, turn)
        text = str(turn).strip()
        path = Path(text)
        if path.suffix.lower() in AUDIO_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such audio file")
            return SpeechPart(self.gen.stream, self.gen.encode_audio([path])[0])
        if not text:
            raise ValueError("empty turn: type some text or a wav path")
        return text

    def say(self, turn: str | Path | np.ndarray | SpeechPart) -> Reply:
        """Add a user turn, generate the assistant's reply, keep both in the history."""
        self.conversation.append("user", [self.user_part(turn)])
        reply = self.respond(self.conversation)
        self.conversation.append("assistant", reply.content)
        return reply

    @torch.inference_mode()
    def respond(self, conversation: Conversation) -> Reply:
        """Generate the assistant's next turn for any conversation (e.g. an instruction turn from
        :func:`~tokunify.chat.instructions.instruction_conversation`); the history is not changed."""
        prompt = np.concatenate(
            [
                self.template.prompt(self.vocab, self.tokenizer, conversation),
                self.grammar.prefix,
            ]
        ).astype(np.int64)
        self.prompts.append(prompt)
        ids = torch.as_tensor(prompt, device=self.gen.device)[None]  # [1, L]
        stops = self.template.stop_ids(self.vocab, self.tokenizer)
        out = self.gen.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            logits_processor=LogitsProcessorList([_GrammarProcessor(self.grammar, ids.shape[1])]),
            eos_token_id=stops,
            pad_token_id=self.vocab.pad,
            **self.decoding,
        )
        gen = out[0, ids.shape[1] :].tolist()
        hit = not any(t in stops for t in gen)
        if not hit:
            gen = gen[: next(k for k, t in enumerate(gen) if t in stops) + 1]
        content = self.template.parse_reply(self.vocab, self.tokenizer, self.grammar.prefix + gen)
        reply = Reply(content, gen, hit)
        if reply.speech:
            reply.wav = self._write_wav(reply.speech)
        return reply

    def _write_wav(self, parts: list[SpeechPart]) -> Path | None:
        """The reply's speech parts (of the session's stream) vocoded to one wav in ``out``."""
        units = [p.ids for p in parts if p.stream == self.gen.stream and p.frames > 0]
        if self.out is None or not units:
            return None
        try:
            audio = np.concatenate(self.gen.decode(units))
        except BundleError as e:
            raise BundleError(f"the reply is speech, but it cannot be vocoded: {e}") from None
        self.out.mkdir(parents=True, exist_ok=True)
        self._wavs += 1
        path = self.out / f"reply-{self._wavs:03d}.wav"
        sf.write(path, audio, self.gen.sample_rate)
        return path

    def reset(self) -> None:
        """Forget the history (keeps the system prompt)."""
        self.conversation.messages = [m for m in self.conversation.messages if m.role == "system"]
        self.prompts.clear()
