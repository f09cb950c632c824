from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tokunify.train import attention as packed_attention
from tokunify.train.loop import forward, token_losses
from tokunify.train.packing import IGNORE, Doc, Packer, pack, pack_docs

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
def test_no_attention_across_documents(kind, attention):
    model = tiny(kind)
    if attention == "per_document":
        assert packed_attention.enable(model)
    docs = [doc(7, 0, 1), doc(9, 1, 2), doc(4, 0, 3)]
    b = pack([docs], seq_len=24, pad_id=0)
    assert b.bounds() == [[(0, 7), (7, 16), (16, 20)]]
    with torch.no_grad():
        packed = forward(model, b)[0]
        at = 0
        packed_attention.disable(model)
        for d in docs:
            alone = model(torch.from_numpy(d.ids)[None]).logits[0]
            torch.testing.assert_close(packed[at : at + len(d.ids)], alone, atol=1e-5, rtol=1e-5)
            at += len(d.ids)
    loss, sums, counts = token_losses(forward(model, b), b, 2)
    # targets: the second half of each doc, and never the first token of the next doc
    assert int(counts.sum()) == sum(int(d.mask[1:].sum()) for d in docs)
    assert torch.isclose(loss, sums.sum() / counts.sum())


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
    long = Packer(8, 0, pool=1)
    b3, _ = long.next_batch(1, lambda: doc(20))
    assert (b3.doc_ids[0] == 0).all()  # cut to the row length
    assert len(pack_docs([doc(3), doc(3), doc(3)], 6, 0, rows=1)) == 2
