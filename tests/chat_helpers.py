"""Tiny tokenizers for the chat tests (a module of its own: `from conftest import` would pick up
whichever conftest module was imported last in a full run): byte-level BPE (lossless decode) with a model family's
special tokens and real chat template, extended with a tokunify vocab. Built here, no downloads."""

from __future__ import annotations

from typing import Any

from tokunify.core.vocab import UnifiedVocab, codec_stream, units_stream
from tokunify.data.store import TokenStore
from tokunify.tasks.conversation import Conversation, Message, SpeechPart

CORPUS = [
    "what does the speaker say",
    "transcribe the audio please",
    "the red cat sat on the mat",
    "repeat after me in english",
    "read this aloud for me",
    "you are a helpful assistant",
    "hello there how are you today",
    "system user assistant",
] * 4

# The chat templates as the models ship them (tokenizer_config.json "chat_template").
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
    "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
QWEN25 = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    '    {%- endif %}\n    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with '
    "the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML "
    'tags:\\n<tools>" }}\n    {%- for tool in tools %}\n        {{- "\\n" }}\n'
    '        {{- tool | tojson }}\n    {%- endfor %}\n    {{- "\\n</tools>\\n\\nFor each function '
    "call, return a json object with function name and arguments within <tool_call></tool_call> XML "
    'tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n'
    "</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You "
    "are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    '{%- for message in messages %}\n    {%- if (message.role == "user") or (message.role == '
    '"system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n            {{- tool_call.name }}\n'
    '            {{- \'", "arguments": \' }}\n            {{- tool_call.arguments | tojson }}\n'
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n        {%- if (loop.index0 == 0) or '
    "(messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role "
    "!= \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n"
    "{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

# family -> (chat template, special tokens, bos, eos)
FAMILIES: dict[str, tuple[str | None, list[str], str, str]] = {
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                        "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": (QWEN25, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|endoftext|>", "<|im_end|>"),
    "llama2": (LLAMA2, ["<s>", "</s>", "<unk>"], "<s>", "</s>"),
    "none": (None, ["<|endoftext|>"], "<|endoftext|>", "<|endoftext|>"),
}  # fmt: skip

UNITS_K = 12


def base_tokenizer(family: str) -> Any:
    """A byte-level BPE tokenizer with ``family``'s special tokens and chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    template, specials, bos, eos = FAMILIES[family]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=bos, eos_token=eos)
    if template is not None:
        tok.chat_template = template
    return tok


def build_tokenizer(family: str, streams: tuple = ("units",)) -> tuple[Any, UnifiedVocab]:
    """:func:`base_tokenizer` extended with a vocab of a 12-unit stream (and a 2 x 8 codec stream
    when asked)."""
    from tokunify.model.extend import add_vocab_tokens

    tok = base_tokenizer(family)
    specs = [units_stream("units", UNITS_K)]
    if "codec" in streams:
        specs.append(codec_stream("codec", 2, 8, layout="delay"))
    vocab = UnifiedVocab(text_size=len(tok), streams=tuple(specs))
    add_vocab_tokens(tok, vocab)
    return tok, vocab


def make_conversations(store: TokenStore) -> list[tuple[str, Conversation]]:
    """Two-turn conversations over the store's utterances: ASR, then TTS of the next one; every
    third conversation refers to its speech by record id instead of copying it."""
    recs = [store[i] for i in range(len(store))]
    out = []
    for k in range(0, len(recs) - 1, 2):
        a, b = recs[k], recs[k + 1]
        speech = (
            SpeechPart("units", ref=a.id) if k % 3 == 0 else SpeechPart("units", a.streams["units"])
        )
        conv = Conversation(
            [
                Message("user", ["what does the speaker say? ", speech]),
                Message("assistant", a.text),
                Message("user", f"read this aloud: {b.text}"),
                Message("assistant", [SpeechPart("units", b.streams["units"])]),
            ]
        )
        out.append((f"conv{k}", conv))
    return out
