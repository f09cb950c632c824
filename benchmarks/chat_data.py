"""What conversations cost the training data path: packed tokens/s of the `chat` and `instruct_asr`
tasks next to the plain `asr` task on the same utterances.

- asr (baseline): task-tag sequences built from utterance records;
- instruct_asr: the same utterances as instruction chat turns (default template, pool phrasings);
- chat, default template: a store of two-turn conversations (ASR then TTS) over the utterances;
- chat, Llama-3 template: the same store rendered through the tokenizer's Jinja chat template
  (``apply_chat_template`` on growing prefixes for the loss spans, offsets for the mask).

Run: python benchmarks/chat_data.py [--utterances 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args()
    from _corpus import build_store

    from tokunify.core.vocab import UnifiedVocab, units_stream
    from tokunify.data.store import TokenStore
    from tokunify.model.extend import add_vocab_tokens
    from tokunify.tasks.conversation import (
        Conversation,
        Message,
        SpeechPart,
        write_conversation_store,
    )
    from tokunify.tokenizers.text import load_text_tokenizer
    from tokunify.train.config import DataConfig
    from tokunify.train.data import Formatter, RecordSource, TaskData

    work = Path(tempfile.mkdtemp())
    paths = build_store(work, n_utts=args.utterances, k=100)
    store = TokenStore(paths["store"])
    recs = [store[i] for i in range(len(store))]
    convs = [
        (f"c{k}", Conversation([
            Message("user", ["What does the speaker say? ", SpeechPart("units", a.streams["units"])]),
            Message("assistant", a.text),
            Message("user", f"Read this aloud: {b.text}"),
            Message("assistant", [SpeechPart("units", b.streams["units"])]),
        ]))
        for k, (a, b) in enumerate(zip(recs[::2], recs[1::2], strict=False))
    ]  # fmt: skip
    chat_root = write_conversation_store(work / "chat", convs, store.meta)

    def tokenizer(template: str | None):  # type: ignore[no-untyped-def]
        tok = load_text_tokenizer(paths["sp"])
        if template:
            tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>",
                                    "<|end_header_id|>", "<|eot_id|>"]})  # fmt: skip
            tok.chat_template = template
        vocab = UnifiedVocab(len(tok), (units_stream("units", 100),))
        add_vocab_tokens(tok, vocab)
        return tok, vocab

    rows = []
    cases = [
        ("asr (baseline)", "asr", paths["store"], None),
        ("instruct_asr, default template", "instruct_asr", paths["store"], None),
        ("chat, default template", "chat", chat_root, None),
        ("chat, Llama-3 template", "chat", chat_root, LLAMA3),
    ]
    for name, task, root, template in cases:
        tok, vocab = tokenizer(template)
        cfg = DataConfig(stores=[str(root)], seq_len=1024, eval_fraction=0, mixture={task: 1.0})
        data = TaskData(
            RecordSource([TokenStore(root)]), Formatter(vocab, tok, cfg, "units", 50.0), cfg, 0
        )
        data.next_batch(8)  # warm-up
        docs0, tokens = data.docs_seen, 0
        t0 = time.perf_counter()
        for _ in range(args.batches):
            tokens += data.next_batch(8).num_tokens
        dt = time.perf_counter() - t0
        rows.append((name, (data.docs_seen - docs0) / dt, tokens / dt))
    base = rows[0][2]
    print(f"\n{'data path':34s} {'docs/s':>9s} {'packed tokens/s':>16s} {'vs asr':>7s}")
    for name, docs, toks in rows:
        print(f"{name:34s} {docs:9.0f} {toks:16.0f} {toks / base:7.2f}")


if __name__ == "__main__":
    main()
