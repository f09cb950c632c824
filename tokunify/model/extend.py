"""Extending a causal LM with the unified vocabulary, or building one from scratch.

Speech *input* through an encoder is a continuous stream (``--continuous enc``): the vocab gives it
one placeholder id, and ``tokunify train`` with ``speech_input: {encoder: ..., stream: enc}`` puts
the encoder + adapter beside the LM (the stream is named by ``speech_input.stream``; a vocab's ids
are fixed once extended, so the stream is added here, not by training).

The text rows of the embedding matrices are never touched, so logits over the original text
vocabulary for text-only input are unchanged by extension (tests check this for tied and untied
heads). New rows ``[text_size, V)`` are initialised by one of :data:`INIT_CHOICES`:

- ``mean``: every new row is the mean of the text rows (Hewitt 2021; what transformers 5 does by
  default). All new tokens start identical, which keeps the initial logits of text tokens sane.
- ``mean+noise``: the mean plus Gaussian noise with the per-dimension std of the text rows scaled by
  ``noise_scale`` (default 0.1), so new tokens start distinguishable.
- ``normal``: N(0, ``initializer_range``) of the model config (0.02 if absent), as for a new model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tokunify.core.config import read_data_file
from tokunify.core.fsio import check_local_path, refuse_non_empty
from tokunify.core.vocab import (
    DEFAULT_TASKS,
    StreamSpec,
    UnifiedVocab,
    VocabError,
    codec_stream,
    continuous_stream,
    units_stream,
)
from tokunify.model.bundle import BundleSpec, save_bundle
from tokunify.tokenizers.base import resolve_path, stream_kind_of, tokenizer_from_config
from tokunify.tokenizers.identity import tokenizer_hash
from tokunify.tokenizers.text import load_text_tokenizer

INIT_CHOICES: tuple[str, ...] = ("mean", "mean+noise", "normal")


# ---- from-scratch presets ----------------------------------------------------------------------
@dataclass(frozen=True)
class ScratchPreset:
    """A from-scratch decoder. ``family`` picks the transformers architecture."""

    family: str  # "llama" or "gpt2"
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int = 2048
    tie_embeddings: bool = True

    def config(self, vocab: UnifiedVocab) -> Any:
        """A transformers config sized to ``vocab`` (bos/eos/pad are the vocab's specials)."""
        common = dict(bos_token_id=vocab.bos, eos_token_id=vocab.eos, pad_token_id=vocab.pad)
        if self.family == "llama":
            from transformers import LlamaConfig

            return LlamaConfig(
                vocab_size=vocab.size,
                hidden_size=self.hidden,
                intermediate_size=self.intermediate,
                num_hidden_layers=self.layers,
                num_attention_heads=self.heads,
                num_key_value_heads=self.heads,
                max_position_embeddings=self.max_positions,
                tie_word_embeddings=self.tie_embeddings,
                **common,
            )
        if self.family == "gpt2":
            from transformers import GPT2Config

            return GPT2Config(
                vocab_size=vocab.size,
                n_embd=self.hidden,
                n_layer=self.layers,
                n_head=self.heads,
                n_inner=self.intermediate,
                n_positions=self.max_positions,
                tie_word_embeddings=self.tie_embeddings,
                **common,
            )
        raise ValueError(f"unknown preset family {self.family!r}")


SCRATCH_PRESETS: dict[str, ScratchPreset] = {
    # Tests: builds in milliseconds.
    "llama-tiny": ScratchPreset("llama", hidden=64, layers=2, heads=4, intermediate=128),
    # The offline demo's size class: ~2-5 M parameters, trains on a 2-core CPU in minutes.
    "llama-small": ScratchPreset("llama", hidden=192, layers=4, heads=6, intermediate=512),
    "llama-base": ScratchPreset("llama", hidden=512, layers=8, heads=8, intermediate=1408),
    "llama-1b": ScratchPreset(
        "llama", hidden=2048, layers=16, heads=32, intermediate=5632, tie_embeddings=False
    ),
    "gpt2-tiny": ScratchPreset("gpt2", hidden=64, layers=2, heads=4, intermediate=128),
}


def scratch_model(preset: str, vocab: UnifiedVocab, seed: int = 0) -> nn.Module:
    """A randomly initialised causal LM of a named preset, sized to ``vocab``."""
    from transformers import AutoModelForCausalLM

    if preset not in SCRATCH_PRESETS:
        raise ValueError(
            f"unknown from-scratch preset {preset!r}; known: {sorted(SCRATCH_PRESETS)}"
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(SCRATCH_PRESETS[preset].config(vocab))


# ---- tokenizer --------------------------------------------------------------------------------
def add_vocab_tokens(tokenizer: Any, vocab: UnifiedVocab) -> Any:
    """Add every new token string of ``vocab`` to an HF tokenizer, in id order.

    Structural tokens (specials, markers, task tags, reserved) are special tokens, hidden by
    ``decode(skip_special_tokens=True)``; unit and codec tokens are plain added tokens.
    """
    from tokenizers import AddedToken

    if len(tokenizer) != vocab.text_size:
        raise VocabError(
            f"tokenizer has {len(tokenizer)} tokens, the vocab's text base is {vocab.text_size}"
        )
    strings = vocab.token_strings()
    existing = set(tokenizer.get_vocab())
    clash = [s for s in strings if s in existing]
    if clash:
        raise VocabError(
            f"tokenizer already has {len(clash)} tokunify tokens (e.g. {clash[0]!r}): already extended?"
        )
    special = set(vocab.special_token_strings())
    tokenizer.add_tokens(
        [AddedToken(s, special=s in special, normalized=False) for s in strings],
        special_tokens=False,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = strings[0]  # <|pad|>
    vocab.check_tokenizer(tokenizer, "extended tokenizer")
    return tokenizer


# ---- embeddings -------------------------------------------------------------------------------
def _init_rows(
    weight: torch.Tensor,
    start: int,
    init: str,
    noise_scale: float,
    std: float,
    gen: torch.Generator,
) -> None:
    """Fill ``weight[start:]`` in place from the statistics of ``weight[:start]``."""
    old = weight[:start].float()
    n = weight.shape[0] - start
    if n <= 0:
        return
    if init == "normal":
        new = torch.randn(n, weight.shape[1], generator=gen) * std
    else:
        new = old.mean(0, keepdim=True).expand(n, -1).clone()
        if init == "mean+noise":
            new += (
                torch.randn(n, weight.shape[1], generator=gen)
                * old.std(0, keepdim=True)
                * noise_scale
            )
    weight[start:] = new.to(weight.dtype, copy=False).to(weight.device)


def resize_embeddings(
    model: nn.Module,
    vocab: UnifiedVocab,
    init: str = "mean",
    noise_scale: float = 0.1,
    seed: int = 0,
) -> nn.Module:
    """Resize input/output embeddings to ``vocab.size`` and initialise rows ``[text_size, V)``."""
    if init not in INIT_CHOICES:
        raise ValueError(f"unknown --init {init!r}; choose from {INIT_CHOICES}")
    n_old = model.get_input_embeddings().weight.shape[0]
    if n_old < vocab.text_size:
        raise VocabError(
            f"model has {n_old} embedding rows, fewer than the text vocabulary ({vocab.text_size})"
        )
    model.resize_token_embeddings(vocab.size, mean_resizing=False)
    emb_in = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _init_rows(emb_in, vocab.text_size, init, noise_scale, std, gen)
        if out is not None and out.weight is not emb_in:
            _init_rows(out.weight, vocab.text_size, init, noise_scale, std, gen)
        if out is not None and getattr(out, "bias", None) is not None:
            out.bias[vocab.text_size :] = out.bias[: vocab.text_size].mean()
    model.config.vocab_size = vocab.size
    _set_special_ids(model, vocab)
    return model


def _set_special_ids(model: nn.Module, vocab: UnifiedVocab) -> None:
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.eos_token_id = vocab.eos
        gc.pad_token_id = vocab.pad
        gc.bos_token_id = vocab.bos
    model.config.pad_token_id = vocab.pad


def freeze_text_rows(model: nn.Module, vocab: UnifiedVocab) -> list[Callable[[], None]]:
    """Zero the gradient of the original text rows of the input and output embeddings.

    The SpeechGPT-style first stage trains only the new rows. Adam never moves a parameter whose
    gradient is always zero, but decoupled weight decay does: give embedding parameters
    ``weight_decay=0``. Returns removers for the hooks.
    """
    params = {
        id(p): p
        for p in (
            model.get_input_embeddings().weight,
            getattr(model.get_output_embeddings(), "weight", None),
        )
        if p is not None
    }
    n = vocab.text_size

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:n] = 0
        return grad

    return [p.register_hook(hook).remove for p in params.values()]


def extend_pretrained(
    model: nn.Module,
    tokenizer: Any,
    vocab: UnifiedVocab,
    init: str = "mean",
    noise_scale: float = 0.1,
    seed: int = 0,
) -> tuple[nn.Module, Any]:
    """Add ``vocab``'s tokens to a pretrained model and its tokenizer (both modified in place)."""
    add_vocab_tokens(tokenizer, vocab)
    resize_embeddings(model, vocab, init=init, noise_scale=noise_scale, seed=seed)
    vocab.check_model_config(model.config, "extended model")
    return model, tokenizer


# ---- `tokunify extend` ---------------------------------------------------------------------------
@dataclass
class ExtendArgs:
    """Extend a causal LM (or build one from scratch) with unit/codec tokens; write a bundle."""

    base: str = field(metadata={"positional": True})
    """Transformers model dir or hub id, or scratch:PRESET (presets listed below)."""
    out: str
    """Output bundle directory (a non-empty one is refused without --overwrite)."""
    overwrite: bool = False
    """Replace an existing out (the new bundle takes its place only once complete)."""
    units: list[str] = field(default_factory=list)
    """Unit streams, each K or NAME=K (e.g. --units 500 hubert=1000). Unnamed ones: units, units1, ..."""
    codebooks: int = 0
    """Codec stream: number of codebooks n_q (0: no codec stream)."""
    codebook_size: int = 1024
    """Codec stream: codes per codebook."""
    codec_layout: str = "flatten"
    """Codec stream: how the codebooks are laid out in one sequence, a registered layout
    (tokunify.core.layouts.LAYOUTS: flatten, delay, first, and any layout registered by the user)."""
    codec_name: str = "codec"
    """Codec stream name."""
    continuous: list[str] = field(default_factory=list)
    """Continuous streams (speech heard through an encoder + adapter), by name, e.g. --continuous
    enc: each owns one placeholder id <|NAME_frame|>; `tokunify train` with `speech_input:
    {stream: NAME}` fills its placeholders with the adapter's frames."""
    text_tokenizer: str | None = None
    """Text tokenizer: HF dir/id or SentencePiece dir/.model (default: BASE's; required for scratch:)."""
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    """Task tags of the vocabulary."""
    init: Literal["mean", "mean+noise", "normal"] = "mean"
    """Initialisation of the new embedding rows (see tokunify.model.extend)."""
    noise_scale: float = 0.1
    """mean+noise: noise std as a fraction of the per-dimension std of the text rows."""
    freeze_text_rows: bool = False
    """Record that training should keep the original text embedding rows fixed (SpeechGPT stage 1)."""
    speech_tokenizer: list[str] = field(default_factory=list)
    """STREAM=CONFIG (JSON/YAML) speech tokenizer configs to record in the bundle. A STREAM not
    given by --units/--codebooks is made from the tokenizer: its kind (units or codec), size and
    codebooks (codec streams take --codec-layout)."""
    pad_to_multiple_of: int = 64
    """Pad the vocabulary size to a multiple of this."""
    seed: int = 0
    """Seed for random initialisation."""


def parse_streams(args: ExtendArgs) -> tuple[StreamSpec, ...]:
    streams: list[StreamSpec] = []
    for i, item in enumerate(args.units):
        name, _, k = item.rpartition("=")
        name = name or ("units" if i == 0 else f"units{i}")
        try:
            streams.append(units_stream(name, int(k)))
        except ValueError as e:
            raise ValueError(f"--units {item!r}: expected K or NAME=K ({e})") from None
    if args.codebooks:
        streams.append(
            codec_stream(args.codec_name, args.codebooks, args.codebook_size, args.codec_layout)
        )
    streams += [continuous_stream(name) for name in args.continuous]
    return tuple(streams)


def stream_for_tokenizer(name: str, config: dict[str, Any], layout: str) -> StreamSpec:
    """The vocab stream a recorded speech tokenizer config asks for (its class says units/codec)."""

    kind = stream_kind_of(config)
    if config.get("cardinality") is None:
        raise ValueError(
            f"--speech-tokenizer {name}: the tokenizer has no cardinality yet (train its centroids)"
        )
    if kind == "units":
        return units_stream(name, int(config["cardinality"]))
    return codec_stream(name, int(config["num_codebooks"]), int(config["cardinality"]), layout)


ENCODER_DIR = "encoder"  # a local speech-tokenizer encoder, copied into the bundle


def bundle_tokenizer_config(
    stream: str, config: dict[str, Any], base_dir: Path
) -> tuple[dict[str, Any], dict[str, Path]]:
    """A speech tokenizer config as a bundle records it: canonical (``to_config()``), with its
    content hash, and its centroids copied into the bundle. Returns (config, files to copy)."""

    config = dict(config)
    src = config.get("source")
    local = None
    if isinstance(src, str) and src and config.get("backend") != "fairseq2":
        for cand in (Path(src).expanduser(), base_dir / src):  # as written, or beside the config
            if cand.is_dir():
                local = cand.resolve()
                break
        else:
            check_local_path(src, f"source of speech tokenizer {stream!r}")
    if local is not None:
        config["source"] = str(local)
    full = tokenizer_from_config(config, base_dir=base_dir).to_config()
    files: dict[str, Path] = {}
    if full.get("centroids"):
        full["centroids"] = str(resolve_path(full["centroids"], base_dir))
    full["hash"] = tokenizer_hash(full)  # file and directory bytes, not where they lie
    if full.get("centroids"):
        rel = f"speech_tokenizers/{stream}/centroids.safetensors"
        files[rel] = Path(full["centroids"])
        full["centroids"] = rel
    if local is not None:  # the bundle carries its encoder; hub ids stay hub ids
        rel = f"speech_tokenizers/{stream}/{ENCODER_DIR}"
        files[rel] = local
        full["source"] = rel
    return full, files


def presets_epilog() -> str:
    """The from-scratch presets, for ``tokunify extend --help``."""
    return "from-scratch presets: " + ", ".join(f"scratch:{p}" for p in SCRATCH_PRESETS)


def run_extend(args: ExtendArgs) -> Path:
    """`tokunify extend`: write a bundle to ``args.out``."""
    from transformers import AutoModelForCausalLM

    refuse_non_empty(args.out, args.overwrite)
    streams = parse_streams(args)
    speech_cfgs, files = {}, {}
    for item in args.speech_tokenizer:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--speech-tokenizer {item!r}: expected STREAM=CONFIG")
        speech_cfgs[name], extra = bundle_tokenizer_config(
            name, read_data_file(path), Path(path).parent
        )
        files.update(extra)
    given = {st.name for st in streams}
    streams += tuple(
        stream_for_tokenizer(name, cfg, args.codec_layout)
        for name, cfg in speech_cfgs.items()
        if name not in given
    )
    scratch = args.base.startswith("scratch:")
    if scratch and not args.text_tokenizer:
        raise ValueError(
            "a scratch: base needs --text-tokenizer (train one with `tokunify train-text-tokenizer`)"
        )
    tok_src = args.text_tokenizer or args.base
    if not scratch:
        check_local_path(args.base, "extend base model: a transformers model directory or a hub id")
    check_local_path(tok_src, "text tokenizer: a directory, an spm.model or a hub id")
    tokenizer = load_text_tokenizer(tok_src)
    vocab = UnifiedVocab(
        text_size=len(tokenizer),
        streams=streams,
        tasks=tuple(args.tasks),
        pad_to_multiple_of=args.pad_to_multiple_of,
    )
    if scratch:
        add_vocab_tokens(tokenizer, vocab)
        model = scratch_model(args.base.split(":", 1)[1], vocab, seed=args.seed)
        init = None
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(args.base)
        except OSError as e:  # a hub id that is not there (or no network): one line
            reason = str(e).strip().splitlines()[0]
            raise ValueError(
                f"{args.base}: no local directory, and not loadable as a hub id: {reason}"
            ) from e
        extend_pretrained(
            model, tokenizer, vocab, init=args.init, noise_scale=args.noise_scale, seed=args.seed
        )
        init = args.init
    spec = BundleSpec(
        base=args.base,
        text_tokenizer=str(tok_src),
        speech_tokenizers=speech_cfgs,
        init=init,
        freeze_text_rows=args.freeze_text_rows,
    )
    out = save_bundle(args.out, model, tokenizer, vocab, spec, files=files)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: vocab {vocab.size} (text {vocab.text_size} + {vocab.num_new} new), "
        f"streams {[s.name for s in streams]}, {n_params / 1e6:.2f} M parameters"
    )
    return out
