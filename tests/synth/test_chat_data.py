"""make-chat-data: conversation stores from an utterance store and a text chat model built here
(a tiny HF Llama with a chat template, or a tokunify bundle); rejects, provenance, resume, chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokunify.cli import main
from tokunify.data.store import TokenStore

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MAX_NEW = 6
NO_TEXT = {"u1_2", "u4_0"}  # rows whose transcript the test store drops


@pytest.fixture(scope="module")
def chat_model(bpe_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer has a ChatML chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    out = tmp_path_factory.mktemp("chat-model")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gappy_store(speech_manifest, unit_tokenizer, sp_dir, tmp_path_factory) -> Path:
    """The session's espeak corpus with two transcripts removed."""
    root = tmp_path_factory.mktemp("gappy")
    rows = [json.loads(x) for x in speech_manifest.read_text().splitlines()]
    for r in rows:
        r["audio"] = str(speech_manifest.parent / r["audio"])
        if r["id"] in NO_TEXT:
            r.pop("text")
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["tokenize", str(root / "m.jsonl"), "--out", str(root / "store"), "--tokenizer", f"units={unit_tokenizer}",
            "--text-tokenizer", str(sp_dir), "--chunk-size", "6", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return root / "store"


def _answers(model_dir: Path, texts: list[str]) -> list[str]:
    """The chat model's greedy answers, one transcript at a time, straight through transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for t in texts:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        # Only ids and mask: some transformers versions' tokenizers add token_type_ids, which
        # generate() on a causal LM refuses.
        enc = tok(ids, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            g = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=MAX_NEW,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
        out.append(tok.decode(g[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return out


def _records(root: Path) -> dict:
    s = TokenStore(root)
    return {s[i].id: s[i] for i in range(len(s))}


def _assistant_turns(store: Path, out: Path) -> list:
    """(source record, conversation, assistant content) for each output record; each one comes
    from a source row that has a transcript."""
    from tokunify.tasks.conversation import Conversation

    src, got = _records(store), _records(out)
    assert got and set(got) <= set(src) - NO_TEXT
    turns = []
    for i, r in got.items():
        conv = Conversation.from_record(r)
        (assistant,) = [m for m in conv.messages if m.role == "assistant"]
        turns.append((src[i], conv, assistant.content))
    return turns


def _run(store: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["make-chat-data", str(store), "--model", str(model), "--out", str(out), "--max-new-tokens",
                 str(MAX_NEW), "--batch-size", "4", "--chunk-size", "4", "--no-progress", *extra])  # fmt: skip


def test_answer_mode_with_a_hf_chat_model(gappy_store, chat_model, tmp_path):
    from tokunify.tasks.conversation import Conversation, SpeechPart

    out = tmp_path / "chat"
    assert _run(gappy_store, chat_model, out, "--instruction", "answer the question") == 0
    src = _records(gappy_store)
    got = _records(out)
    rejects = [
        json.loads(x)
        for f in sorted(out.glob("rejects-*.jsonl"))
        for x in f.read_text().splitlines()
    ]
    assert {r["id"] for r in rejects} == NO_TEXT and {r["reason"] for r in rejects} == {
        "no transcript"
    }
    assert set(got) == set(src) - NO_TEXT
    ids = sorted(got)
    want = dict(zip(ids, _answers(chat_model, [src[i].text for i in ids]), strict=True))
    for i in ids:
        conv = Conversation.from_record(got[i])
        user, assistant = conv.messages
        assert user.role == "user" and user.text.strip() == "answer the question"
        (speech,) = user.speech
        assert isinstance(speech, SpeechPart) and speech.ref == i
        assert np.array_equal(speech.ids, src[i].streams["units"])
        assert (
            assistant.role == "assistant" and assistant.text == want[i]
        )  # batched == one at a time
        assert conv.meta["transcript"] == src[i].text and conv.meta["source"] == i
    prov = json.loads((out / "store.json").read_text())["provenance"]["chat_data"]
    assert (
        prov["model"] == str(chat_model)
        and prov["model_kind"] == "hf"
        and len(prov["model_hash"]) == 16
    )
    assert prov["settings"]["mode"] == "answer" and prov["settings"]["max_new_tokens"] == MAX_NEW
    assert prov["settings"]["instruction"] == "answer the question"


def test_second_run_skips_done_chunks_and_resumes_a_slice(
    gappy_store, chat_model, tmp_path, capsys
):
    whole = tmp_path / "whole"
    assert _run(gappy_store, chat_model, whole) == 0
    part = tmp_path / "part"
    assert _run(gappy_store, chat_model, part, "--shard", "0/2") == 0  # chunks 0, 2, 4 of 5
    done = {p.name: p.read_bytes() for p in part.glob("shard-*.parquet")}
    assert len(done) == 3
    with pytest.raises(Exception, match="incomplete"):
        TokenStore(part)
    capsys.readouterr()
    assert _run(gappy_store, chat_model, part) == 0  # the rest; done chunks are not redone
    summary = json.loads(next(x for x in capsys.readouterr().out.splitlines() if x.startswith("{")))
    assert summary["chunks_skipped"] == 3 and summary["chunks"] == 2
    assert {p.name: p.read_bytes() for p in part.glob("shard-*.parquet") if p.name in done} == done
    a, b = _records(whole), _records(part)
    assert set(a) == set(b)
    for i in a:
        assert a[i].meta == b[i].meta and np.array_equal(
            a[i].streams["units"], b[i].streams["units"]
        )
    # other settings on an existing store: refused, one line
    capsys.readouterr()
    assert _run(gappy_store, chat_model, part, "--max-new-tokens", "3") == 1
    err = capsys.readouterr().err
    assert (
        "made from other inputs or settings: provenance.chat_data.settings.max_new_tokens (6 -> 3)"
        in err
    )
    assert len(err.strip().splitlines()) == 1


def test_chain_mode_speaks_answers_with_the_bundle_tts(
    gappy_store, chat_model, voc_bundle, tmp_path
):
    out = tmp_path / "chain"
    assert (
        _run(
            gappy_store,
            chat_model,
            out,
            "--mode",
            "chain",
            "--tts-bundle",
            str(voc_bundle),
            "--tts-max-new-tokens",
            "16",
        )
        == 0
    )
    for source, conv, (text, speech) in _assistant_turns(gappy_store, out):
        assert text.startswith(f"[ta] {source.text} [ua] {conv.meta['answer']} [sa]")
        assert speech.ids.shape[-1] > 0
        assert conv.meta["answer_speech"] == "tts" or conv.meta["answer_speech"].startswith(
            "recording:"
        )
    prov = json.loads((out / "store.json").read_text())["provenance"]["chat_data"]
    assert prov["tts_bundle"] == str(voc_bundle) and prov["settings"]["mode"] == "chain"


def test_chain_mode_prefers_a_recording_of_the_answer(gappy_store, chat_model):
    """The spoken answer is the store's recording when its text is the answer: the record's own s2s
    pair first (u0_1 -> u1_1), then the same speaker (u4_0 and u2_0 are both en-us)."""
    from tokunify.synth.chat_data import ChatDataWorker, MakeChatDataArgs

    args = MakeChatDataArgs(
        store=str(gappy_store), model=str(chat_model), out="unused", mode="chain"
    )
    w = ChatDataWorker(args, "units", "cpu")
    src = _records(gappy_store)
    units, rid = w.recording(src["u0_1"], "  What is two PLUS three ")  # normalised match
    assert rid == "u1_1" and np.array_equal(units, src["u1_1"].streams["units"])
    # eval's normaliser: punctuation aside too ("Five." is a recording of "five")
    from tokunify.eval.generative import normalize

    assert w.recording(src["u0_1"], "What is two plus three?")[1] == "u1_1"
    assert w.recording(src["u0_1"], "what is two, plus three!")[1] == "u1_1"
    assert set(w.recordings()) == {normalize(r.text) for r in src.values() if r.text}
    units, rid = w.recording(
        src["u4_0"], "a big dog ran to the green house"
    )  # no pair: same speaker
    assert rid == "u2_0"
    assert w.recording(src["u0_1"], "no such sentence") is None
    # no TTS bundle: answers without a recording are rejects
    recs, rejects = w.process(0, [0, 1, 2])
    assert len(recs) + len(rejects) == 3
    assert rejects and {r.reason for r in rejects} <= {
        "no recording of the answer and no --tts-bundle",
        "the model's answer is empty",
    }


def test_chain_text_mode_writes_transcript_then_answer(gappy_store, chat_model, tmp_path):
    """chain_text: the assistant turn is one text, the transcript then the answer; no speech, no
    TTS needed, so every record with a transcript and a non-empty answer becomes a conversation."""
    out = tmp_path / "chain-text"
    assert _run(gappy_store, chat_model, out, "--mode", "chain_text") == 0
    for source, conv, (text,) in _assistant_turns(gappy_store, out):
        assert text == f"[ta] {source.text.strip()} [ua] {conv.meta['answer']}"
        assert conv.meta["mode"] == "chain_text"
    prov = json.loads((out / "store.json").read_text())["provenance"]["chat_data"]
    assert prov["settings"]["mode"] == "chain_text" and prov["tts_bundle"] is None


def test_a_bundle_as_the_text_model(gappy_store, voc_bundle, tmp_path):
    """A tokunify bundle answers through its chat template (the default one here)."""
    from tokunify.tasks.conversation import Conversation
    from tokunify.tasks.instructions import InstructionPool, fill

    out = tmp_path / "bundle-chat"
    assert _run(gappy_store, voc_bundle, out, "--instruction-task", "spoken_qa") == 0
    train = {fill(x) for x in InstructionPool.load().phrasings("spoken_qa", "train")}
    got = _records(out)
    rejects = [
        json.loads(x)
        for f in sorted(out.glob("rejects-*.jsonl"))
        for x in f.read_text().splitlines()
    ]
    assert len(got) + len(rejects) == len(_records(gappy_store))
    assert {r["reason"] for r in rejects} <= {"no transcript", "the model's answer is empty"}
    for r in got.values():
        conv = Conversation.from_record(r)
        assert conv.messages[-1].text and conv.messages[0].text.strip() in train
        assert conv.meta["instruction"] == conv.messages[0].text.strip()
    assert (
        json.loads((out / "store.json").read_text())["provenance"]["chat_data"]["model_kind"]
        == "bundle"
    )


def test_speech_alone_share_drops_the_instruction(gappy_store, chat_model, tmp_path):
    """--speech-alone p: about p of the conversations have the speech alone as the user turn
    (AudioChatLlama); the others keep the phrasing that --speech-alone 0 draws for the same record.
    --instruction-word-dropout drops words of that same phrasing, in order; --instruction-split
    draws from another split of the pool."""
    from tokunify.tasks.conversation import SpeechPart
    from tokunify.tasks.instructions import InstructionPool, fill

    runs = {}
    for p in ("0", "0.5", "1", "words", "dev"):
        out = tmp_path / f"alone-{p}"
        share = p if p[0].isdigit() else "0"
        args = ("--instruction-task", "spoken_qa", "--speech-alone", share)
        if p == "words":
            args += ("--instruction-word-dropout", "0.4")
        if p == "dev":
            args += ("--instruction-split", "dev")
        assert _run(gappy_store, chat_model, out, *args) == 0
        runs[p] = {}
        for source, conv, _ in _assistant_turns(gappy_store, out):
            (user,) = [m for m in conv.messages if m.role == "user"]
            assert any(isinstance(x, SpeechPart) for x in user.content)
            runs[p][source.id] = conv.meta.get("instruction")
    assert all(runs["0"].values()) and not any(runs["1"].values())
    half = runs["0.5"]
    assert set(half) == set(runs["0"])
    alone = [i for i, x in half.items() if x is None]
    assert 0 < len(alone) < len(half)  # 12 records: all or none would be p < 0.001
    assert all(half[i] == runs["0"][i] for i in half if half[i] is not None)
    dropped = runs["words"]
    assert set(dropped) == set(runs["0"]) and all(dropped.values())
    for i, x in dropped.items():
        full = iter(runs["0"][i].split())
        assert all(w in full for w in x.split())  # an ordered subsequence of the full phrasing
    assert sum(x != runs["0"][i] for i, x in dropped.items()) >= len(dropped) // 2
    dev = {fill(x) for x in InstructionPool.load().phrasings("spoken_qa", "dev")}
    assert set(runs["dev"]) == set(runs["0"]) and set(runs["dev"].values()) <= dev


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-template", "has no chat_template"),
        ("no-store", "store.json: missing"),
        ("both-instructions", "not both"),
        ("alone-without-pool", "--speech-alone"),
        ("dropout-without-pool", "--instruction-word-dropout"),
    ],
)
def test_bad_input_is_one_line(
    case, message, gappy_store, chat_model, bpe_tokenizer_dir, tmp_path, capsys
):
    model, store, extra = chat_model, gappy_store, []
    if case == "no-template":
        model = tmp_path / "plain"
        shutil.copytree(chat_model, model)
        cfg = json.loads((model / "tokenizer_config.json").read_text())
        cfg.pop("chat_template", None)
        (model / "tokenizer_config.json").write_text(json.dumps(cfg))
        for f in model.glob("chat_template.*"):
            f.unlink()
    elif case == "no-store":
        store = tmp_path / "nothing"
    elif case == "alone-without-pool":
        extra = ["--speech-alone", "0.5"]
    elif case == "dropout-without-pool":
        extra = ["--instruction-word-dropout", "0.2"]
    else:
        extra = ["--instruction", "x", "--instruction-task", "spoken_qa"]
    capsys.readouterr()
    assert _run(store, model, tmp_path / "o", *extra) == 1
    err = [
        x
        for x in capsys.readouterr().err.splitlines()
        if x.strip() and not x.startswith("Loading weights")
    ]
    assert (
        len(err) == 1
        and err[0].startswith("tokunify make-chat-data: error: ")
        and message in err[0]
    ), err
