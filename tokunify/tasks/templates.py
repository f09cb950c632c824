"""Chat templates: a :class:`~tokunify.tasks.conversation.Conversation` <-> ``(ids, loss_mask)``.

Two kinds, each a registered :class:`ChatTemplate`:

- **The base model's own template** (:class:`JinjaTemplate`), when the text tokenizer has a
  ``chat_template`` (Llama-3, Qwen2.5, Llama-2-chat, ...). Rendering goes through
  ``tokenizer.apply_chat_template``; a speech part is spliced into the message text as its token
  strings between the stream's markers (``<|units_start|><|units:3|><|units:7|><|units_end|>``),
  which the extended tokenizer maps back to exactly those ids. The loss mask covers the character
  spans of the chosen roles' turns, found by rendering growing prefixes of the conversation (the
  assistant span starts after the generation prompt, so it holds the reply and its end-of-turn
  token). Parsing needs to know the template's turn syntax: one subclass per template family,
  picked by :meth:`ChatTemplate.detect` on the Jinja source.
- **The default template** (``default``) for from-scratch bundles, built from the vocab's own
  structural tokens::

      <|bos|> [<|task:T|>]  TURN ... TURN
      TURN := <|text_start|> ROLE <|text_end|> SEGMENT ... SEGMENT <|eos|>

  ``ROLE`` is the text ids of ``system``, ``user`` or ``assistant``; a ``SEGMENT`` is a text segment
  or a speech segment exactly as in the task grammar of :mod:`tokunify.tasks`. ``<|eos|>`` ends
  every turn, so generation of an assistant turn stops there. The optional task tag comes from
  ``conversation.meta["task"]`` when the vocab knows that tag (instruction data can keep its task
  tag, or drop it: :attr:`DefaultTemplate.task_tag`). Example, user ``["hi ", units [3, 7]]`` and
  assistant ``"ok"`` (``T:...`` are text ids, ``u:i`` unit ``i``)::

      ids  bos ts T:user te ts T:hi te us u:3 u:7 ue eos ts T:assistant te ts T:ok te eos
      mask 0   0  0      0  0  0    0  0  0   0   0  0   0  0           0  1  1    1  1

Round trip: ``parse(render(conv)) == conv`` when the text tokenizer decodes what it encodes (a
byte-level BPE does; SentencePiece may normalise spaces) and message texts have no leading or
trailing spaces (Llama templates trim them).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tokunify.core.vocab import MARKER, TASK, TEXT, UnifiedVocab
from tokunify.tasks.base import FormatError, encode_segment, parse_stream_body
from tokunify.tasks.conversation import ROLES, Conversation, Message, Part, SpeechPart
from tokunify.tasks.reply import REPLY_MODES, ReplyGrammar, base_special_ids

LossOn = Sequence[str]
DEFAULT_LOSS_ON: tuple[str, ...] = ("assistant",)

# Speech spans are cut out before decoding and stand in the decoded text as these sentinels
# (Unicode private-use characters, which no template or tokenizer emits).
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def _sentinel(i: int) -> str:
    return f"\ue000{i}\ue001"


def _tokenizer_of(x: Any) -> Any:
    """A bundle, a generator (``.bundle``) or a tokenizer -> the text tokenizer."""
    if hasattr(x, "bundle"):
        x = x.bundle
    return getattr(x, "tokenizer", x)


def decode_text(tokenizer: Any, ids: list[int], skip_special: bool = False) -> str:
    """Text of ids exactly as the tokenizer decodes them (no clean-up of spaces before punctuation,
    which transformers 4.x applies by default for some tokenizers)."""
    return tokenizer.decode(
        ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False
    )


def _check_loss_on(loss_on: LossOn) -> tuple[str, ...]:
    bad = [r for r in loss_on if r not in ROLES]
    if bad:
        raise FormatError(f"loss_on: unknown roles {bad}; roles are {ROLES}")
    return tuple(loss_on)


def _resolved(conv: Conversation) -> None:
    refs = conv.refs()
    if refs:
        raise FormatError(
            f"conversation has unresolved speech references {refs[:3]}; call Conversation.resolve first"
        )


def refuse_special_text(
    vocab: UnifiedVocab,
    tokenizer: Any,
    text: str,
    ids: np.ndarray | None = None,
    markup: Sequence[str] = (),
) -> None:
    """Refuse typed text that holds a special-token string of the base tokenizer (``<|im_end|>``,
    ``<|eot_id|>``, ``</s>``, ...), a token string of the unified vocab (``<|eos|>``,
    ``<|units:3|>``, ...) or a template's plain-text turn syntax (``markup``, e.g. ``[INST]``):
    rendered, such text would become extra turns or speech. Raises :class:`FormatError` naming the
    token. ``ids``: the text's ids when the caller has encoded it already."""
    if ids is None:
        ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and ids.max() >= vocab.text_size:
        tok = tokenizer.convert_ids_to_tokens(int(ids[ids >= vocab.text_size][0]))
        raise FormatError(
            f"text {text[:40]!r} holds {tok!r}, a token of the speech vocabulary; it cannot be "
            "typed (speech comes as audio)"
        )
    # the base tokenizer's special tokens are what it stops splitting out when asked to (cheaper
    # than its table of added tokens, which holds every unit token of an extended tokenizer)
    plain = set(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    named = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # unk: an unknown character
    for i in ids.tolist():
        if i not in plain or i in named:
            raise FormatError(
                f"text {text[:40]!r} holds {tokenizer.convert_ids_to_tokens(i)!r}, a special "
                "token of the base tokenizer; it cannot be typed"
            )
    for m in markup:
        if m in text:
            raise FormatError(
                f"text {text[:40]!r} holds {m!r}, turn syntax of the chat template; it cannot be typed"
            )


def _speech_spans(vocab: UnifiedVocab, ids: np.ndarray) -> list[tuple[int, int, str]]:
    """``(start, stop, stream)`` of every ``<|s_start|> ... <|s_end|>`` span (stop after the end
    marker; an unclosed span runs to the end of ``ids``)."""
    starts = {vocab.stream_start(s.name): s.name for s in vocab.streams}
    kinds = vocab.modality_of(ids) if ids.size else np.zeros(0, np.int16)
    out = []
    i = 0
    while i < len(ids):
        name = starts.get(int(ids[i]))
        if name is None:
            i += 1
            continue
        end = vocab.stream_end(name)
        rest = np.flatnonzero(kinds[i + 1 :] == MARKER)
        j = i + 1 + int(rest[0]) if rest.size else len(ids)
        stop = j + 1 if j < len(ids) and int(ids[j]) == end else j
        out.append((i, stop, name))
        i = stop
    return out


def _speech_part(vocab: UnifiedVocab, ids: np.ndarray, a: int, b: int, stream: str) -> SpeechPart:
    body = ids[a + 1 : b - 1] if int(ids[b - 1]) == vocab.stream_end(stream) else ids[a + 1 : b]
    try:
        return SpeechPart(stream, parse_stream_body(vocab, stream, body))
    except ValueError as e:
        raise FormatError(f"speech span at position {a}: {e}") from e


class ChatTemplate(ABC):
    """Conversation <-> ids for one template. Subclasses are registered by :attr:`name`."""

    name: ClassVar[str]

    @classmethod
    def detect(cls, chat_template: str) -> bool:
        """Whether a tokenizer's Jinja ``chat_template`` is this template's family."""
        return False

    @abstractmethod
    def render(
        self,
        vocab: UnifiedVocab,
        tokenizer: Any,
        conv: Conversation,
        loss_on: LossOn = DEFAULT_LOSS_ON,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [L] int64, loss_mask [L] bool)``: the whole conversation, loss on ``loss_on`` turns."""

    @abstractmethod
    def prompt(self, vocab: UnifiedVocab, tokenizer: Any, conv: Conversation) -> np.ndarray:
        """``[L]`` int64: the conversation so far plus the assistant's turn header, for generation."""

    @abstractmethod
    def parse(
        self, vocab: UnifiedVocab, tokenizer: Any, ids: Sequence[int] | np.ndarray
    ) -> Conversation:
        """The conversation back from rendered ids."""

    @abstractmethod
    def stop_ids(self, vocab: UnifiedVocab, tokenizer: Any) -> list[int]:
        """Ids that end an assistant turn (generation stops at the first)."""

    @abstractmethod
    def parse_reply(
        self, vocab: UnifiedVocab, tokenizer: Any, ids: Sequence[int] | np.ndarray
    ) -> list[Part]:
        """Content parts of a generated assistant turn (what follows :meth:`prompt`), tolerating a
        turn cut by the length limit."""

    def reply_grammar(
        self, vocab: UnifiedVocab, tokenizer: Any, reply: str = "any"
    ) -> ReplyGrammar:
        """What a generated assistant turn may contain (see :class:`ReplyGrammar`); free text
        with speech spliced in, as the model's own template allows."""
        return ReplyGrammar(
            vocab, reply, self.stop_ids(vocab, tokenizer), structured=False,
            banned=base_special_ids(vocab, tokenizer),
        )  # fmt: skip


# ---- the default template ------------------------------------------------------------------
class DefaultTemplate(ChatTemplate):
    """The documented default (module docstring) for tokenizers without a chat template."""

    name = "default"

    def __init__(self, task_tag: bool = True):
        self.task_tag = task_tag
        """Put ``<|task:T|>`` after ``<|bos|>`` when ``conv.meta["task"]`` is a tag of the vocab."""

    def _text(self, vocab: UnifiedVocab, tokenizer: Any, text: str) -> np.ndarray:
        ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
        refuse_special_text(vocab, tokenizer, text, ids)
        return ids

    def _header(self, vocab: UnifiedVocab, tokenizer: Any, role: str) -> np.ndarray:
        return encode_segment(vocab, "text", self._text(vocab, tokenizer, role))

    def _head(self, vocab: UnifiedVocab, conv: Conversation) -> np.ndarray:
        task = conv.meta.get("task")
        if self.task_tag and isinstance(task, str) and task in vocab.tasks:
            return vocab.prefix(task)
        return np.array([vocab.bos], dtype=np.int64)

    def _content(self, vocab: UnifiedVocab, tokenizer: Any, m: Message) -> np.ndarray:
        segs = [
            encode_segment(vocab, "text", self._text(vocab, tokenizer, p))
            if isinstance(p, str)
            else encode_segment(vocab, p.stream, p.ids)
            for p in m.content
        ]
        return np.concatenate(segs) if segs else np.zeros(0, np.int64)

    def render(self, vocab, tokenizer, conv, loss_on=DEFAULT_LOSS_ON):
        loss_on = _check_loss_on(loss_on)
        _resolved(conv)
        head = self._head(vocab, conv)
        parts, masks = [head], [np.zeros(len(head), bool)]
        for m in conv.messages:
            header = self._header(vocab, tokenizer, m.role)
            body = np.append(self._content(vocab, tokenizer, m), vocab.eos)
            parts += [header, body]
            masks += [np.zeros(len(header), bool), np.full(len(body), m.role in loss_on)]
        return np.concatenate(parts).astype(np.int64), np.concatenate(masks)

    def prompt(self, vocab, tokenizer, conv):
        ids, _ = self.render(vocab, tokenizer, conv)
        return np.concatenate([ids, self._header(vocab, tokenizer, "assistant")])

    def stop_ids(self, vocab, tokenizer):
        return [vocab.eos]

    def reply_grammar(self, vocab, tokenizer, reply="any"):
        return ReplyGrammar(
            vocab, reply, [vocab.eos], structured=True, banned=base_special_ids(vocab, tokenizer)
        )

    def _segments(
        self, vocab: UnifiedVocab, tokenizer: Any, ids: np.ndarray, i: int, strict: bool
    ) -> tuple[list[tuple[str, np.ndarray | SpeechPart]], int]:
        """Segments from position ``i`` up to the turn's ``<|eos|>``; returns them and the position
        after the ``<|eos|>`` (or the end)."""
        starts = {vocab.stream_start(s.name): s.name for s in vocab.streams}
        out: list[tuple[str, Any]] = []
        kinds = vocab.modality_of(ids) if ids.size else np.zeros(0, np.int16)
        n = len(ids)
        while i < n:
            tok = int(ids[i])
            if tok == vocab.eos:
                return out, i + 1
            if tok == vocab.text_start:
                j = i + 1
                while j < n and kinds[j] == TEXT:
                    j += 1
                out.append(("text", ids[i + 1 : j]))
                closed = j < n and int(ids[j]) == vocab.text_end
                if strict and not closed:
                    raise FormatError(f"position {j}: text segment not closed by <|text_end|>")
                i = j + 1 if closed else j
                continue
            if tok in starts:
                b = i + 1 + _span_len(vocab, ids, i)  # stop after the end marker
                try:
                    out.append((starts[tok], _speech_part(vocab, ids, i, b, starts[tok])))
                except FormatError:
                    if strict:
                        raise
                i = b  # a generated speech span that does not parse is dropped
                continue
            if strict:
                raise FormatError(
                    f"position {i}: expected a segment start or <|eos|>, got id {tok}"
                )
            i += 1  # a generated id outside any segment: skipped
        if strict:
            raise FormatError("conversation ends inside a turn (no <|eos|>)")
        return out, n

    def _parts(self, tokenizer: Any, segs: list[tuple[str, Any]]) -> list[Part]:
        return [decode_text(tokenizer, x.tolist(), False) if m == "text" else x for m, x in segs]

    def parse(self, vocab, tokenizer, ids):
        ids = np.asarray(ids, dtype=np.int64)
        i, meta = 0, {}
        if i < len(ids) and int(ids[i]) == vocab.bos:
            i += 1
        if i < len(ids) and vocab.modality_of(ids[i : i + 1])[0] == TASK:
            meta["task"] = vocab.task_name(int(ids[i]))
            i += 1
        messages = []
        while i < len(ids):
            segs, i = self._segments(vocab, tokenizer, ids, i, strict=True)
            if not segs or segs[0][0] != "text":
                raise FormatError(
                    f"a turn must start with its role as a text segment (before position {i})"
                )
            role = decode_text(tokenizer, segs[0][1].tolist(), False).strip()
            if role not in ROLES:
                raise FormatError(f"turn header {role!r} is not a role {ROLES}")
            messages.append(Message(role, self._parts(tokenizer, segs[1:])))
        return Conversation(messages, meta)

    def parse_reply(self, vocab, tokenizer, ids):
        segs, _ = self._segments(vocab, tokenizer, np.asarray(ids, dtype=np.int64), 0, strict=False)
        return Message("assistant", self._parts(tokenizer, segs)).content


def _span_len(vocab: UnifiedVocab, ids: np.ndarray, i: int) -> int:
    """Length (after position ``i``) of the speech span starting at ``i``: up to its end marker."""
    kinds = vocab.modality_of(ids[i + 1 :]) if i + 1 < len(ids) else np.zeros(0, np.int16)
    rest = np.flatnonzero(kinds == MARKER)
    return int(rest[0]) + 1 if rest.size else len(ids) - i - 1


# ---- the base model's own (Jinja) template -------------------------------------------------
class JinjaTemplate(ChatTemplate):
    """A tokenizer's own ``chat_template``, rendered by ``apply_chat_template``. Subclasses know a
    family's turn syntax for :meth:`parse`; this base renders any template and refuses to parse."""

    name = "jinja"
    end_of_turn: ClassVar[str | None] = None
    """Token string that ends an assistant turn (None: the tokenizer's eos token)."""
    markup: ClassVar[tuple[str, ...]] = ()
    """The family's turn syntax that is plain text, not special tokens (refused in typed text)."""

    # ---- rendering ----
    def _message_dicts(
        self, vocab: UnifiedVocab, tokenizer: Any, conv: Conversation
    ) -> list[dict[str, str]]:
        out = []
        for m in conv.messages:
            for p in m.content:
                if isinstance(p, str):
                    refuse_special_text(vocab, tokenizer, p, markup=self.markup)
            text = "".join(
                p if isinstance(p, str) else self._speech_text(vocab, tokenizer, p)
                for p in m.content
            )
            out.append({"role": m.role, "content": text})
        return out

    def _speech_text(self, vocab: UnifiedVocab, tokenizer: Any, p: SpeechPart) -> str:
        return "".join(
            tokenizer.convert_ids_to_tokens(encode_segment(vocab, p.stream, p.ids).tolist())
        )

    def _apply(self, tokenizer: Any, msgs: list[dict[str, str]], gen: bool) -> str:
        if not msgs:
            return ""
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    def _encode(self, tokenizer: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        return ids, offsets

    def render(self, vocab, tokenizer, conv, loss_on=DEFAULT_LOSS_ON):
        # transformers' own mask (apply_chat_template(return_assistant_tokens_mask=True)) needs
        # {% generation %} markers that the shipped Llama/Qwen templates do not have; rendering
        # growing prefixes works with any template that renders a conversation left to right.
        loss_on = _check_loss_on(loss_on)
        _resolved(conv)
        msgs = self._message_dicts(vocab, tokenizer, conv)
        full = self._apply(tokenizer, msgs, False)
        spans = []
        for k, m in enumerate(conv.messages):
            if m.role not in loss_on:
                continue
            before = self._apply(tokenizer, msgs[:k], m.role == "assistant")
            upto = self._apply(tokenizer, msgs[: k + 1], False)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise FormatError(
                    f"chat template {self.name!r}: rendering message {k} does not extend the rendering "
                    "of the messages before it, so its loss span cannot be found"
                )
            spans.append((len(before), len(upto)))
        ids, offsets = self._encode(tokenizer, full)
        mask = np.zeros(len(ids), dtype=bool)
        for a, b in spans:
            mask |= (offsets[:, 0] >= a) & (offsets[:, 1] <= b) & (offsets[:, 1] > offsets[:, 0])
        return ids, mask

    def prompt(self, vocab, tokenizer, conv):
        _resolved(conv)
        text = self._apply(tokenizer, self._message_dicts(vocab, tokenizer, conv), True)
        return self._encode(tokenizer, text)[0]

    def stop_ids(self, vocab, tokenizer):
        tok = self.end_of_turn or tokenizer.eos_token
        vocab_of = tokenizer.get_vocab()
        if tok and tok not in vocab_of:
            raise FormatError(f"chat template {self.name!r}: the tokenizer has no {tok!r} token")
        out = [int(vocab_of[tok])] if tok else []
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in out:
            out.append(int(tokenizer.eos_token_id))
        if not out:
            raise FormatError(f"chat template {self.name!r}: no end-of-turn or eos token")
        return out

    # ---- parsing ----
    def _decode_with_sentinels(
        self, vocab: UnifiedVocab, tokenizer: Any, ids: np.ndarray, strict: bool = True
    ) -> tuple[str, list[SpeechPart]]:
        """Decoded text with each speech span replaced by a sentinel, and the spans' parts (not
        ``strict``: a span that does not parse is dropped)."""
        pieces, speech, i = [], [], 0
        for a, b, s in _speech_spans(vocab, ids):
            pieces.append(decode_text(tokenizer, ids[i:a].tolist(), False))
            try:
                part = _speech_part(vocab, ids, a, b, s)
            except FormatError:
                if strict:
                    raise
            else:
                pieces.append(_sentinel(len(speech)))
                speech.append(part)
            i = b
        pieces.append(decode_text(tokenizer, ids[i:].tolist(), False))
        return "".join(pieces), speech

    @staticmethod
    def _content(text: str, speech: list[SpeechPart]) -> list[Part]:
        out: list[Part] = []
        pos = 0
        for m in _SENTINEL.finditer(text):
            out.append(text[pos : m.start()])
            out.append(speech[int(m.group(1))])
            pos = m.end()
        out.append(text[pos:])
        return out

    def turns(self, tokenizer: Any, text: str) -> list[tuple[str, str]]:
        """``(role, content)`` of every turn of a rendered conversation (family specific: Jinja
        templates only render, and no library parses their output back, hence one small regex
        per family)."""
        raise FormatError(
            "this tokenizer's chat template has no registered parser (known families: "
            f"{[n for n, t in TEMPLATES.items() if isinstance(t, JinjaTemplate) and type(t) is not JinjaTemplate]})"
        )

    def parse(self, vocab, tokenizer, ids):
        text, speech = self._decode_with_sentinels(
            vocab, tokenizer, np.asarray(ids, dtype=np.int64)
        )
        return Conversation(
            [Message(r, self._content(c, speech)) for r, c in self.turns(tokenizer, text)]
        )

    def parse_reply(self, vocab, tokenizer, ids):
        ids = np.asarray(ids, dtype=np.int64)
        stops = set(self.stop_ids(vocab, tokenizer))
        cut = next((k for k, t in enumerate(ids.tolist()) if t in stops), len(ids))
        text, speech = self._decode_with_sentinels(vocab, tokenizer, ids[:cut], strict=False)
        return Message("assistant", self._content(text.strip(), speech)).content


def _tok(tokenizer: Any, attr: str) -> str:
    return re.escape(getattr(tokenizer, attr) or "")


class Llama3Template(JinjaTemplate):
    """Llama-3 instruct: ``<|start_header_id|>ROLE<|end_header_id|>\\n\\nCONTENT<|eot_id|>``."""

    name = "llama3"
    end_of_turn = "<|eot_id|>"

    @classmethod
    def detect(cls, chat_template):
        return "<|start_header_id|>" in chat_template and "<|eot_id|>" in chat_template

    def turns(self, tokenizer, text):
        pat = re.compile(
            r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S
        )
        return [(m.group(1), m.group(2)) for m in pat.finditer(text)]


class ChatMLTemplate(JinjaTemplate):
    """ChatML (Qwen2.5, Qwen-Audio): ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``."""

    name = "chatml"
    end_of_turn = "<|im_end|>"

    @classmethod
    def detect(cls, chat_template):
        return "<|im_start|>" in chat_template and "<|im_end|>" in chat_template

    def turns(self, tokenizer, text):
        pat = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.S)
        return [(m.group(1), m.group(2)) for m in pat.finditer(text)]


class Llama2Template(JinjaTemplate):
    """Llama-2-chat (AudioChatLlama's prompt): ``<s>[INST] <<SYS>>\\nS\\n<</SYS>>\\n\\nU [/INST] A </s>``."""

    name = "llama2"
    markup = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")

    @classmethod
    def detect(cls, chat_template):
        return "[INST]" in chat_template and "<<SYS>>" in chat_template

    def turns(self, tokenizer, text):
        bos, eos = _tok(tokenizer, "bos_token"), _tok(tokenizer, "eos_token")
        pat = re.compile(rf"(?:{bos})?\[INST\] (.*?) \[/INST\](?: (.*?) {eos})?", re.S)
        out: list[tuple[str, str]] = []
        for m in pat.finditer(text):
            user = m.group(1)
            if not out:
                sys_m = re.match(r"<<SYS>>\n(.*?)\n<</SYS>>\n\n(.*)", user, re.S)
                if sys_m:
                    out.append(("system", sys_m.group(1)))
                    user = sys_m.group(2)
            out.append(("user", user))
            if m.group(2) is not None:
                out.append(("assistant", m.group(2)))
        return out


TEMPLATES: dict[str, ChatTemplate] = {}
"""Registered chat templates by name; change through :func:`register_template`."""


def register_template(template: ChatTemplate) -> ChatTemplate:
    """Register a template object under its ``name``."""
    if template.name in TEMPLATES and type(TEMPLATES[template.name]) is not type(template):
        raise FormatError(f"chat template {template.name!r} is already registered")
    TEMPLATES[template.name] = template
    return template


for _t in (
    DefaultTemplate(),
    JinjaTemplate(),
    Llama3Template(),
    ChatMLTemplate(),
    Llama2Template(),
):
    register_template(_t)


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise FormatError(f"unknown chat template {name!r}; known: {sorted(TEMPLATES)}") from None


def template_for(bundle_or_tokenizer: Any, name: str | None = None) -> ChatTemplate:
    """The chat template of a bundle, generator or tokenizer: ``name`` when given; else the family
    of the tokenizer's own ``chat_template`` (a generic :class:`JinjaTemplate` that renders but
    cannot parse when no family matches); else ``default``."""
    if name:
        return get_template(name)
    source = getattr(_tokenizer_of(bundle_or_tokenizer), "chat_template", None)
    if not source or not isinstance(source, str):
        return TEMPLATES["default"]
    for t in TEMPLATES.values():
        if type(t).detect(source):
            return t
    return TEMPLATES["jinja"]


__all__ = [
    "DEFAULT_LOSS_ON",
    "REPLY_MODES",
    "TEMPLATES",
    "ChatMLTemplate",
    "ChatTemplate",
    "DefaultTemplate",
    "JinjaTemplate",
    "Llama2Template",
    "Llama3Template",
    "ReplyGrammar",
    "decode_text",
    "get_template",
    "refuse_special_text",
    "register_template",
    "template_for",
]
