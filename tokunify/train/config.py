"""Typed training config. YAML/TOML files are data; ``--section.key value`` overrides them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tokunify.tasks import DEFAULT_PAIR_KEY, FORMATS


@dataclass
class DataConfig:
    stores: list[str] = field(default_factory=list)
    """Token stores to train on (from `tokunify tokenize`)."""
    mixture: dict[str, float] = field(default_factory=lambda: {"asr": 0.5, "tts": 0.5})
    """Task -> sampling weight, e.g. {continue: 0.4, asr: 0.2, tts: 0.2, text: 0.1, interleave: 0.1}."""
    stream: str | None = None
    """Speech stream the tasks use (default: the bundle's first stream)."""
    eval_stores: list[str] = field(default_factory=list)
    """Held-out stores for per-task eval loss (default: a hash split of the training stores)."""
    eval_fraction: float = 0.02
    """Without eval_stores: share of utterances (by id hash) held out of training for eval."""
    seq_len: int = 1024
    """Packed sequence length."""
    loss_on_input: bool = False
    """Train on the input side of asr/tts/s2s too (default: target side only)."""
    s2s_key: str = DEFAULT_PAIR_KEY
    """Manifest field naming the target utterance of an s2s pair."""
    manifests: list[str] = field(default_factory=list)
    """Manifests to tokenize on the fly with the bundle's speech tokenizer (small experiments; the
    first epoch pays the tokenizer, later ones read the cache store). Combines with `stores`."""
    manifest_cache: str = ""
    """Cache store directory root for `manifests` (default: OUT/token_cache)."""
    manifest_chunk_size: int = 256
    """Manifest rows tokenized (and cached as one shard) at a time."""
    chat_loss_on: list[str] = field(default_factory=lambda: ["assistant"])
    """Conversation turns (roles: system, user, assistant) the `chat` task trains on."""
    chat_template: str = ""
    """Chat template of the `chat` task: "" uses the bundle tokenizer's own chat template when it
    has one, else the default template; or a registered name (default, llama3, chatml, llama2)."""
    instructions: str = ""
    """Instruction pool YAML (task -> train/heldout phrasings) of the instruct_* tasks ("": the
    package's pool, tokunify/tasks/instructions.yaml)."""
    instruct_task_tag: bool = False
    """instruct_* tasks keep the base task's tag (<|task:asr|>) next to the instruction."""
    instruction_word_dropout: float = 0.0
    """instruct_* tasks drop each word of the drawn instruction with this probability (at least one
    kept), drawn per document: an augmentation against memorised phrasings."""
    long_documents: Literal["split", "truncate", "drop"] = "split"
    """Documents longer than seq_len: split into seq_len pieces (every token trained once, as a
    pretraining run expects), truncate (keep the start) or drop; each counted in the log."""


@dataclass
class OptimConfig:
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """Decoupled weight decay (never on embeddings, norms and biases)."""
    betas: tuple[float, ...] = (0.9, 0.95)
    """AdamW betas."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor, as a fraction of lr."""
    grad_clip: float = 1.0
    """Max gradient norm (0: off)."""


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train LoRA adapters (peft) instead of the full body."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Modules that get adapters."""


@dataclass
class SpeechInputConfig:
    """Continuous speech input: an encoder and an adapter whose frames fill the placeholders of a
    continuous stream (SpeechVerse, SALMONN, Qwen-Audio, LLaMA-Omni). The encoder runs in the
    training step on each record's audio; the bundle's vocab must have the stream (`tokunify
    extend --continuous NAME`). A bundle that already has a speech input (an earlier run's) keeps
    training it when `encoder` is empty."""

    encoder: str = ""
    """Encoder: a transformers hub id or directory (Whisper, WavLM, HuBERT, wav2vec2,
    wav2vec2-conformer, `train-ssl` output); empty: the bundle's own speech input, if any."""
    layer: str = "-1"
    """Hidden state the adapter reads: an index (-1: the last) or "weighted" (learned sum)."""
    adapter: str = "conv"
    """Adapter: conv (SpeechVerse), stack (Qwen-Audio / LLaMA-Omni) or qformer (SALMONN)."""
    adapter_args: dict[str, Any] = field(default_factory=dict)
    """Options of the adapter, e.g. {stride: 2, layers: 2} for conv, {k: 5} for stack."""
    freeze: bool = True
    """Keep the encoder's weights fixed (the adapter, and weighted-layer weights, still train)."""
    stream: str = "enc"
    """The bundle's continuous stream the frames fill (`tokunify extend --continuous NAME`)."""

    @property
    def layer_value(self) -> int | str:
        """``layer`` as :class:`~tokunify.model.encoders.SpeechEncoder` takes it."""
        text = str(self.layer).strip()
        return text if text == "weighted" else int(text)


@dataclass
class TrainConfig:
    """Train a bundle on token stores with a task mixture (accelerate: CPU, DDP, FSDP, DeepSpeed)."""

    bundle: str = ""
    """Bundle to start from (`tokunify extend` output or an earlier checkpoint)."""
    out: str = ""
    """Run directory: checkpoints/, final/ (a bundle), log.jsonl, tensorboard/."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    speech_input: SpeechInputConfig = field(default_factory=SpeechInputConfig)
    llm: Literal["full", "lora", "frozen"] = "full"
    """The LM's weights: full (as `freeze` says), lora (the `lora` section's adapters; same as
    lora.enabled) or frozen (no LM weight trains: only the speech input does; SpeechVerse,
    AudioChatLlama)."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 8
    """Packed sequences per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    seed: int = 0
    """Seed for data order, task sampling and init."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, fp32 on CPU."""
    packed_attention: bool = True
    """Per-document attention without an L x L mask where the model allows (see the log's
    `attention` row); off: the dense block mask, for comparison."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    freeze: Literal["none", "text_rows", "body", "body+text_rows"] = "none"
    """none; text_rows: original text embedding rows fixed; body: only embeddings train; body+text_rows: only new rows."""
    eval_every: int = 200
    """Steps between per-task eval losses (0: only at the end)."""
    eval_examples: int = 64
    """Held-out examples per task for eval."""
    save_every: int = 500
    """Steps between checkpoints (0: only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept (older ones are deleted)."""
    log_every: int = 10
    """Steps between log lines."""
    resume: bool | None = None
    """An existing run in `out`: by default resume from its newest checkpoint only when this
    config matches the checkpoint's, else refuse naming the differing keys. Keys that may change on
    a resume: steps, max_minutes, budget_minutes, out, progress, log_every, eval_every, save_every,
    keep_checkpoints, checkpoint_notify, weight_digests. --resume: resume even with other keys
    changed (they are listed); --no-resume: refuse an existing run (see --overwrite)."""
    overwrite: bool = False
    """Delete an existing run in `out` (checkpoints/, final/, log.jsonl) and start afresh."""
    cpu: bool = False
    """Force CPU even where a GPU is present."""
    progress: bool = True
    """Show a progress bar; off: a log line every log_every steps (step, loss, lr, tokens/s, ETA)."""
    checkpoint_notify: str = ""
    """File (or FIFO) that gets the path of each completed checkpoint, one line each, for a
    supervisor; with a FIFO the run waits there until a reader opens it (empty: off)."""
    weight_digests: bool = False
    """Record a digest of every rank's weights in each checkpoint's trainer.json (DDP replicas must
    agree; costs a CPU copy of the weights per checkpoint)."""
    max_minutes: float = 0.0
    """Stop this invocation after this many minutes (0: no limit) with a final checkpoint, e.g.
    before a job's wall-clock limit; the schedule still assumes `steps` (a resume goes on)."""
    budget_minutes: float = 0.0
    """Train for at most this many minutes in all, counting the time before a resume (0: no
    budget): after warmup the cosine decay runs over whichever runs out first, the remaining steps
    or the remaining time, so the run ends at the LR floor either way; the log's `stopped` row says
    which. The time is the slowest process's and is kept in checkpoints."""

    def validate(self) -> None:
        if not self.bundle or not self.out:
            raise ValueError("train config needs `bundle` and `out`")
        if self.overwrite and self.resume:
            raise ValueError("give one of resume and overwrite, not both")
        if not self.data.stores and not self.data.manifests:
            raise ValueError("train config needs data.stores or data.manifests")
        unknown = set(self.data.mixture) - set(FORMATS)
        if unknown:
            raise ValueError(
                f"data.mixture has unknown tasks {sorted(unknown)}; known: {sorted(FORMATS)}"
            )
        if (
            not self.data.mixture
            or any(w < 0 for w in self.data.mixture.values())
            or sum(self.data.mixture.values()) <= 0
        ):
            raise ValueError("data.mixture needs non-negative weights with a positive sum")
        if not 0.0 <= self.data.instruction_word_dropout < 1.0:
            raise ValueError(
                f"data.instruction_word_dropout must be in [0, 1), got {self.data.instruction_word_dropout}"
            )
        if self.max_minutes < 0 or self.budget_minutes < 0:
            raise ValueError("max_minutes and budget_minutes must be >= 0 (0: no limit)")
        if self.llm == "frozen" and (self.lora.enabled or self.freeze != "none"):
            raise ValueError("llm: frozen trains no LM weight; drop lora.enabled and freeze")
        layer = str(self.speech_input.layer).strip()
        if layer != "weighted" and not layer.lstrip("-").isdigit():
            raise ValueError(
                f"speech_input.layer must be an int or 'weighted', got {self.speech_input.layer!r}"
            )
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.data.seq_len < 8:
            raise ValueError("steps, batch_size, grad_accum must be >= 1 and data.seq_len >= 8")
