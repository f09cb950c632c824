"""The setup of a training run: accelerator (and its checks), data, model (freezing, LoRA), optimizer,
schedule, the run directory's rules (resume or refuse) and resuming from a checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from tokunify.data.store import StoreError, TokenStore
from tokunify.model.bundle import Bundle
from tokunify.model.bundle import load as load_bundle
from tokunify.model.extend import freeze_text_rows
from tokunify.model.speech_input import SpeechInput, SpeechInputError
from tokunify.train import attention, checkpoints
from tokunify.train.checkpoints import CKPT_DIR, TRAINER_FILE
from tokunify.train.config import TrainConfig
from tokunify.train.data import (
    Formatter,
    RecordSource,
    TaskData,
    check_compatible,
    check_usable,
    eval_docs,
)
from tokunify.train.encoder_input import FrameCounts, ManifestRecords, SpeechFeed
from tokunify.train.onthefly import manifest_stores
from tokunify.train.packing import Doc


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX; Linux ``/proc/cpuinfo``).

    Without it, bf16 autocast on CPU is emulated and slower than fp32, so ``auto`` stays fp32 on
    CPU; callers that want the speed (the demo: 1.6x tokens/s with the same losses, measured on
    llama-small) opt in where this is true.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def reset_single_process_accelerator() -> None:
    """Forget accelerate's process-wide state when this is not a distributed launch.

    accelerate keeps one state per process and refuses a second ``Accelerator`` with another
    mixed precision. Runs started in-process one after another (the demo, notebooks, tests) are
    independent jobs, so a single-process run starts clean; under ``accelerate launch`` /
    torchrun (``WORLD_SIZE`` > 1) the launcher's state is kept.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def resolve_mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if not cfg.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


