from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tokunify.train import attention as packed_attention
from tokunify.train.packing import IGNORE, Doc, PackedBatch, Packer, fit_length, pack, pack_docs
from tokunify.train.step import forward, token_losses

GPT2_PASSES_ATTENTION_KWARGS = int(transformers.__version__.split(".")[0]) >= 5

V = 50


def doc(n: int, task: int = 0, seed: int = 0) -> Doc:
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    mask[n // 2 :] = True  # target side only
    return Doc(rng.integers(3, V, n), mask, task)


def test_positions_labels_and_padding():
    b = pack([[doc(5), doc(4, 1, 1)], [doc(3, 2, 2)]], seq_len=12, pad_id=0)
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0]
    assert b.doc_ids[0].tolist() == [0] * 5 + [1] * 4 + [-1] * 3
    assert b.tasks[1].tolist() == [2, 2, 2] + [-1] * 9
    d = doc(5)
    assert b.labels[0, :5].tolist() == [IGNORE, IGNORE, int(d.ids[2]), int(d.ids[3]), int(d.ids[4])]
    assert (b.labels[0, 9:] == IGNORE).all() and (b.input_ids[0, 9:] == 0).all()
    m = b.attention_mask()
    assert m.shape == (2, 1, 12, 12)
    assert not m[0, 0, 6, :5].any()  # doc 1 never sees doc 0
    assert m[0, 0, 6, 5:7].all() and not m[0, 0, 6, 7:].any()  # causal inside doc 1
    assert b.num_tokens == 12


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4)).eval()
    cfg = LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["block_mask", "per_document"])
def test_no_attention_across_documents(kind, attention, monkeypatch):
    model = tiny(kind)
    if attention == "per_document" and kind == "gpt2" and not GPT2_PASSES_ATTENTION_KWARGS:
        # transformers 4.x's GPT-2 drops the attention kwargs: train's probe sees it and takes the
        # logged dense-mask fallback, which must still keep documents apart (checked below)
        assert packed_attention.choose(model) == packed_attention.DENSE_MASK
        attention = "block_mask"
    if attention == "per_document":
        # the path `tokunify train` takes; it must never build the L x L mask
        assert packed_attention.choose(model) == packed_attention.PER_DOCUMENT

        def no_mask(self):  # type: ignore[no-untyped-def]
            raise AssertionError("per-document attention built the dense mask")

        monkeypatch.setattr(PackedBatch, "attention_mask", no_mask)
    assert packed_attention.path_of(model) == (
        packed_attention.PER_DOCUMENT
        if attention == "per_document"
        else packed_attention.DENSE_MASK
    )
    docs = [doc(7, 0, 1), doc(9, 1, 2), doc(4, 0, 3)]
    b = pack([docs], seq_len=24, pad_id=0)
    assert b.bounds() == [[(0, 7), (7, 16), (16, 20)]]
    with torch.no_grad():
        packed = forward(model, b)[0]
        if attention == "per_document":  # documents found from restarting positions alone
            by_pos = model(input_ids=b.input_ids, position_ids=b.position_ids).logits[0]
            torch.testing.assert_close(by_pos[:20], packed[:20], atol=1e-5, rtol=1e-5)
        at = 0
        packed_attention.disable(model)
        for d in docs:
            alone = model(torch.from_numpy(d.ids)[None]).logits[0]
            torch.testing.assert_close(packed[at : at + len(d.ids)], alone, atol=1e-5, rtol=1e-5)
            at += len(d.ids)
    if attention == "per_document":
        packed_attention.enable(model)
    loss, sums, counts = token_losses(forward(model, b), b, 2)
    # targets: the second half of each doc, and never the first token of the next doc
    assert int(counts.sum()) == sum(int(d.mask[1:].sum()) for d in docs)
    assert torch.isclose(loss, sums.sum() / counts.sum())


def test_bounds_from_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0], [0, 1, 2, 3, 4, 5, 6]])
    assert packed_attention.bounds_from_positions(pos) == [
        [(0, 3), (3, 5), (5, 6), (6, 7)],
        [(0, 7)],
    ]


@pytest.mark.parametrize(
    ("policy", "pieces"), [("split", [4, 4, 2]), ("truncate", [4]), ("drop", [])]
)
def test_long_documents(policy, pieces):
    long, short = doc(10, seed=1), doc(3, seed=2)
    long.mask[:] = True
    got = fit_length(long, 4, policy)
    assert [len(d.ids) for d in got] == pieces
    assert [len(d.ids) for d in fit_length(short, 4, policy)] == [3]  # short ones pass
    if policy == "split":  # consecutive pieces that cover the document
        assert np.concatenate([d.ids for d in got]).tolist() == long.ids.tolist()
    docs = iter([long, short] + [doc(1, seed=9)] * 50)
    p = Packer(seq_len=4, pad_id=0, pool=2, long_documents=policy)
    p.next_batch(1, lambda: next(docs))
    assert p.counts == {"split": 0, "truncate": 0, "drop": 0, policy: 1}
    q = Packer(4, 0, long_documents=policy)
    q.load_state(p.state())
    assert q.counts == p.counts and len(q.pool) == len(p.pool)


def test_packer_best_fit_and_state():
    lengths = [9, 2, 7, 3, 5, 8, 1, 6, 4, 10] * 3
    docs = iter([doc(n, seed=i) for i, n in enumerate(lengths)])
    p = Packer(seq_len=10, pad_id=0, pool=6)
    b, used = p.next_batch(3, lambda: next(docs))
    # rows filled from the pool, longest first: [9, 1], [8, 2], [10]
    assert b.num_tokens == 30 and [len(d.ids) for d in used] == [9, 1, 8, 2, 10]
    state = p.state()
    q = Packer(10, 0, pool=6)
    q.load_state(state)
    rest = list(docs)
    b1, _ = p.next_batch(2, iter(rest).__next__)
    b2, _ = q.next_batch(2, iter(rest).__next__)
    assert torch.equal(b1.input_ids, b2.input_ids)  # resumed packer continues identically
    long = Packer(8, 0, pool=1, long_documents="truncate")
    b3, _ = long.next_batch(1, lambda: doc(20))
    assert (b3.doc_ids[0] == 0).all()  # cut to the row length
    assert len(pack_docs([doc(3), doc(3), doc(3)], 6, 0, rows=1)) == 2


def test_flash_varlen_path_sends_the_rows_as_one_packed_row(monkeypatch):
    """transformers reads packed sequences from position_ids only for a batch of one row, so the
    flash-attn varlen path flattens [B, L] to [1, B*L]. Stand-in for the CUDA-only kernel: our
    per-document attention, which also finds documents from restarting position_ids alone; the
    flattened forward must equal the per-row per-document forward (a row attending to another
    row, or documents to each other, would not)."""
    model = tiny("llama")
    assert packed_attention.choose(model) == packed_attention.PER_DOCUMENT
    b = pack([[doc(7, 0, 1), doc(9, 1, 2)], [doc(5, 0, 3), doc(11, 1, 4)]], seq_len=20, pad_id=0)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(
        lambda m, args, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    with torch.no_grad():
        rows = forward(model, b)  # [B, L, V], the per-document path
        monkeypatch.setattr(packed_attention, "path_of", lambda m: packed_attention.FLASH_VARLEN)
        flat = forward(model, b)
    assert seen == [(2, 20), (1, 40)] and flat.shape == rows.shape
    for r, n in enumerate([16, 16]):  # real tokens of each row (pads are documents of one)
        torch.testing.assert_close(flat[r, :n], rows[r, :n], atol=1e-5, rtol=1e-5)
