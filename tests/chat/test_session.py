"""ChatSession and `tokunify chat`: multi-turn history, text and wav turns, speech replies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tokunify.chat.session import ChatSession
from tokunify.generate.decoding import Decoding
from tokunify.tasks.conversation import SpeechPart
from tokunify.tasks.instructions import InstructionPool, instruction_conversation
from tokunify.tasks.templates import DefaultTemplate

WAV = "wavs/u1_0.wav"  # in the speech_manifest fixture's directory


@pytest.fixture(scope="module")
def wav(speech_manifest) -> Path:
    return speech_manifest.parent / WAV


def test_history_is_kept_across_turns(voc_bundle, wav, tmp_path):
    chat = ChatSession(
        voc_bundle, system="be brief", out=tmp_path, decoding=Decoding.greedy_with(12)
    )
    r1 = chat.say("hello there")
    r2 = chat.say(str(wav))
    p1, p2 = chat.prompts
    assert len(p2) > len(p1) + len(r1.ids) and p2[: len(p1)].tolist() == p1.tolist()
    roles = [m.role for m in chat.conversation.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert chat.conversation.messages[3].speech[0].frames > 0  # the wav became a speech part
    # the second prompt holds the first exchange: parse it back (less the assistant header)
    t, v, tok = chat.template, chat.vocab, chat.tokenizer
    header = len(t.prompt(v, tok, type(chat.conversation)([])))
    earlier = t.parse(v, tok, p2[: len(p2) - header + 1])
    assert earlier.messages[1].text == "hello there"
    assert earlier.messages[3].speech == chat.conversation.messages[3].speech
    assert isinstance(t, DefaultTemplate)  # the bundle's SentencePiece tokenizer has no template
    assert r2.hit_limit or r2.ids[-1] in t.stop_ids(v, tok)


def test_speech_and_text_replies(voc_bundle, tmp_path):
    chat = ChatSession(
        voc_bundle, out=tmp_path, reply="speech", decoding=Decoding(max_new_tokens=30)
    )
    r = chat.say("read this aloud")
    assert r.speech and r.text == "" and r.wav is not None
    audio, sr = sf.read(r.wav)
    assert sr == chat.gen.sample_rate and audio.size > 0
    chat = ChatSession(
        voc_bundle, out=tmp_path / "t", reply="text", decoding=Decoding(max_new_tokens=10)
    )
    r = chat.say(np.array([1, 2, 3]))  # local unit ids are a speech turn too
    assert not r.speech and r.wav is None
    assert chat.conversation.messages[0].speech[0].ids.tolist() == [1, 2, 3]
    chat.reset()
    assert chat.conversation.messages == []
    # an instruction turn with a held-out phrasing, answered without touching the history
    pool = InstructionPool.load()
    ask = pool.sample("asr", "heldout", np.random.default_rng(0))
    r = chat.respond(instruction_conversation("asr", ask, SpeechPart("units", np.array([4, 5]))))
    assert not r.speech and chat.conversation.messages == []
    assert ask in chat.tokenizer.decode(chat.prompts[-1].tolist())


def test_bad_turn_is_refused(voc_bundle, tmp_path):
    chat = ChatSession(voc_bundle, out=tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        chat.say(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="empty turn"):
        chat.say("  ")


def test_cli_reads_turns_from_stdin(voc_bundle, wav, tmp_path):
    out = tmp_path / "chat"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "HF_HUB_OFFLINE": "1"}
    turns = f"hello there\n{tmp_path / 'nope.wav'}\n{wav}\n/quit\nnever read\n"
    cmd = [sys.executable, "-m", "tokunify", "chat", str(voc_bundle), "--system", "be brief"]
    cmd += ["--out", str(out), "--max-new-tokens", "12", "--reply", "speech"]
    p = subprocess.run(cmd, input=turns, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert sum(x.startswith("assistant:") for x in lines) == 2
    wavs = [Path(x.removeprefix("wav: ")) for x in lines if x.startswith("wav: ")]
    assert len(wavs) == 2 and all(w.is_file() for w in wavs)
    assert "nope.wav: no such audio file" in p.stderr  # a bad turn is reported, the session goes on
    history = json.loads((out / "conversation.json").read_text())["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user", "assistant"]
    assert history[1]["content"] == ["hello there"] and history[3]["content"][0]["frames"] > 0


def test_a_base_model_with_its_own_chat_template_chats(tmp_path):
    """A tiny Llama "instruct" model whose tokenizer ships the Llama-3 template, extended by
    `tokunify extend`: the bundle keeps the template and the session renders through it."""
    import torch
    from chat_helpers import base_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokunify.cli import main
    from tokunify.tasks.templates import Llama3Template

    base = tmp_path / "base"
    t = base_tokenizer("llama3")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(t), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(base)
    t.save_pretrained(base)
    assert main(["extend", str(base), "--units", "12", "--out", str(tmp_path / "bundle")]) == 0
    chat = ChatSession(tmp_path / "bundle", reply="speech", decoding=Decoding.greedy_with(10))
    assert isinstance(chat.template, Llama3Template)
    chat.say("hello there")
    r = chat.say(np.array([3, 4, 5]))
    text = chat.tokenizer.decode(chat.prompts[1].tolist())
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello there<|eot_id|>"
    )
    assert "<|units_start|><|units:3|><|units:4|><|units:5|><|units_end|><|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<|units_start|>")
    assert r.speech and all(p.stream == "units" for p in r.speech)  # opened by the grammar's prefix
