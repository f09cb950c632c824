"""`demo --instruct --quick` end to end: metric keys and ranges, held-out voices and phrasings."""

from __future__ import annotations

import json
import math

from tokunify.cli import main


def _rate(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_quick_instruct_demo(tmp_path):
    from tokunify.data.corpus.synth import TRAIN_VOICES
    from tokunify.data.store import TokenStore
    from tokunify.demos.instruct import (
        FEWSHOT_K,
        HELDOUT_VOICES,
        MODAL_MODE,
        QUESTION_VOICES,
        SPEECH_ALONE,
    )
    from tokunify.tasks.instructions import InstructionPool, fill

    out = tmp_path / "instruct"
    assert main(["demo", "--instruct", "--quick", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in ("chat_spoken_qa_acc", "chat_modal_agreement", "chat_typed_qa_acc",
              "chat_spoken_qa_acc_no_instruction"):  # fmt: skip
        assert _rate(m[k]), k
    assert m["n_qa_questions"] == 9
    assert m["qa_heldout_asr"]["wer"] >= 0 and _rate(m["qa_heldout_asr"]["exact"])
    assert _rate(m["chat_spoken_transcribed_instead"])
    by = m["chat_spoken_qa_by_phrasing"]
    assert sum(v["n"] for v in by.values()) == 9 and all(_rate(v["acc"]) for v in by.values())
    for task in ("asr", "tts"):
        r = m["instruct_unseen_phrasing"][task]
        assert (
            r["instruction_wer"] >= 0
            and r["tag_wer"] >= 0
            and r["ratio"] >= 0
            and not math.isnan(r["ratio"])
        )
    assert set(m["fewshot_asr_wer"]) == {str(k) for k in FEWSHOT_K}
    assert all(w >= 0 and math.isfinite(w) for w in m["fewshot_asr_wer"].values())
    modal = m["modal_data"]  # every training question became a conversation or a reject
    n_questions = len(TokenStore(out / "stores" / "train_questions"))
    assert modal["conversations"] + modal["rejects"] == n_questions > 0
    assert _rate(modal["answers_correct"])
    # held out: the test voices and phrasings were never trained on
    pool = InstructionPool.load()
    heldout = {fill(x) for x in pool.phrasings("spoken_qa", "heldout")}
    train = {fill(x) for x in pool.phrasings("spoken_qa", "train")}
    train_voices = set(TRAIN_VOICES)
    assert m["qa_examples"] and all(e["voice"] not in train_voices for e in m["qa_examples"])
    assert all(e["phrasing"] in heldout for e in m["qa_examples"])
    # the same evaluation with the dev phrasings, beside it
    dev = m["dev"]
    dev_phrasings = {fill(x) for x in pool.phrasings("spoken_qa", "dev")}
    assert dev["qa_examples"] and all(e["phrasing"] in dev_phrasings for e in dev["qa_examples"])
    assert _rate(dev["chat_spoken_qa_acc"]) and _rate(dev["chat_modal_agreement"])
    for task in ("asr", "tts"):  # the task-tag side is shared, the phrasing side is the split's
        r, d = m["instruct_unseen_phrasing"][task], dev["instruct_unseen_phrasing"][task]
        assert d["tag_wer"] == r["tag_wer"] and d["instruction_wer"] >= 0
    assert {
        r.speaker for r in TokenStore(out / "stores" / "train").iterate(shuffle=False)
    } <= train_voices
    extra = {
        r.speaker for r in TokenStore(out / "stores" / "question_voices").iterate(shuffle=False)
    }
    assert extra and extra <= set(QUESTION_VOICES) and not extra & set(HELDOUT_VOICES)
    # the modal-invariance conversations draw training phrasings only
    prov = json.loads((out / "stores" / "chat_modal" / "store.json").read_text())["provenance"][
        "chat_data"
    ]
    assert prov["settings"]["instruction_task"] == "spoken_qa"
    assert prov["settings"]["instruction_split"] == "train"
    assert prov["settings"]["mode"] == MODAL_MODE
    assert prov["settings"]["speech_alone"] == SPEECH_ALONE
    t = m["chat_spoken_transcript_acc"]
    assert t is None or _rate(t)
    assert prov["model"] == str(out / "lm" / "final")
    st = TokenStore(out / "stores" / "chat_modal")
    drawn = [st[i].meta["conversation"].get("instruction") for i in range(len(st))]
    assert {x for x in drawn if x is not None} <= train  # None: the speech alone


def test_chain_replies_split_into_transcript_and_answer():
    from tokunify.demos.instruct import chain_answer, chain_transcript

    assert chain_answer("[ta] what is two plus three [ua] five") == "five"
    assert chain_transcript("[ta] what is two plus three [ua] five") == "what is two plus three"
    assert chain_answer("five") == "five" and chain_transcript("five") is None
    assert chain_transcript("[ta] what is two plus") is None  # cut off before the answer


def test_demo_metrics_and_chat_over_stdin_give_the_same_reply(voc_bundle, tmp_path):
    """The instruct demo's reply function (its metrics are computed from it) and `tokunify chat`
    over stdin answer the same conversation with the same reply for the same bundle, decoding and
    seed, sampled, and whatever the demo batches the conversation with. A refused turn before it
    (text holding a special token) leaves the chat's history as it was."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tokunify.demos.instruct import replies
    from tokunify.generate.decoding import Decoding
    from tokunify.generate.generator import Generator
    from tokunify.tasks.conversation import Conversation, Message

    out = tmp_path / "chat"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tokunify", "chat", str(voc_bundle), "--system", "be brief",
           "--reply", "text", "--temperature", "1.3", "--max-new-tokens", "12", "--seed", "7",
           "--out", str(out)]  # fmt: skip
    turns = "hello <|eos|> there\nwhat is two plus three\n"
    p = subprocess.run(cmd, input=turns, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "'<|eos|>'" in p.stderr  # the refused turn, named
    history = json.loads((out / "conversation.json").read_text())["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    conv = Conversation([Message("system", "be brief"), Message("user", "what is two plus three")])
    other = Conversation([Message("user", "a big dog ran to the green house and back again")])
    decoding = Decoding(temperature=1.3, max_new_tokens=12)
    gen = Generator(voc_bundle)
    for batch in ([conv], [other, conv, other]):
        parts = replies(gen, batch, "text", decoding, seed=7)[batch.index(conv)]
        assert parts == history[2]["content"]
    said = [x for x in p.stdout.splitlines() if x.startswith("assistant:")]
    assert len(said) == 1 and parts
    assert (
        said[0].removesuffix(" [cut at --max-new-tokens]") == f"assistant: {''.join(parts).strip()}"
    )
