"""Self-describing bundles: one directory holds everything needed to use a model.

::

    DIR/
      config.json, model.safetensors, generation_config.json   HF weights (save_pretrained)
      tokenizer.json, tokenizer_config.json, ...               HF tokenizer with the added tokens
      vocab.json                                               the UnifiedVocab layout
      tokunify.json                                            speech tokenizers, vocoders, provenance
      speech_input/                                            encoder + adapter (continuous speech
                                                               input; only where the spec names it)

``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``
work without tokunify. :func:`load` returns everything together and refuses a bundle whose parts
do not agree, naming the file and the reason; a bundle whose spec has ``speech_input`` gets its
:class:`~tokunify.model.speech_input.SpeechInput` composed (``Bundle.speech_input``), from paths
relative to the bundle, so a moved bundle loads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokunify.core import __version__
from tokunify.core.fsio import atomic_dir, atomic_write_text
from tokunify.core.vocab import UnifiedVocab, VocabError
from tokunify.tokenizers.base import TOKENIZERS, stream_kind_of, tokenizer_from_config

BUNDLE_FILE = "tokunify.json"
BUNDLE_FORMAT = "tokunify.bundle"  # a file-format name, not a module path
BUNDLE_VERSION = 1


class BundleError(ValueError):
    """A bundle directory is missing a part, or its parts disagree."""


def _version() -> str:
    return __version__


@dataclass
class BundleSpec:
    """Contents of ``tokunify.json``: what the weights alone do not say."""

    base: str = ""
    """Where the LM came from: an HF id/path or ``scratch:PRESET``."""
    text_tokenizer: str = ""
    """Where the text tokenizer came from."""
    speech_tokenizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stream name -> speech tokenizer config (``to_config()`` of a tokenizer)."""
    vocoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stream name -> vocoder reference (path relative to the bundle, or a config)."""
    init: str | None = None
    """How the new embedding rows were initialised."""
    freeze_text_rows: bool = False
    """Whether training should keep the original text rows fixed (SpeechGPT stage 1)."""
    speech_input: dict[str, Any] | None = None
    """Continuous speech input beside the LM: ``{"path": "speech_input", "stream": NAME}`` (the
    bundle-relative directory of :mod:`tokunify.model.speech_input` and its continuous stream);
    None: the bundle hears speech only as units or codec tokens."""
    extra: dict[str, Any] = field(default_factory=dict)
    tokunify_version: str = field(default_factory=_version)

    def to_dict(self) -> dict[str, Any]:
        return {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = BUNDLE_FILE) -> BundleSpec:
        if d.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{source}: not a tokunify bundle spec (format={d.get('format')!r})")
        if d.get("version") != BUNDLE_VERSION:
            raise BundleError(f"{source}: bundle version {d.get('version')!r} is not supported")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known - {"format", "version"}
        if unknown:
            raise BundleError(f"{source}: unknown keys {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def files(self) -> list[str]:
        """Bundle-relative files the spec references (k-means centroids, vocoder weights)."""
        out = []
        for table in (self.speech_tokenizers, self.vocoders):
            for cfg in table.values():
                for key in ("centroids", "weights", "config", "checkpoint"):
                    v = cfg.get(key)
                    if v and not Path(v).is_absolute():
                        out.append(str(v))
                src = cfg.get("source")  # an encoder directory the bundle carries (extend)
                if isinstance(src, str) and src.startswith(CARRIED_PREFIX):
                    out.append(src)
        return out

    def check(self, vocab: UnifiedVocab, source: str = BUNDLE_FILE) -> None:
        """Every speech tokenizer/vocoder must name a stream of ``vocab`` with matching kind and
        sizes; a speech input must name a continuous stream."""
        if self.speech_input is not None:
            name = str(self.speech_input.get("stream", ""))
            try:
                kind = vocab.stream(name).kind
            except VocabError as e:
                raise BundleError(f"{source}: speech_input for {e}") from None
            if kind != "continuous":
                raise BundleError(
                    f"{source}: speech_input names stream {name!r}, a {kind} stream; it needs a "
                    "continuous one (extend with --continuous NAME)"
                )

        for kind, table in (
            ("speech tokenizer", self.speech_tokenizers),
            ("vocoder", self.vocoders),
        ):
            for name, cfg in table.items():
                try:
                    spec = vocab.stream(name)
                except VocabError as e:
                    raise BundleError(f"{source}: {kind} for {e}") from None
                if kind == "speech tokenizer" and cfg.get("kind") in TOKENIZERS:
                    want = stream_kind_of(cfg)  # the registered class says units or codec
                    if want != spec.kind:
                        raise BundleError(
                            f"{source}: speech tokenizer of stream {name!r} ({cfg['kind']}) gives {want}, vocab.json has a {spec.kind} stream"
                        )
                card = cfg.get("cardinality")
                if card is not None and card != spec.size:
                    raise BundleError(
                        f"{source}: {kind} of stream {name!r} has {card} units/codes, vocab.json has {spec.size}"
                    )
                nq = cfg.get("num_codebooks")
                if nq is not None and nq != spec.codebooks:
                    raise BundleError(
                        f"{source}: {kind} of stream {name!r} has {nq} codebooks, vocab.json has {spec.codebooks}"
                    )


@dataclass
class Bundle:
    """A loaded bundle. ``model`` is None when loaded with ``with_model=False``."""

    path: Path | None
    vocab: UnifiedVocab
    tokenizer: Any
    spec: BundleSpec
    model: nn.Module | None = None
    speech_input: Any = None
    """The :class:`~tokunify.model.speech_input.SpeechInput` (encoder + adapter) of a bundle whose
    spec has ``speech_input``, composed by :func:`load` with the model; else None."""

    def save(self, path: str | Path) -> Path:
        if self.model is None:
            raise BundleError("cannot save a bundle loaded without its model")
        return save_bundle(
            path, self.model, self.tokenizer, self.vocab, self.spec, copy_from=self.path,
            speech_input=self.speech_input,
        )  # fmt: skip

    def speech_tokenizer(
        self, stream: str | None = None, device: str | torch.device = "cpu"
    ) -> Any:
        """The speech tokenizer recorded for ``stream`` (default: the first), rebuilt from its config."""

        name = stream or self.vocab.default_stream
        cfg = self.spec.speech_tokenizers.get(name)
        if cfg is None:
            raise BundleError(f"{self.path}: no speech tokenizer recorded for stream {name!r}")
        return tokenizer_from_config(cfg, base_dir=self.path, device=device)


CARRIED_PREFIX = "speech_tokenizers/"  # bundle-relative files and directories the spec names
SPEECH_INPUT_DIR = "speech_input"  # the bundle-relative directory of a speech input


def save_bundle(
    path: str | Path,
    model: nn.Module,
    tokenizer: Any,
    vocab: UnifiedVocab,
    spec: BundleSpec,
    copy_from: str | Path | None = None,
    files: dict[str, str | Path] | None = None,
    state_dict: dict[str, Any] | None = None,
    speech_input: Any = None,
) -> Path:
    """Write a bundle atomically. Checks that model, tokenizer and vocab agree before writing.

    ``state_dict`` (the full weights of a sharded model, ``accelerator.get_state_dict``) replaces
    the model's own parameters in the saved weights. ``speech_input`` (a
    :class:`~tokunify.model.speech_input.SpeechInput`) is saved as ``speech_input/`` and named in
    the spec; without it, a spec that names one copies ``speech_input/`` from ``copy_from``.

    Files the spec references (centroids, vocoder weights) are copied from the bundle ``copy_from``,
    or from ``files`` (bundle-relative name -> source path).
    """
    vocab.check_tokenizer(tokenizer, "tokenizer to save")
    vocab.check_model_config(model.config, "model to save")
    if speech_input is not None:
        spec = replace(spec, speech_input={"path": SPEECH_INPUT_DIR, "stream": speech_input.stream})
    spec.check(vocab)
    sources = {rel: Path(copy_from) / rel for rel in spec.files()} if copy_from is not None else {}
    if speech_input is None and spec.speech_input is not None:
        rel = str(spec.speech_input.get("path", SPEECH_INPUT_DIR))
        if copy_from is None or not (Path(copy_from) / rel).is_dir():
            raise BundleError(f"bundle spec names speech input {rel!r}, but there is none to copy")
        sources[rel] = Path(copy_from) / rel
    sources.update({k: Path(v) for k, v in (files or {}).items()})
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        vocab.save(tmp / "vocab.json")
        for rel, src in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():  # an encoder directory; copied, never hard-linked (no shared inodes)
                shutil.copytree(src, tmp / rel)
                continue
            if not src.is_file():
                raise BundleError(f"{src}: referenced by the bundle spec but missing")
            shutil.copy2(src, tmp / rel)
        if speech_input is not None:
            speech_input.save(tmp / SPEECH_INPUT_DIR)
        (tmp / BUNDLE_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return Path(path)


def attach_vocoder(
    bundle: str | Path, vocoder_dir: str | Path, stream: str | None = None
) -> dict[str, Any]:
    """Copy a unit vocoder (``config.json`` + ``generator.safetensors`` or ``g_*``; CodeHiFiGAN or
    unit2mel) into a bundle and
    record it in ``tokunify.json`` (written atomically). Its unit count must match the stream."""
    root, src = Path(bundle), Path(vocoder_dir)
    vocab = UnifiedVocab.load(root)
    spec = load_spec(root)
    name = stream or vocab.default_stream
    cfg_file = src / "config.json"
    if not cfg_file.is_file():
        raise BundleError(f"{src}: no config.json; not a vocoder directory")
    weights = next(
        (p for p in [src / "generator.safetensors", *sorted(src.glob("g_*"))] if p.is_file()), None
    )
    if weights is None:
        raise BundleError(f"{src}: no generator.safetensors or g_* checkpoint")
    vcfg = json.loads(cfg_file.read_text())
    units = vcfg.get("num_embeddings")
    entry = {
        "kind": vcfg.get("model", "codehifigan"),
        "config": f"vocoders/{name}/config.json",
        "weights": f"vocoders/{name}/{weights.name}",
        "cardinality": units,
    }
    spec.vocoders[name] = entry
    spec.check(vocab, str(root / BUNDLE_FILE))  # unit count vs vocab
    (root / "vocoders" / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(cfg_file, root / entry["config"])
    shutil.copy2(weights, root / entry["weights"])
    atomic_write_text(root / BUNDLE_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")
    return entry


def load_spec(path: str | Path) -> BundleSpec:
    p = Path(path) / BUNDLE_FILE
    if not p.is_file():
        raise BundleError(f"{p}: missing; not a tokunify bundle")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{p}: not valid JSON: {e}") from e
    return BundleSpec.from_dict(d, str(p))


def load(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    with_model: bool = True,
) -> Bundle:
    """Load a bundle: vocab, tokenizer, spec and (optionally) the model, checked against each other;
    with the model, the bundle's speech input (encoder + adapter) where its spec names one."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise BundleError(
            f"{p}: not a directory; a bundle is a directory written by `tokunify extend` or `train`"
        )
    vocab = UnifiedVocab.load(p)
    spec = load_spec(p)
    spec.check(vocab, str(p / BUNDLE_FILE))
    tokenizer = AutoTokenizer.from_pretrained(str(p))
    vocab.check_tokenizer(tokenizer, f"{p} (tokenizer)")
    config = AutoConfig.from_pretrained(str(p))
    vocab.check_model_config(config, f"{p / 'config.json'}")
    model = None
    if with_model:
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
        if device is not None:
            model = model.to(device)
        model.eval()
    speech_input = None
    if with_model and spec.speech_input is not None:
        speech_input = _load_speech_input(p, spec, device)
    return Bundle(path=p, vocab=vocab, tokenizer=tokenizer, spec=spec, model=model,
                  speech_input=speech_input)  # fmt: skip


def _load_speech_input(p: Path, spec: BundleSpec, device: str | torch.device | None) -> Any:
    """The bundle's speech input, its stream checked against the spec's."""
    from tokunify.model.speech_input import (  # lazy (start-up: transformers' speech encoders, ~5 s)
        SpeechInputError,
        load_speech_input,
    )

    rel = str((spec.speech_input or {}).get("path", SPEECH_INPUT_DIR))
    try:
        si = load_speech_input(p / rel, device or "cpu")
    except SpeechInputError as e:
        raise BundleError(f"{p}: speech input: {e}") from None
    want = (spec.speech_input or {}).get("stream")
    if si.stream != want:
        raise BundleError(
            f"{p / rel}: speech input of stream {si.stream!r}, {BUNDLE_FILE} names {want!r}"
        )
    return si.eval()
