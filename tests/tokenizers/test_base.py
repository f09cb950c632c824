"""The tokenizer-kind registry: a new kind is one class, registered here in the test file only,
and tokenize, extend, the bundle check and the vocoder path ask it for its stream kind and decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tokunify.tokenizers.base import (
    TOKENIZERS,
    SpeechTokenizer,
    TokenizerConfigError,
    TokenizerOutput,
    register_tokenizer,
    stream_kind_of,
    tokenizer_class,
    tokenizer_from_config,
)

HOP = 160  # 100 frames/s at 16 kHz
LEVELS = 8


class ToyEnergyCodec(SpeechTokenizer):
    """Two codebooks per 10 ms frame: log-energy level and zero-crossing level. Decodes itself
    (a sine per frame at the coded level), so it needs no vocoder."""

    kind = "toy_energy"
    stream_kind = "codec"
    self_decoding = True

    def __init__(self, levels: int = LEVELS):
        self.levels = levels

    sample_rate = 16000  # type: ignore[assignment]
    frame_rate = 16000 / HOP  # type: ignore[assignment]

    @property
    def cardinality(self) -> int:
        return self.levels

    @property
    def num_codebooks(self) -> int:
        return 2

    def _frames(self, wav: torch.Tensor) -> torch.Tensor:
        n = -(-len(wav) // HOP) * HOP
        return torch.nn.functional.pad(wav, (0, n - len(wav))).reshape(-1, HOP)  # [T, HOP]

    def encode_batch(self, wavs: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        ids = []
        for w, n in zip(wavs, lengths, strict=True):
            f = self._frames(w[: int(n)])
            energy = (f.pow(2).mean(1) + 1e-8).log10()  # [T], about -8..0
            zc = (f[:, 1:].sign() != f[:, :-1].sign()).float().mean(1)  # [T] in 0..1
            e = ((energy + 8) / 8 * self.levels).long().clamp(0, self.levels - 1)
            z = (zc * self.levels).long().clamp(0, self.levels - 1)
            ids.append(torch.stack([e, z]))  # [2, T]
        return TokenizerOutput(ids=ids)

    def decode(self, ids: Any) -> list[torch.Tensor]:
        t = torch.arange(HOP) / self.sample_rate
        out = []
        for c in ids:
            amp = 10 ** ((c[0].float() + 0.5) / self.levels * 8 - 8) ** 0.5  # [T]
            out.append((amp[:, None] * torch.sin(2 * torch.pi * 440 * t)[None]).reshape(-1))
        return out

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "levels": self.levels,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "cardinality": self.cardinality,
            "num_codebooks": self.num_codebooks,
        }

    @classmethod
    def from_config(cls, config, base_dir=None, device="cpu") -> ToyEnergyCodec:
        return cls(int(config.get("levels", LEVELS)))


class ToyEnergyUnits(ToyEnergyCodec):
    """The energy level alone as units ``[T]``: a units kind needs a vocoder."""

    kind = "toy_energy_units"
    stream_kind = "units"
    self_decoding = False

    @property
    def num_codebooks(self) -> int:
        return 1

    def encode_batch(self, wavs: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        return TokenizerOutput(ids=[c[0] for c in super().encode_batch(wavs, lengths).ids])


@pytest.fixture
def toy_kinds():
    for cls in (ToyEnergyCodec, ToyEnergyUnits):
        register_tokenizer(cls.kind, cls)
    yield
    for cls in (ToyEnergyCodec, ToyEnergyUnits):
        TOKENIZERS.pop(cls.kind)


def test_registry_answers_from_the_class():
    assert stream_kind_of({"kind": "encodec"}) == "codec"
    assert stream_kind_of({"kind": "mimi"}) == stream_kind_of({"kind": "dac"}) == "codec"
    assert stream_kind_of({"kind": "mel_units"}) == stream_kind_of({"kind": "ssl_units"}) == "units"
    assert tokenizer_class("dac").self_decoding and not tokenizer_class("ssl_units").self_decoding
    with pytest.raises(TokenizerConfigError, match="unknown speech tokenizer kind 'nope'"):
        stream_kind_of({"kind": "nope"})
    with pytest.raises(TokenizerConfigError, match="already registered"):
        register_tokenizer("mimi", ToyEnergyCodec)

    class NoStreamKind(ToyEnergyCodec):
        stream_kind = "frames"  # type: ignore[assignment]

    register_tokenizer("toy_bad", NoStreamKind)
    try:
        with pytest.raises(TokenizerConfigError, match="stream_kind must be one of"):
            tokenizer_from_config({"kind": "toy_bad"})
    finally:
        TOKENIZERS.pop("toy_bad")


def write_cfg(path: Path, kind: str) -> Path:
    path.write_text(yaml.safe_dump({"kind": kind, "levels": LEVELS}))
    return path


def test_toy_kind_through_tokenize_extend_and_decode(
    toy_kinds, speech_manifest, sp_dir, tmp_path, capsys
):
    import tokunify
    from tokunify.cli import main
    from tokunify.data.store import TokenStore
    from tokunify.generate.generator import Generator
    from tokunify.model.bundle import BundleError
    from tokunify.vocoder.codec import CodecVocoder

    codec_cfg = write_cfg(tmp_path / "toy.yaml", "toy_energy")
    units_cfg = write_cfg(tmp_path / "toy_units.yaml", "toy_energy_units")
    store = tmp_path / "store"
    args = ["tokenize", str(speech_manifest), "--out", str(store), "--no-progress"]
    assert main([*args, "--tokenizer", str(codec_cfg), "--tokenizer", str(units_cfg)]) == 0
    meta = TokenStore(store).meta
    # default stream names come from the registered classes' stream kinds
    assert {n: (s.kind, s.num_codebooks) for n, s in meta.streams.items()} == {
        "codec": ("codec", 2),
        "units": ("units", 1),
    }
    assert meta.streams["codec"].frame_rate == 100.0
    assert meta.streams["codec"].tokenizer["sample_rate"] == 16000
    rec = TokenStore(store)[0]
    assert rec.streams["codec"].shape[0] == 2 and rec.streams["units"].ndim == 1
    assert (rec.streams["codec"][0] == rec.streams["units"]).all()

    # extend makes each stream from its tokenizer: no --units / --codebooks given
    bundle = tmp_path / "bundle"
    base = ["extend", "scratch:llama-tiny", "--text-tokenizer", str(sp_dir)]
    toks = ["--speech-tokenizer", f"codec={codec_cfg}", "--speech-tokenizer", f"units={units_cfg}"]
    assert main([*base, *toks, "--codec-layout", "delay", "--out", str(bundle)]) == 0
    vocab = tokunify.load(bundle, with_model=False).vocab
    codec, units = vocab.stream("codec"), vocab.stream("units")
    assert (codec.kind, codec.codebooks, codec.size, codec.layout) == ("codec", 2, LEVELS, "delay")
    assert (units.kind, units.size) == ("units", LEVELS)

    # the codec kind decodes itself: the bundle's vocoder path is its decoder
    gen = Generator(bundle, stream="codec")
    assert isinstance(gen.vocoder, CodecVocoder) and gen.sample_rate == 16000
    wav = gen.decode([rec.streams["codec"]])[0]
    assert len(wav) == rec.streams["codec"].shape[1] * HOP
    # a units kind does not: without a recorded vocoder the bundle says so
    with pytest.raises(BundleError, match="no vocoder recorded for stream 'units'"):
        _ = Generator(bundle, stream="units").vocoder

    # the bundle refuses a tokenizer whose class gives another stream kind than the vocab's
    bad = [*base, "--units", "codec=8", "--speech-tokenizer", f"codec={codec_cfg}"]
    assert main([*bad, "--out", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err
    assert "stream 'codec' (toy_energy) gives codec, vocab.json has a units stream" in err
    assert not (tmp_path / "bad").exists()
