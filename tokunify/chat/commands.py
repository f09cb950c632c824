"""``tokunify chat BUNDLE``: an interactive multi-turn session on stdin/stdout."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

from tokunify.chat.session import ChatSession
from tokunify.core.fsio import atomic_write_text
from tokunify.generate.decoding import Decoding
from tokunify.tasks.conversation import Conversation, SpeechPart

if TYPE_CHECKING:
    from tokunify.generate.decoding import Decoding


@dataclass
class ChatArgs:
    """Chat with a bundle: each line on stdin is a turn (typed text, or the path of a wav file);
    text replies are printed, speech replies written as wavs (their paths printed). /reset forgets
    the history, /quit (or end of input) ends the session."""

    bundle: str = field(metadata={"positional": True})
    """Bundle directory."""
    system: str = ""
    """System prompt (first message of the conversation)."""
    out: str = "chat"
    """Directory for reply wavs and conversation.json (the history, rewritten after every turn)."""
    reply: Literal["any", "text", "speech"] = "any"
    """Reply modality: any (the model chooses), text, or speech."""
    template: str = ""
    """Chat template: "" = the bundle tokenizer's own, else default (or a registered name)."""
    device: str = "cpu"
    """Device."""
    max_new_tokens: int = 200
    """Length limit of a reply."""
    temperature: float = 0.7
    """Sampling temperature (0: greedy)."""
    seed: int = 0
    """Sampling seed: every reply is the same for the same conversation and seed."""


def conversation_json(conv: Conversation) -> dict[str, Any]:
    """The history as JSON: text parts as strings, speech parts as their stream and frames."""

    def part(p: Any) -> Any:
        if isinstance(p, SpeechPart):
            return {"speech": p.stream, "frames": p.frames, "ids": p.ids.tolist()}
        return p

    return {
        "messages": [
            {"role": m.role, "content": [part(p) for p in m.content]} for m in conv.messages
        ]
    }


def chat_decoding(args: ChatArgs) -> Decoding:
    """The session's :class:`~tokunify.generate.decoding.Decoding` from the arguments."""

    return Decoding(temperature=args.temperature, max_new_tokens=args.max_new_tokens)


def run_chat(args: ChatArgs, stdin: TextIO | None = None) -> int:

    stdin = stdin or sys.stdin
    session = ChatSession(
        args.bundle, system=args.system or None, template=args.template or None, out=args.out,
        reply=args.reply, device=args.device, decoding=chat_decoding(args), seed=args.seed,
    )  # fmt: skip
    interactive = stdin.isatty()
    history = session.out / "conversation.json"
    print(
        f"chat with {args.bundle} (template {session.template.name}); /reset, /quit",
        file=sys.stderr,
    )
    turns = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            break
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            session.reset()
            print("(history cleared)")
            continue
        try:
            reply = session.say(line)
        except (ValueError, FileNotFoundError) as e:  # refused turn: say why, history unchanged
            print(f"error: {e}", file=sys.stderr)
            continue
        turns += 1
        print(
            f"assistant: {reply.text}" + (" [cut at --max-new-tokens]" if reply.hit_limit else "")
        )
        if reply.wav is not None:
            print(f"wav: {reply.wav}")
        session.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(history, json.dumps(conversation_json(session.conversation)) + "\n")
    print(f"{turns} turns; history in {history}", file=sys.stderr)
    return 0
