"""Adapters: exact output lengths (a table, checked against the real forward), padding masked
(a batch equals one forward per example), save/load, registry errors."""

from __future__ import annotations

import json

import pytest
import torch

from tokunify.model.adapters import (
    ADAPTER_CONFIG,
    ADAPTERS,
    AdapterError,
    build_adapter,
    load_adapter,
)

D_IN, D_OUT = 12, 16
QF = {"hidden": 16, "heads": 2, "layers": 1}  # a small Q-Former

# (adapter, options, input lengths, expected output lengths)
LENGTHS: list[tuple[str, dict, list[int], list[int]]] = [
    ("conv", {}, [1, 2, 3, 4, 5, 50, 51], [1, 1, 1, 1, 2, 13, 13]),  # ceil(ceil(T/2)/2)
    ("conv", {"layers": 1, "kernel": 5, "stride": 3}, [1, 3, 4, 10], [1, 1, 2, 4]),  # ceil(T/3)
    ("conv", {"layers": 1, "kernel": 4, "stride": 2}, [2, 3, 8], [1, 1, 4]),  # floor((T-2)/2)+1
    ("conv", {"layers": 3, "kernel": 1, "stride": 1}, [1, 7], [1, 7]),
    ("stack", {}, [1, 5, 6, 10, 50, 51], [1, 1, 2, 2, 10, 11]),  # ceil(T/5)
    ("stack", {"k": 2}, [1, 2, 3], [1, 1, 2]),
    ("qformer", QF, [1, 17, 18, 34, 50], [1, 1, 2, 2, 3]),  # ceil(T/17)
    ("qformer", {**QF, "window": 4, "queries": 3}, [1, 4, 5, 9], [3, 3, 6, 9]),  # ceil(T/4)*3
]


def make(name: str, cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_adapter(name, D_IN, D_OUT, **cfg).eval()


@pytest.mark.parametrize(("name", "cfg", "lengths", "want"), LENGTHS)
def test_output_lengths_match_the_forward(name, cfg, lengths, want):
    a = make(name, cfg)
    lengths_t = torch.tensor(lengths)
    assert a.output_lengths(lengths_t).tolist() == want
    with torch.no_grad():
        for n, m in zip(lengths, want, strict=True):  # one example: nothing padded
            y, out = a(torch.randn(1, n, D_IN), torch.tensor([n]))
            assert y.shape == (1, m, D_OUT) and out.tolist() == [m]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_padding_is_masked(name):
    a = make(name, QF if name == "qformer" else {})
    lengths = torch.tensor([40, 23, 3])
    x = torch.randn(3, 40, D_IN)
    x[1, 23:] = 1e3  # garbage in the padding must not reach the outputs
    x[2, 3:] = -1e3
    with torch.no_grad():
        y, out = a(x, lengths)
        assert out.tolist() == a.output_lengths(lengths).tolist()
        assert y.shape[:2] == (3, int(out.max()))
        for i, n in enumerate(lengths.tolist()):
            alone, _ = a(x[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(y[i, : out[i]], alone[0], atol=1e-5, rtol=1e-4)
            assert not y[i, out[i] :].any()


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_save_load_round_trip(name, tmp_path):
    a = make(name, {**(QF if name == "qformer" else {}), **({"k": 3} if name == "stack" else {})})
    a.save(tmp_path / "ad")
    b = load_adapter(tmp_path / "ad")
    assert type(b) is type(a) and b.config == a.config
    x, n = torch.randn(2, 20, D_IN), torch.tensor([20, 11])
    with torch.no_grad():
        torch.testing.assert_close(a(x, n)[0], b.eval()(x, n)[0])


def test_gradients_reach_every_parameter():
    for name in ADAPTERS:
        a = make(name, QF if name == "qformer" else {}).train()
        y, _ = a(torch.randn(2, 30, D_IN), torch.tensor([30, 12]))
        y.pow(2).mean().backward()
        missing = [k for k, p in a.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing, (name, missing)


def test_errors_are_one_line(tmp_path):
    with pytest.raises(
        AdapterError, match=r"unknown adapter 'mlp'; registered: \['conv', 'qformer', 'stack'\]"
    ):
        build_adapter("mlp", 4, 4)
    with pytest.raises(AdapterError, match=r"unknown option\(s\) \['strde'\]"):
        build_adapter("conv", 4, 4, strde=2)
    with pytest.raises(AdapterError, match=r"\['k'\] must be integers"):
        build_adapter("stack", 4, 4, k="5")
    with pytest.raises(AdapterError, match="adapter.json: missing"):
        load_adapter(tmp_path)
    make("stack", {}).save(tmp_path / "s")
    (tmp_path / "s" / "adapter.safetensors").unlink()
    with pytest.raises(AdapterError, match="adapter.safetensors: missing"):
        load_adapter(tmp_path / "s")
    make("stack", {}).save(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / ADAPTER_CONFIG).read_text())
    (tmp_path / "t" / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "k": 4}))
    with pytest.raises(AdapterError, match="do not fit the config"):
        load_adapter(tmp_path / "t")


@pytest.mark.parametrize(("name", "rate"), [("conv", 12.5), ("stack", 10.0), ("qformer", 50 / 17)])
def test_documented_rates_at_50_hz(name, rate):
    frames = torch.tensor([50 * 3400])  # 3400 s of 50 Hz frames: a multiple of 2, 4, 5 and 17
    out = build_adapter(name, D_IN, D_OUT).output_lengths(frames)
    assert float(out[0]) / 3400 == pytest.approx(rate)