class Schedule:
    """The LR factor of each optimizer step (``LambdaLR``'s lambda): linear warmup over
    ``optim.warmup_steps``, then cosine decay to ``optim.min_lr_ratio``.

    With ``budget_minutes`` the decay runs over whichever runs out first, the remaining steps or
    the remaining training time, so a run that time ends still finishes at the LR floor: each
    step's LR is the one for the time it is expected to end at (now + the mean step), and a step
    expected to end past the budget is not started (the run overruns only by how much its last
    step is slower than the mean). The
    training time is the slowest process's (:meth:`tick` gets the reduced value), so every replica
    computes the same LR; it lives in this object's ``__dict__``, which ``LambdaLR.state_dict``
    saves with each checkpoint, so a resumed run goes on with the time already spent.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.elapsed_s = self.next_end_s = 0.0
        self.warmup_end_s: float | None = None
        self.configure(cfg)

    def configure(self, cfg: TrainConfig) -> None:
        """Take the settings from ``cfg`` (again after a resume restored the saved ones)."""
        self.warmup, self.steps = cfg.optim.warmup_steps, cfg.steps
        self.floor, self.budget_s = cfg.optim.min_lr_ratio, 60.0 * cfg.budget_minutes

    def tick(self, elapsed_s: float, steps_done: int, step_s: float) -> None:
        """Training seconds so far after ``steps_done`` optimizer steps, and the mean seconds of a
        step (both agreed across processes). The next step's LR is the one for the time it will
        end at; a step that would end past the budget is not started."""
        self.elapsed_s, self.next_end_s = elapsed_s, elapsed_s + step_s
        if self.warmup_end_s is None and steps_done >= self.warmup:
            self.warmup_end_s = elapsed_s

    def progress(self, step: int) -> float:
        """How far the decay is at ``step`` (0 after warmup, 1 at the floor)."""
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.budget_s and self.warmup_end_s is not None:
            left = max(self.budget_s - self.warmup_end_s, 1e-9)
            t = max(t, (self.next_end_s - self.warmup_end_s) / left)
        return min(1.0, t)

    @property
    def out_of_time(self) -> bool:
        return bool(self.budget_s) and self.next_end_s > self.budget_s

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * self.progress(step)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay only matrices of the body: never embeddings (frozen text rows must not decay), norms, biases."""
    emb_ids = {id(model.get_input_embeddings().weight)}
    out_emb = model.get_output_embeddings()
    if out_emb is not None:
        emb_ids.add(id(out_emb.weight))
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in emb_ids else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def freeze_body(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """``freeze: body`` / ``body+text_rows``: only the embedding matrices keep training;
    ``llm: frozen``: nothing of the LM trains."""
    if cfg.llm == "frozen":
        model.requires_grad_(False)
        return
    if cfg.freeze not in ("body", "body+text_rows"):
        return
    keep = {id(model.get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        keep.add(id(model.get_output_embeddings().weight))
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def freeze_rows(model: torch.nn.Module, cfg: TrainConfig, bundle: Bundle) -> None:
    """Hold the original text rows fixed. Runs after LoRA is applied: peft trains a *copy* of the
    embeddings (``modules_to_save``), and the hook must sit on the copy that trains."""
    if cfg.llm == "frozen":
        return
    mode = cfg.freeze
    if mode in ("text_rows", "body+text_rows") or (mode == "none" and bundle.spec.freeze_text_rows):
        freeze_text_rows(model, bundle.vocab)


def apply_freezing(model: torch.nn.Module, cfg: TrainConfig, bundle: Bundle) -> None:
    freeze_body(model, cfg)
    freeze_rows(model, cfg, bundle)


def apply_lora(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ValueError("lora.enabled needs `pip install tokunify[lora]` (peft)") from e
    names = {m.rsplit(".", 1)[-1] for m, _ in model.named_modules()}
    tied = (
        model.get_output_embeddings() is not None
        and model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    # The new speech rows must learn: the embeddings train fully (the head too, unless it is tied).
    save = [n for n in ("embed_tokens", "wte") if n in names] + (
        [] if tied else [n for n in ("lm_head",) if n in names]
    )
    extra = (
        {"ensure_weight_tying": True}
        if tied and "ensure_weight_tying" in LoraConfig.__dataclass_fields__
        else {}
    )
    lc = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        modules_to_save=save,
        **extra,
    )
    return get_peft_model(model, lc)


def cfg_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class RunLog:
    """``log.jsonl`` (main process), trackers, and the progress line (``progress: false``)."""

    acc: Any
    path: Path
    lines: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def write(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.acc.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.lines += 1
        nums = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if nums:
            self.acc.log(nums, step=row["step"])

    def say(self, text: str) -> None:
        if self.acc.is_main_process:
            print(f"train: {text}", flush=True)


@dataclass
class Run:
    """What :func:`setup` builds and :func:`train` / :func:`cleanup` use."""

    cfg: TrainConfig
    acc: Any
    bundle: Bundle
    model: torch.nn.Module
    opt: Any
    sched: Any
    schedule: Schedule
    data: TaskData
    ev_docs: dict[str, list[Doc]]
    log: RunLog
    attention: str
    start: int = 0
    resumed_from: str | None = None
    speech: SpeechFeed | None = None
    """The speech input of the step (encoder + adapter, prepared), where the run has one."""

    @property
    def speech_input(self) -> SpeechInput | None:
        """The unwrapped speech input (what checkpoints and the bundle save)."""
        return None if self.speech is None else self.acc.unwrap_model(self.speech.module)

    @property
    def tasks(self) -> list[str]:
        return self.data.tasks


def make_accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator

    trackers = []
    try:
        import tensorboard  # noqa: F401

        trackers = ["tensorboard"]
    except ImportError:
        pass
    reset_single_process_accelerator()
    return Accelerator(
        cpu=cfg.cpu,
        mixed_precision=resolve_mixed_precision(cfg),
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=trackers or None,
        project_dir=str(cfg.out),
    )


# `accelerate launch --config_file` tells the processes which sharding its config asked for through
# these variables; accelerate itself only engages them on accelerators (see check_sharding).
SHARDING_REQUESTS = {"FSDP": "ACCELERATE_USE_FSDP", "DEEPSPEED": "ACCELERATE_USE_DEEPSPEED"}


def check_sharding(acc: Any, env: Mapping[str, str] | None = None) -> None:
    """Refuse a run whose launch config asked for FSDP or DeepSpeed that accelerate did not set up.

    accelerate (1.x) turns FSDP and DeepSpeed on only for GPU-family process groups: on CPU
    (`use_cpu`, ACCELERATE_USE_CPU, or no accelerator) it silently runs plain data parallelism
    (MULTI_CPU), every process holding the whole model. A user who asked for sharding would then
    save and resume something other than what the config says, so this is an error, not a warning.
    """
    env = os.environ if env is None else env
    got = acc.distributed_type.name
    for want, var in SHARDING_REQUESTS.items():
        if env.get(var, "false").lower() in ("1", "true", "yes") and got != want:
            import accelerate

            raise ValueError(
                f"the accelerate launch config asks for {want} ({var}=true), but accelerate "
                f"{accelerate.__version__} set up {got} on {acc.device.type}: it engages {want} only "
                "on GPU-family devices, not on CPU; use a DDP config (or none) here, or run on GPUs"
            )


def manifest_sources(cfg: TrainConfig, bundle: Bundle, stream: str, device: str) -> list[Any]:
    """Stores of ``data.manifests``: tokenized on the fly with the bundle's speech tokenizer, or,
    when the tasks' stream is continuous (speech heard only through the encoder), the rows as they
    are."""
    if bundle.vocab.stream(stream).continuous:
        return [ManifestRecords(m) for m in cfg.data.manifests]
    return manifest_stores(
        cfg.data.manifests, cfg.data.manifest_cache or Path(cfg.out) / "token_cache", stream, bundle,
        cfg.data.manifest_chunk_size, device,
    )  # fmt: skip


def build_data(
    cfg: TrainConfig, bundle: Bundle, acc: Any, speech_input: SpeechInput | None = None
) -> tuple[TaskData, dict[str, list[Doc]]]:
    """This rank's resumable training stream and the fixed held-out documents. With a speech
    input, every record also holds its continuous stream's frame count (:class:`FrameCounts`)
    and speech-input tasks hear that stream (``TaskOptions.input_streams``)."""
    vocab = bundle.vocab
    stream = cfg.data.stream or vocab.default_stream
    if vocab.stream(stream).continuous and speech_input is None:
        raise ValueError(
            f"train: stream {stream!r} is continuous (encoder input); set speech_input.encoder"
        )
    token_stores = [TokenStore(s) for s in cfg.data.stores]
    stores = token_stores + manifest_sources(cfg, bundle, stream, str(acc.device))
    if not stores:
        raise StoreError("train: data.stores and data.manifests name no store")
    check_compatible(
        [s for s in stores if not isinstance(s, ManifestRecords)], vocab, bundle.tokenizer,
        bundle.spec, stream,
    )  # fmt: skip
    eval_stores: list[Any] = [TokenStore(s) for s in cfg.data.eval_stores]
    check_compatible(eval_stores, vocab, bundle.tokenizer, bundle.spec, stream)
    heard: tuple[str, ...] = ()
    if speech_input is not None:
        heard = (speech_input.stream,)
        stores = [FrameCounts(s, speech_input, speech_input.stream) for s in stores]
        eval_stores = [FrameCounts(s, speech_input, speech_input.stream) for s in eval_stores]
    frame_rate = (
        speech_input.frame_rate
        if speech_input is not None and stream == speech_input.stream
        else stores[0].meta.streams[stream].frame_rate
    )
    fmt = Formatter(vocab, bundle.tokenizer, cfg.data, stream, frame_rate, heard)
    source = RecordSource(stores)
    if not cfg.data.manifests:  # on-the-fly stores tokenize when read: the watchdog guards them
        check_usable(source, fmt, cfg.data)
    data = TaskData(source, fmt, cfg.data, cfg.seed, acc.process_index, acc.num_processes)
    ev_source = RecordSource(eval_stores) if eval_stores else source
    ev_docs = eval_docs(
        ev_source, fmt, cfg.data, cfg.eval_examples, use_split=not eval_stores, seed=cfg.seed
    )
    return data, ev_docs


def build_model(cfg: TrainConfig, bundle: Bundle) -> tuple[torch.nn.Module, str]:
    """The bundle's model, frozen, on its packed-attention path, with LoRA where asked."""
    model = bundle.model
    model.train()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    path = attention.choose(model) if cfg.packed_attention else attention.DENSE_MASK
    freeze_body(model, cfg)
    if cfg.lora.enabled or cfg.llm == "lora":
        model = apply_lora(model, cfg)
    freeze_rows(model, cfg, bundle)
    return model, path


def build_speech_input(cfg: TrainConfig, bundle: Bundle, device: Any) -> SpeechInput | None:
    """The run's speech input: a new adapter on ``speech_input.encoder``, or the bundle's own
    (an earlier run's) when the config names no encoder; None without either."""
    sc = cfg.speech_input
    if not sc.encoder:
        return None if bundle.speech_input is None else bundle.speech_input.to(device).train()
    vocab = bundle.vocab
    if sc.stream not in {s.name for s in vocab.streams} or not vocab.stream(sc.stream).continuous:
        raise ValueError(
            f"speech_input.stream {sc.stream!r}: the bundle {bundle.path} has no continuous stream "
            f"of that name (its streams: {[s.name for s in vocab.streams]}); extend with "
            f"--continuous {sc.stream}"
        )
    try:
        si = SpeechInput.build(
            sc.encoder, int(bundle.model.get_input_embeddings().weight.shape[1]), sc.adapter,
            layer=sc.layer_value, freeze=sc.freeze, stream=sc.stream,
            adapter_options=dict(sc.adapter_args), device=device,
        )  # fmt: skip
    except (SpeechInputError, ValueError) as e:
        raise ValueError(f"speech_input: {e}") from None
    return si.train()


def speech_param_group(si: SpeechInput, weight_decay: float) -> list[dict[str, Any]]:
    """The speech input's trainable parameters (matrices decay; biases, norms, layer weights not)."""
    ps = [p for p in si.parameters() if p.requires_grad]
    return [
        {"params": [p for p in ps if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0},
    ]


def resume(run: Run) -> None:
    """Load the newest checkpoint (model, optimizer, schedule, RNGs, data position) if any."""
    cfg, acc = run.cfg, run.acc
    ckpt = checkpoints.latest(cfg.out)  # check_existing_run refused or cleared the others
    if ckpt is None:
        if acc.is_main_process and run.log.path.exists():
            run.log.path.unlink()
        return
    meta = json.loads((ckpt / TRAINER_FILE).read_text())
    if meta["world_size"] != acc.num_processes:
        raise ValueError(
            f"{ckpt}: saved with {meta['world_size']} processes, resuming with {acc.num_processes}"
        )
    acc.load_state(str(ckpt / "state"))
    run.schedule.configure(cfg)  # the saved training time stays; steps and budget are this config's
    run.data.load_state(meta["data"][acc.process_index])
    run.start, run.resumed_from = int(meta["step"]), str(ckpt)
    if acc.is_main_process and run.log.path.exists():  # drop lines logged after the checkpoint
        lines = run.log.path.read_text().splitlines()[: meta["log_lines"]]
        run.log.path.write_text("".join(line + "\n" for line in lines))
    run.log.lines = meta["log_lines"]


# Keys that may change when a run resumes: how long it goes on and what it logs and keeps.
RESUMABLE_KEYS = frozenset(
    {"out", "steps", "max_minutes", "budget_minutes", "progress", "log_every", "eval_every",
     "save_every", "keep_checkpoints", "checkpoint_notify", "weight_digests", "resume", "overwrite"}
)  # fmt: skip


LOCK_FILE = "train.lock"


RUN_FILES = (CKPT_DIR, "final", "log.jsonl")  # what --overwrite deletes (the token cache stays)


def flat_items(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"data.mixture.asr": 0.5, ...}`` of nested config data (lists compared whole)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flat_items(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def field_defaults(cls: type) -> dict[str, Any]:
    """``{"data.seq_len": 1024, ...}``: the dotted default of every field of a config dataclass
    (nested configs through their own defaults; required fields have none)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            continue
        data = json.loads(json.dumps(asdict(value) if is_dataclass(value) else value))
        out.update(flat_items(data, f"{f.name}." if isinstance(data, dict) else f.name))
    return out


def config_changes(
    saved: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """The dotted keys (outside :data:`RESUMABLE_KEYS`) whose values differ, ``key (a -> b)``. A key
    the saved config lacks (a field added by a newer tokunify) differs only if its value now is not
    its default (``defaults``, dotted)."""
    a, b = flat_items(saved), flat_items(json.loads(json.dumps(now)))
    a = {**{k: v for k, v in (defaults or {}).items() if k in b}, **a}
    keys = sorted(k for k in set(a) | set(b) if k.split(".")[0] not in RESUMABLE_KEYS)
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in keys if a.get(k) != b.get(k)]


def check_existing_run(cfg: TrainConfig, main_process: bool) -> list[str]:
    """Decide what an existing run in ``cfg.out`` means: refuse, clear (``overwrite``, main process
    only), or resume; returns the changed keys a forced ``resume`` accepts."""
    ckpt = checkpoints.latest(cfg.out)
    if ckpt is None:
        return []
    if cfg.overwrite:
        if main_process:
            for name in RUN_FILES:
                p = Path(cfg.out) / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        return []
    if cfg.resume is False:
        raise ValueError(
            f"{cfg.out}: holds a run (checkpoint {ckpt.name}); --overwrite to start afresh "
            "or --resume to go on"
        )
    saved = json.loads((ckpt / TRAINER_FILE).read_text()).get("config", {})
    changed = config_changes(saved, asdict(cfg), field_defaults(type(cfg)))
    if changed and cfg.resume is None:
        raise ValueError(
            f"{cfg.out}: this config differs from its checkpoint {ckpt.name} in "
            f"{'; '.join(changed)}; --resume to go on with this config, --overwrite to start afresh"
        )
    return changed


def setup(cfg: TrainConfig) -> Run:
    """Accelerator, data, model, optimizer and schedule, prepared; resumed where a checkpoint is."""
    from accelerate.utils import set_seed

    cfg.validate()
    acc = make_accelerator(cfg)
    check_sharding(acc)
    changed = check_existing_run(cfg, acc.is_main_process)
    set_seed(cfg.seed)
    bundle = load_bundle(cfg.bundle)
    si = build_speech_input(cfg, bundle, acc.device)
    data, ev_docs = build_data(cfg, bundle, acc, si)
    model, path = build_model(cfg, bundle)
    groups = param_groups(model, cfg.optim.weight_decay)
    if si is not None:
        groups += speech_param_group(si, cfg.optim.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("train: nothing to train (the LM is frozen and there is no speech input)")
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    # Not through prepare: accelerate's scheduler wrapper steps once per process per step.
    schedule = Schedule(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    # A frozen LM has nothing for DDP to synchronise (DDP refuses such a module): not wrapped.
    wrap_lm = acc.num_processes == 1 or any(p.requires_grad for p in model.parameters())
    # One prepare call (accelerate maps the optimizer onto sharded parameters), the LM first and the
    # speech input second: checkpoints save and restore the models in this order.
    modules = ([model] if wrap_lm else []) + ([si] if si is not None else [])
    *prepared, opt = acc.prepare(*modules, opt)
    model = prepared.pop(0) if wrap_lm else model.to(acc.device)
    speech = None
    if si is not None:
        ph = bundle.vocab.placeholder(si.stream)
        speech = SpeechFeed(prepared.pop(0), ph, every_step=acc.num_processes > 1)
    acc.register_for_checkpointing(sched)
    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    log = RunLog(acc, out / "log.jsonl")
    run = Run(cfg, acc, bundle, model, opt, sched, schedule, data, ev_docs, log, path,
              speech=speech)  # fmt: skip
    resume(run)
    if acc.log_with:
        acc.init_trackers("tokunify")
    log.write(
        {
            "step": run.start,
            "attention": path,
            "world_size": acc.num_processes,
            **({"resumed_from": run.resumed_from} if run.resumed_from else {}),
        }
    )
    log.say(f"attention: {attention.DESCRIPTIONS[path]}; {acc.num_processes} process(es)")
    if run.resumed_from:
        log.say(f"resumed from {run.resumed_from} (step {run.start})")
        if changed:
            log.say(f"resumed with changed settings: {'; '.join(changed)}")
    return run
