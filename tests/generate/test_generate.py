"""Generation: constrained decoding, batch == single, streaming, limits, errors, eval."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tokunify.cli import main
from tokunify.core.vocab import UnifiedVocab, VocabError, codec_stream
from tokunify.generate.constraints import ModalityConstraint
from tokunify.generate.generator import Generator
from tokunify.tasks import FormatError, generation_tasks

HOT = {
    "do_sample": True,
    "temperature": 5.0,
    "top_k": None,
    "top_p": None,
}  # sample widely: stress the constraints


@pytest.fixture(scope="module")
def gen(voc_bundle) -> Generator:
    return Generator(voc_bundle)


def test_constrained_tasks_emit_only_allowed_ids(gen, speech_manifest):
    v = gen.vocab
    wavs = [str(p) for p in sorted((speech_manifest.parent / "wavs").glob("*.wav"))[:3]]
    text_ok = set(range(v.text_size)) | {v.text_end, v.eos}
    a, b = v.stream_range("units")
    units_ok = set(range(a, b)) | {v.stream_end("units"), v.eos}
    torch.manual_seed(0)
    for task, inputs, ok in [("asr", wavs, text_ok), ("text", ["the cat"], text_ok), ("tts", ["hello there", "a red cat"], units_ok),
                             ("s2s", wavs, units_ok), ("continue", wavs, units_ok)]:  # fmt: skip
        for r in gen.generate(task, inputs, max_new_tokens=40, **HOT):
            assert set(r.ids) <= ok, (task, set(r.ids) - ok)
            if not r.hit_limit:
                assert r.ids[-1] == v.eos and r.ids[-2] in (v.text_end, v.stream_end("units"))


@pytest.mark.parametrize("layout", ["flatten", "delay", "first"])
def test_codec_layout_constraints(layout):
    """Sampled from uniform logits under the constraint, codec sequences always parse back."""
    from tokunify.tasks import parse_stream_body

    v = UnifiedVocab(50, (codec_stream("codec", 3, 8, layout),))
    n_q = 1 if layout == "first" else 3
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        proc = ModalityConstraint(v, "codec", prompt_len=2)
        ids = torch.tensor([[v.bos, v.stream_start("codec")]])
        for _ in range(60):
            scores = proc(ids, torch.zeros(1, v.size))
            nxt = torch.multinomial(torch.softmax(scores, -1), 1, generator=g)
            ids = torch.cat([ids, nxt], 1)
            if int(nxt) == v.eos:
                break
        body = ids[0, 2:].tolist()
        if v.stream_end("codec") not in body:
            continue
        body = body[: body.index(v.stream_end("codec"))]
        for p, t in enumerate(body):  # position p emits codebook p mod n_q (or the delay fill)
            if t != v.empty:
                assert v.codebook_table[t] == p % n_q
        codes = parse_stream_body(v, "codec", np.asarray(body))  # raises if the layout is broken
        assert codes.shape[0] == (1 if layout == "first" else 3)


def test_batch_equals_single_under_greedy(gen):
    texts = ["hello there", "a big dog ran to the green house", "what"]
    batch = gen.generate("tts", texts, do_sample=False, max_new_tokens=30, vocode=False)
    for t, r in zip(texts, batch, strict=True):
        one = gen.generate("tts", [t], do_sample=False, max_new_tokens=30, vocode=False)[0]
        assert one.ids == r.ids
    asr_b = gen.generate(
        "asr", [r.units for r in batch if r.units is not None and len(r.units)], max_new_tokens=20
    )
    asr_1 = [
        gen.generate("asr", [r.units], max_new_tokens=20)[0]
        for r in batch
        if r.units is not None and len(r.units)
    ]
    assert [a.ids for a in asr_b] == [a.ids for a in asr_1]


def _model_inputs(gen: Generator, task: str, request) -> tuple[list[int], list]:
    """The ids the model's first forward call saw (padding dropped) and the results."""
    seen: list[list[int]] = []

    def hook(module, args, kwargs):
        if not seen:
            ids, att = kwargs["input_ids"], kwargs.get("attention_mask")
            row = ids[0] if att is None else ids[0][att[0].bool()]
            seen.append(row.tolist())

    h = gen.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        res = gen.generate(task, [request], do_sample=False, max_new_tokens=6, vocode=False)
    finally:
        h.remove()
    return seen[0], res


@pytest.mark.parametrize("task", generation_tasks())
def test_every_task_honours_its_input(gen, speech_manifest, task):
    """Two different requests give two different prompt lengths, the request's own ids are in
    the prompt, and the prompt is exactly what the model saw (a prefix of what it decoded)."""
    v = gen.vocab
    if gen.task(task).input_modality == "text":
        requests = ["the cat", "a big dog ran to the green house"]
        encoded = [gen.bundle.tokenizer.encode(x, add_special_tokens=False) for x in requests]
    else:
        # the shortest and the longest recording: their (deduplicated) unit counts differ for any
        # k-means the session's fixtures happen to train
        by_size = sorted(
            (speech_manifest.parent / "wavs").glob("*.wav"), key=lambda p: p.stat().st_size
        )
        wavs = [by_size[0], by_size[-1]]
        requests = list(gen.encode_audio(wavs))
        encoded = [v.to_global("units", u).tolist() for u in requests]
    counts = []
    for request, mine in zip(requests, encoded, strict=True):
        prompt = gen.prompts(task, [request])[0].tolist()
        seen, (res,) = _model_inputs(gen, task, request)
        assert seen == prompt
        k = len(mine)
        assert any(prompt[i : i + k] == mine for i in range(len(prompt) - k + 1)), task
        counts.append(len(prompt))
        if task == "text":  # the output continues the given text
            assert res.text.startswith(request), res.text
    assert counts[0] != counts[1]


