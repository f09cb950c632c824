"""A multi-turn chat with a bundle: the history is kept and re-rendered for every reply.

>>> chat = ChatSession("run/final", system="Answer briefly.")   # doctest: +SKIP
>>> chat.say("what is two plus three").text                     # doctest: +SKIP
>>> chat.say("question.wav").wav                                  # a wav path when the reply is speech

Each turn: the user's text, or a wav file (encoded by the bundle's speech tokenizer into a speech
part), is added to a copy of the :class:`~tokunify.tasks.conversation.Conversation`; the
:class:`~tokunify.chat.engine.ChatEngine` answers it (chat template, reply grammar, stop rule,
parse, vocoder); only then are the user turn and the reply appended to the history, so a refused
turn (a missing file, text holding special tokens) leaves the conversation as it was. Speech
replies are written as wavs in ``out``. Every reply is the engine's reply to the history with the
session's :class:`~tokunify.generate.decoding.Decoding` and ``seed``: what the same conversation
and seed get from the engine anywhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from tokunify.chat.engine import ChatEngine, Reply
from tokunify.generate.decoding import Decoding
from tokunify.generate.generator import Generator
from tokunify.model.bundle import Bundle
from tokunify.tasks.conversation import Conversation, Message, Part, SpeechPart
from tokunify.tasks.templates import ChatTemplate

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class ChatSession:
    """A conversation with a bundle (a path, a loaded :class:`Bundle`, a :class:`Generator` or a
    :class:`ChatEngine`). ``decoding``: default sampled at temperature 0.7 (0: greedy)."""

    def __init__(
        self,
        bundle: str | Path | Bundle | Generator | ChatEngine,
        system: str | None = None,
        template: str | ChatTemplate | None = None,
        out: str | Path | None = None,
        reply: str = "any",
        device: str = "cpu",
        decoding: Decoding | None = None,
        seed: int = 0,
    ):
        self.engine = (
            bundle
            if isinstance(bundle, ChatEngine)
            else ChatEngine(bundle, template=template, device=device)
        )
        self.gen, self.template = self.engine.gen, self.engine.template
        self.vocab, self.tokenizer = self.engine.vocab, self.engine.tokenizer
        self.reply_mode = reply
        self.grammar = self.engine.grammar(reply)  # refuses an unknown reply mode here
        self.out = Path(out) if out is not None else None
        self.decoding = decoding or Decoding()
        self.seed = seed
        self.conversation = Conversation([Message("system", system)] if system else [])
        self.prompts: list[np.ndarray] = []  # the prompt of every reply, for inspection
        self._wavs = 0

    # ---- one turn ------------------------------------------------------------------------------
    def user_part(self, turn: str | Path | np.ndarray | SpeechPart) -> Part:
        """A turn as a content part: a speech part for an audio file path or local ids, else text."""
        if isinstance(turn, SpeechPart):
            return turn
        if isinstance(turn, np.ndarray):
            return SpeechPart(self.engine.speech_stream, turn)
        text = str(turn).strip()
        path = Path(text)
        if path.suffix.lower() in AUDIO_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such audio file")
            return self.engine.encode_audio([path])[0]
        if not text:
            raise ValueError("empty turn: type some text or a wav path")
        return text

    def say(self, turn: str | Path | np.ndarray | SpeechPart) -> Reply:
        """Answer a user turn; the turn and the reply join the history only once answered (a
        refused turn raises and leaves the history unchanged)."""
        user = Message("user", [self.user_part(turn)])
        trial = Conversation([*self.conversation.messages, user], dict(self.conversation.meta))
        reply = self.respond(trial)
        self.conversation.messages.append(user)
        self.conversation.append("assistant", reply.content)
        return reply

    def respond(self, conversation: Conversation) -> Reply:
        """The engine's next assistant turn for any conversation (e.g. an instruction turn from
        :func:`~tokunify.tasks.instructions.instruction_conversation`); the history is not changed."""
        reply = self.engine.reply(
            [conversation], self.decoding, self.seed, self.reply_mode, vocode=self.out is not None
        )[0]
        self.prompts.append(reply.prompt)
        if reply.audio is not None:
            reply.wav = self._write_wav(reply.audio)
        return reply

    def _write_wav(self, audio: np.ndarray) -> Path:
        """A reply's audio as the next wav in ``out`` (set: replies are vocoded only then)."""
        out = Path(self.out or ".")
        out.mkdir(parents=True, exist_ok=True)
        self._wavs += 1
        path = out / f"reply-{self._wavs:03d}.wav"
        sf.write(path, audio, self.gen.sample_rate)
        return path

    def reset(self) -> None:
        """Forget the history (keeps the system prompt)."""
        self.conversation.messages = [m for m in self.conversation.messages if m.role == "system"]
        self.prompts.clear()
