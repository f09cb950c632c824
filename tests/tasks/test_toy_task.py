"""A task defined only here is registered, trained, generated with and evaluated: adding a task
touches no module of the package."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import UNITS_K, write_config

from tokunify.cli import main
from tokunify.core.vocab import DEFAULT_TASKS
from tokunify.generate.generator import Generator
from tokunify.tasks import TaskFormat, has_text, register_task, unregister_task

TOY = "spell"


class SpellTask(TaskFormat):
    """Text in, the same text out twice (two target segments), scored by text WER on the first.

    ``Utterance(text=[5, 6])`` -> ``[bos, task:spell, text_start, T:5, T:6, text_end,
    text_start, T:5, T:6, text_end, text_start, T:5, T:6, text_end, eos]``.
    """

    task = TOY
    needs_stream = False
    target_modality = "text"
    requires = ("text",)
    input_modality = "text"
    preset = {"do_sample": False, "max_new_tokens": 12}  # noqa: RUF012 (a test's toy)
    metric = "text_wer"

    def eligible(self, r):
        return has_text(r) and len((r.text or "").split()) >= 2

    def inputs(self, utt):
        return [("text", utt.text_ids())]

    def targets(self, utt, target, rng):
        return [("text", utt.text_ids()), ("text", utt.text_ids())]


@pytest.fixture
def spell_task():
    register_task(SpellTask)
    yield SpellTask
    unregister_task(TOY)


@pytest.fixture
def spell_bundle(unit_tokenizer, sp_dir, tmp_path) -> Path:
    out = tmp_path / "bundle"
    args = [
        "extend",
        "scratch:llama-tiny",
        "--text-tokenizer",
        str(sp_dir),
        "--units",
        str(UNITS_K),
    ]
    tasks = ["--tasks", *DEFAULT_TASKS, TOY]
    assert main([*args, *tasks, "--speech-tokenizer", f"units={unit_tokenizer}", "--out", str(out)]) == 0  # fmt: skip
    return out


def test_toy_task_trains_generates_and_evaluates(spell_task, spell_bundle, train_store, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", spell_bundle, train_store, tmp_path / "run", steps=3,
                       save_every=0, eval_every=0, **{"data.mixture": {TOY: 1.0}})  # fmt: skip
    assert main(["train", str(cfg)]) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(f"loss/{TOY}" in r for r in rows), rows[-1]  # documents of the toy task were trained
    final = tmp_path / "run" / "final"

    gen = Generator(final)
    v = gen.vocab
    res = gen.generate(TOY, ["the red cat", "a big dog"], vocode=False)
    assert [r.task for r in res] == [TOY, TOY]
    text_ok = set(range(v.text_size)) | {v.text_end, v.eos}
    for r in res:
        assert isinstance(r.text, str) and set(r.ids) <= text_ok  # the task's target modality
        assert len(r.ids) <= 12  # the task's own preset

    assert main(["eval", str(final), "--store", str(train_store), "--out", str(tmp_path / "e"),
                 "--max-utts", "3", "--tasks", TOY])  == 0  # fmt: skip
    res = json.loads((tmp_path / "e" / "eval.json").read_text())["store"]
    assert math.isfinite(res[f"{TOY}_wer"]) and res[f"{TOY}_wer"] >= 0
    assert len(res[f"{TOY}_examples"]) == 3 and "asr_wer" not in res


def test_toy_task_builds_its_segments(spell_task, spell_bundle):
    from tokunify.core.vocab import UnifiedVocab
    from tokunify.tasks import Utterance, make_task, parse_sequence

    v = UnifiedVocab.load(spell_bundle)
    task = make_task(TOY, v)
    ids, mask = task.build(Utterance(text=np.array([5, 6])))
    seq = parse_sequence(v, ids)
    assert seq.task == TOY and [s.ids.tolist() for s in seq.segments] == [[5, 6]] * 3
    assert not mask[: v.prefix_len + 4].any() and mask[v.prefix_len + 4 :].all()
    assert task.prompt(Utterance(text=np.array([5, 6]))).tolist() == [
        *ids[: v.prefix_len + 4],
        v.text_start,
    ]


def test_unregistered_task_is_refused(spell_bundle):
    with pytest.raises(ValueError, match="unknown task 'spell'"):
        Generator(spell_bundle).generate(TOY, ["the cat"])