def test_temperature_zero_is_greedy_on_the_cli(voc_bundle, tmp_path):
    """`generate --temperature 0` is `--greedy` (Decoding's rule), for a task that samples."""
    rows = []
    for flag in (["--temperature", "0"], ["--greedy"]):
        out = tmp_path / flag[0].strip("-")
        args = ["generate", str(voc_bundle), "--task", "text", "--input", "the cat", "--out", str(out), "--max-new-tokens", "8", "--seed", str(len(rows))]  # fmt: skip
        assert main([*args, *flag]) == 0
        rows.append(json.loads((out / "results.jsonl").read_text()))
    assert rows[0] == rows[1] and rows[0]["text"].startswith("the cat")


def test_hit_limit_returns_partial_output_with_flag(gen):
    r = gen.generate(
        "tts", ["a long sentence to say"], max_new_tokens=5, do_sample=False, min_new_tokens=5
    )[0]
    assert r.hit_limit and r.units is not None and len(r.units) >= 1 and r.audio is not None


def test_streaming_tts_equals_whole_audio(gen):
    whole = gen.generate("tts", ["we saw five small birds"], do_sample=False, max_new_tokens=40)[0]
    chunks = list(
        gen.stream_tts(
            "we saw five small birds", chunk=8, context=24, do_sample=False, max_new_tokens=40
        )
    )
    assert len(chunks) > 1
    np.testing.assert_allclose(np.concatenate(chunks), whole.audio, atol=1e-4)


def test_bad_input(gen, voc_bundle, tmp_path):
    with pytest.raises(ValueError, match="empty input"):
        gen.generate("tts", [])
    with pytest.raises(ValueError, match="non-empty strings"):
        gen.generate("tts", ["  "])
    with pytest.raises(FormatError, match="unknown task 'sing'"):
        gen.generate("sing", ["x"])
    broken = tmp_path / "b"
    shutil.copytree(voc_bundle, broken)
    (broken / "vocab.json").unlink()
    with pytest.raises(VocabError, match="no vocab.json"):
        Generator(broken)


def test_generate_and_eval_cli(voc_bundle, train_store, speech_manifest, tmp_path, capsys):
    wav = str(sorted((speech_manifest.parent / "wavs").glob("*.wav"))[0])
    assert (
        main(
            [
                "generate",
                str(voc_bundle),
                "--task",
                "tts",
                "--input",
                "hello there",
                "--out",
                str(tmp_path / "g"),
                "--max-new-tokens",
                "20",
            ]
        )
        == 0
    )
    assert (tmp_path / "g" / "0000.wav").is_file()
    assert (
        main(
            [
                "generate",
                str(voc_bundle),
                "--task",
                "asr",
                "--input",
                wav,
                "--out",
                str(tmp_path / "a"),
                "--max-new-tokens",
                "10",
            ]
        )
        == 0
    )
    row = json.loads((tmp_path / "a" / "results.jsonl").read_text().splitlines()[0])
    assert isinstance(row["text"], str)
    assert (
        main(
            [
                "generate",
                str(voc_bundle),
                "--task",
                "tts",
                "--input",
                "hi",
                "--out",
                str(tmp_path / "s"),
                "--stream",
                "--greedy",
                "--max-new-tokens",
                "20",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                str(voc_bundle),
                "--store",
                str(train_store),
                "--out",
                str(tmp_path / "e"),
                "--max-utts",
                "4",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "e" / "eval.json").read_text())["store"]
    for k in (
        "asr_wer",
        "asr_cer",
        "tts_roundtrip_wer",
        "resynth_unit_error",
        "resynth_frame_error",
    ):
        assert np.isfinite(res[k]) and res[k] >= 0.0, (
            k
        )  # error rates (an untrained model may exceed 1)
    assert 0.0 <= res["s2s_exact_match"] <= 1.0 and res["s2s_pairs"] > 0
    assert "| store |" in (tmp_path / "e" / "eval.md").read_text()


@pytest.mark.parametrize("task", [t for t in generation_tasks() if t in ("text", "tts")])
def test_typed_text_spelling_a_vocab_token_is_refused(gen, task):
    """`<|eos|>` typed into a text prompt would end the input early (the server answered 500):
    refused in one line naming the token, before anything is generated."""
    with pytest.raises(FormatError, match=r"holds '<\|eos\|>'"):
        gen.prompts(task, ["hi <|eos|> there"])
    assert len(gen.prompts(task, ["hi there"])[0]) > 0
