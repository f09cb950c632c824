"""Text tokenizers: the base LLM's HF tokenizer, or a SentencePiece model trained on the corpus.

A SentencePiece model is turned into a Hugging Face fast tokenizer (``tokenizer.json``) so that a
bundle loads with plain ``AutoTokenizer`` and no tokunify import. The conversion is written here
with the ``tokenizers`` API because the library converters (transformers' ``SpmConverter``,
``SentencePieceUnigramTokenizer.from_spm``) need protobuf and differ across transformers 4.x/5.x;
reading pieces and scores through the sentencepiece API needs neither. A test checks that both
tokenizers give identical ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPM_FILE = "spm.model"
# SentencePiece ids of the special pieces we train with.
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"


class TextTokenizerError(ValueError):
    pass


def train_sentencepiece(
    corpus: str | Path | Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 1000,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    byte_fallback: bool = True,
) -> Any:
    """Train a SentencePiece model on a text file (one sentence per line) or an iterable of lines.

    Writes ``out_dir/spm.model`` and the converted HF tokenizer files; returns the HF tokenizer.
    Normalisation is the identity and whitespace is kept as is, so the HF conversion is exact.
    ``vocab_size`` is an upper bound: a small corpus may give fewer pieces.
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(corpus, (str, Path)):
        path = Path(corpus)
        if not path.is_file():
            raise TextTokenizerError(f"{path}: corpus file not found")
        kwargs: dict[str, Any] = {"input": str(path)}
    else:
        kwargs = {"sentence_iterator": iter(corpus)}
    if model_type != "unigram":
        raise TextTokenizerError(
            f"model_type {model_type!r}: only 'unigram' converts exactly to HF here"
        )
    try:
        spm.SentencePieceTrainer.train(
            **kwargs,
            model_prefix=str(out / "spm"),
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            minloglevel=2,
            num_threads=1,
        )
    except RuntimeError as e:
        raise TextTokenizerError(
            f"SentencePiece training failed on {kwargs.get('input', 'corpus')}: {e}"
        ) from e
    tok = sentencepiece_to_hf(out / SPM_FILE)
    tok.save_pretrained(out)
    return tok


def sentencepiece_to_hf(model_file: str | Path) -> Any:
    """An HF fast tokenizer that encodes and decodes exactly like a unigram SentencePiece model."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    path = Path(model_file)
    if not path.is_file():
        raise TextTokenizerError(f"{path}: SentencePiece model not found")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    byte_fallback = any(sp.is_byte(i) for i in range(sp.get_piece_size()))
    core = Tokenizer(models.Unigram(pieces, unk_id=sp.unk_id(), byte_fallback=byte_fallback))
    core.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    core.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    specials = {
        "unk_token": sp.id_to_piece(sp.unk_id()),
        "bos_token": sp.id_to_piece(sp.bos_id()) if sp.bos_id() >= 0 else None,
        "eos_token": sp.id_to_piece(sp.eos_id()) if sp.eos_id() >= 0 else None,
        "pad_token": sp.id_to_piece(sp.pad_id()) if sp.pad_id() >= 0 else None,
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=core, **{k: v for k, v in specials.items() if v}
    )


def load_text_tokenizer(path_or_id: str | Path) -> Any:
    """An HF tokenizer from a dir/hub id, or converted from a SentencePiece ``.model`` file."""
    p = Path(path_or_id)
    if p.suffix == ".model" and p.is_file():
        return sentencepiece_to_hf(p)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path_or_id))
    except (OSError, ValueError) as e:
        raise TextTokenizerError(f"{path_or_id}: cannot load a text tokenizer: {e}") from e
