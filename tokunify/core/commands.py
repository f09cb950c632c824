"""The table of CLI subcommands (name -> args dataclass, function, by "module:name" reference) and its parser.

It sits in the bottom layer so that the console entry point (:mod:`tokunify.cli`), the demos and the
recipes that drive commands the way a user does (:mod:`tokunify.demos.default`,
:mod:`tokunify.train.ssl_recipe`) share one dispatcher without importing up a layer: a subcommand's
module is imported by reference, only when it runs, so ``tokunify --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tokunify.core.config import (
    ConfigError,
    add_arguments,
    apply_overrides,
    bool_flags,
    bool_words_to_flags,
    closest_options,
    from_dict,
    from_flat,
    read_data_file,
)


@dataclass(frozen=True)
class Command:
    args: str  # "module:Class" of the args dataclass
    run: str  # "module:function"
    help: str
    config_file: bool = False  # also a positional CONFIG file (every command takes --config)
    epilog: str | None = None  # "module:function" returning the text after the options in --help

    def load(self) -> tuple[type, Callable[[Any], Any]]:
        return _resolve(self.args), _resolve(self.run)

    def epilog_text(self) -> str | None:
        return _resolve(self.epilog)() if self.epilog else None


def _resolve(ref: str) -> Any:
    mod, _, name = ref.partition(":")
    return getattr(importlib.import_module(mod), name)


# Subcommands import their module only when run, so `tokunify --help` stays fast.
COMMANDS: dict[str, Command] = {
    "extend": Command(
        "tokunify.model.extend:ExtendArgs",
        "tokunify.model.extend:run_extend",
        "Extend a causal LM with speech tokens; write a bundle.",
        epilog="tokunify.model.extend:presets_epilog",
    ),
    "train-text-tokenizer": Command(
        "tokunify.tokenizers.commands:TrainTextTokenizerArgs",
        "tokunify.tokenizers.commands:run_train_text_tokenizer",
        "Train a SentencePiece text tokenizer.",
    ),
    "info": Command(
        "tokunify.model.commands:InfoArgs",
        "tokunify.model.commands:run_info",
        "Show a bundle's vocabulary layout.",
    ),
    "train-kmeans": Command(
        "tokunify.tokenizers.commands:TrainKMeansArgs",
        "tokunify.tokenizers.commands:run_train_kmeans",
        "Train unit k-means on features from a manifest.",
    ),
    "train-ssl": Command(
        "tokunify.train.ssl:SSLTrainConfig",
        "tokunify.train.ssl:run_train_ssl",
        "HuBERT masked-prediction pre-training of a HubertModel on unit targets.",
    ),
    "train-encoder": Command(
        "tokunify.train.ctc_encoder:CTCEncoderConfig",
        "tokunify.train.ctc_encoder:run_train_encoder",
        "CTC pre-training of a small Conformer/Transformer speech encoder on transcripts.",
    ),
    "ssl-units": Command(
        "tokunify.train.ssl_recipe:SSLUnitsConfig",
        "tokunify.train.ssl_recipe:run_ssl_units",
        "HuBERT iterations (MFCC k-means -> train-ssl -> layer k-means ...) to a units tokenizer.",
        config_file=True,
    ),
    "convert-kmeans": Command(
        "tokunify.tokenizers.commands:ConvertKMeansArgs",
        "tokunify.tokenizers.commands:run_convert_kmeans",
        "Convert a fairseq/sklearn k-means file to safetensors.",
    ),
    "prepare": Command(
        "tokunify.data.importers.commands:PrepareArgs",
        "tokunify.data.importers.commands:run_prepare",
        "Write a manifest from a corpus layout (LibriSpeech, Kaldi, NeMo, lhotse, HF, ...).",
    ),
    "tokenize": Command(
        "tokunify.tokenize.job:TokenizeArgs",
        "tokunify.tokenize.commands:run_tokenize",
        "Tokenize a manifest into a sharded token store.",
    ),
    "synth-interleave": Command(
        "tokunify.synth.interleave:SynthInterleaveArgs",
        "tokunify.synth.interleave:run_synth_interleave",
        "Synthetic interleaved text/speech documents from text (a bundle's TTS; GLM-4-Voice recipe).",
    ),
    "merge-stores": Command(
        "tokunify.tokenize.store_commands:MergeArgs",
        "tokunify.tokenize.store_commands:run_merge",
        "Join the slices of a sharded tokenize job.",
    ),
    "inspect": Command(
        "tokunify.tokenize.store_commands:InspectArgs",
        "tokunify.tokenize.store_commands:run_inspect",
        "Counts, hours, token statistics and examples of a store.",
    ),
    "train": Command(
        "tokunify.train.config:TrainConfig",
        "tokunify.train.loop:run_train",
        "Train a bundle on token stores with a task mixture (accelerate).",
        config_file=True,
    ),
    "train-vocoder": Command(
        "tokunify.train.vocoder:VocoderTrainConfig",
        "tokunify.train.vocoder:run_train_vocoder",
        "Train a unit HiFi-GAN vocoder on a token store.",
    ),
    "attach-vocoder": Command(
        "tokunify.generate.commands:AttachVocoderArgs",
        "tokunify.generate.commands:run_attach_vocoder",
        "Record a unit vocoder in a bundle.",
    ),
    "generate": Command(
        "tokunify.generate.commands:GenerateArgs",
        "tokunify.generate.commands:run_generate",
        "Generate by task tag (asr, tts, s2s, continue, text).",
    ),
    "eval": Command(
        "tokunify.eval.generative:EvalArgs",
        "tokunify.eval.generative:run_eval",
        "ASR WER/CER, TTS round-trip WER, resynthesis error, S2S on held-out stores.",
    ),
    "synth-corpus": Command(
        "tokunify.data.corpus.synth:SynthCorpusArgs",
        "tokunify.data.corpus.synth:run_synth_corpus",
        "Synthesize an offline speech corpus with espeak-ng.",
    ),
    "demo": Command(
        "tokunify.demos.common:DemoArgs",
        "tokunify.demos.commands:run_demo",
        "The offline end-to-end demo.",
    ),
    "eval-slm": Command(
        "tokunify.eval.slm.commands:EvalSlmArgs",
        "tokunify.eval.slm.commands:run_eval_slm",
        "Speech-LM likelihood benchmark (sWUGGY, sBLIMP, s/tStoryCloze, SALMon) from a local dir.",
    ),
    "synth-minimal-pairs": Command(
        "tokunify.data.corpus.minimal_pairs:MinimalPairsArgs",
        "tokunify.data.corpus.minimal_pairs:run_synth_minimal_pairs",
        "Synthesize lexical, syntactic and topic minimal pairs with espeak-ng.",
    ),
    "encode-audio": Command(
        "tokunify.tokenizers.commands:EncodeAudioArgs",
        "tokunify.tokenizers.commands:run_encode_audio",
        "Encode audio files to local ids.",
    ),
    "make-chat-data": Command(
        "tokunify.synth.chat_data:MakeChatDataArgs",
        "tokunify.synth.chat_data:run_make_chat_data",
        "Conversation store: speech user turns, a text chat model's answers (modal invariance).",
    ),
    "serve": Command(
        "tokunify.serve.config:ServeArgs",
        "tokunify.serve.commands:run_serve",
        "Serve a bundle: OpenAI-compatible audio/chat API and a browser page.",
    ),
    "chat": Command(
        "tokunify.chat.commands:ChatArgs",
        "tokunify.chat.commands:run_chat",
        "Chat with a bundle: multi-turn, typed text or wav paths in, text or wavs out.",
    ),
}


def config_flag(argv: list[str]) -> bool:
    """Whether ``--config FILE`` is on the command line (then every option is an override)."""
    return any(a == "--config" or a.startswith("--config=") for a in argv)


def build_parser(
    command: str | None = None, with_config: bool = False, listing: bool = False
) -> argparse.ArgumentParser:
    """The full parser, or (``command``) one whose other subcommands are stubs, for speed; with
    ``listing`` every subcommand is a stub (``tokunify --help`` imports no subcommand's module).

    Every subcommand takes ``--config FILE`` (YAML/TOML/JSON, the args dataclass as data) and
    ``--a.b value`` overrides; ``with_config`` builds the override form, where nothing is required
    on the command line because the file may hold it.
    """
    parser = argparse.ArgumentParser(prog="tokunify", description="Unified speech-text token LMs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        if listing or (command is not None and name != command):
            sub.add_parser(name, help=cmd.help)
            continue
        cls, _ = cmd.load()
        p = sub.add_parser(
            name,
            help=cmd.help,
            description=(cls.__doc__ or cmd.help).strip(),
            epilog=cmd.epilog_text(),
        )
        overrides = cmd.config_file or with_config
        if cmd.config_file:
            p.add_argument(
                "config_path",
                metavar="CONFIG",
                nargs="?",
                help="YAML/TOML config file (the same as --config); options override it",
            )
        p.add_argument(
            "--config",
            dest="config",
            metavar="FILE",
            help="YAML/TOML/JSON file with these options as keys (nested sections for dotted "
            "options); options given on the command line override it",
        )
        add_arguments(p, cls, overrides=overrides)
    return parser


def subcommand_parser(
    parser: argparse.ArgumentParser, command: str | None
) -> argparse.ArgumentParser | None:
    """The parser of one subcommand inside the full parser (None for an unknown name)."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return None


def refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Usage, then one line naming the unknown option(s) and the closest valid names; exit 2."""
    parser.print_usage(sys.stderr)
    wrong = next((a for a in unknown if a.startswith("-")), unknown[0])
    near = closest_options(parser, wrong) if wrong.startswith("-") else []
    hint = f" (did you mean: {', '.join(near)}?)" if near else ""
    what = "unknown option" if wrong.startswith("-") else "unexpected argument"
    parser.exit(2, f"{parser.prog}: error: {what} {wrong}{hint}\n")


def parse_command(argv: list[str]) -> tuple[str | None, Any]:
    """argv -> (subcommand, its args dataclass); :class:`ConfigError` for a bad config file."""
    command = next((a for a in argv if not a.startswith("-")), None)
    known = command in COMMANDS
    parser = build_parser(command if known else None, config_flag(argv), listing=not known)
    sub = subcommand_parser(parser, command)
    if sub is not None:
        argv = bool_words_to_flags(argv, bool_flags(sub))
        opts = [o for a in sub._actions for o in a.option_strings]
        for a in argv:  # before argparse, whose "required" error would come first
            name = a.partition("=")[0]
            if a.startswith("--") and a != "--" and not any(o.startswith(name) for o in opts):
                refuse_unknown(sub, [a])
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        refuse_unknown(parser if sub is None else sub, unknown)
    if ns.command is None:
        parser.print_help()
        return None, None
    cmd = COMMANDS[ns.command]
    cls, _ = cmd.load()
    path = getattr(ns, "config", None) or getattr(ns, "config_path", None)
    if cmd.config_file and getattr(ns, "config", None) and getattr(ns, "config_path", None):
        raise ConfigError("give the config file once: as CONFIG or as --config")
    values = {k: v for k, v in vars(ns).items() if k not in ("command", "config_path", "config")}
    if path is not None or cmd.config_file:
        data = apply_overrides(read_data_file(path) if path else {}, values)
        args = from_dict(cls, data, source=str(path or "command line"))
    else:
        args = from_flat(cls, values)
    check_device(args)
    return ns.command, args


def check_device(args: Any) -> None:
    """A command's ``device`` field names a torch device (``cpu``, ``cuda``, ``cuda:1``, ``mps``;
    ``auto`` where a command offers it),
    refused here in one line rather than in torch's traceback wherever it is first used."""
    device = getattr(args, "device", None)
    if not isinstance(device, str) or device == "auto":  # "auto": the command picks
        return
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"device: {device!r} is not a torch device (cpu, cuda, cuda:N, mps, ...)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = next((a for a in argv if not a.startswith("-")), "tokunify")
    try:
        command, args = parse_command(argv)
        if command is None:
            return 2
        _, run = COMMANDS[command].load()
        run(args)
    except (
        ValueError,
        FileNotFoundError,
    ) as e:  # our errors subclass ValueError and name the input
        print(f"tokunify {name}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
