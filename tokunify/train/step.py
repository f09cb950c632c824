"""The optimizer steps of a training run: the loss, the forward pass over packed documents, evaluation
and the checkpoint of a step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tokunify.train import attention
from tokunify.train.checkpointing import save_checkpoint
from tokunify.train.encoder_input import SpeechFeed
from tokunify.train.packing import IGNORE, Doc, PackedBatch, pack_docs
from tokunify.train.setup import Run


def token_losses(
    logits: torch.Tensor, batch: PackedBatch, n_tasks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean next-token loss over targets, and per-task (sum, count). ``logits [B, L, V]``."""
    labels = batch.labels[:, 1:]  # [B, L-1]
    tasks = batch.tasks[:, 1:]
    ce = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=IGNORE,
        reduction="none",
    )
    valid = labels.flatten() != IGNORE
    n = valid.sum().clamp(min=1)
    t = tasks.flatten().clamp(min=0)
    sums = torch.zeros(n_tasks, device=ce.device).index_add_(0, t[valid], ce[valid].detach())
    counts = torch.zeros(n_tasks, device=ce.device).index_add_(
        0, t[valid], torch.ones_like(ce[valid])
    )
    return ce[valid].sum() / n, sums, counts


def forward(
    model: torch.nn.Module, batch: PackedBatch, speech: SpeechFeed | None = None
) -> torch.Tensor:
    """Logits ``[B, L, V]`` of a packed batch, on the attention path the model is set up for.

    No path attends across documents; only the dense fallback builds an ``L x L`` mask. A batch
    with audio goes in as ``inputs_embeds``: its placeholders hold the speech input's frames.
    """
    inputs: dict[str, Any] = {"input_ids": batch.input_ids}
    if batch.has_audio and speech is None:
        raise ValueError("a batch with speech-input audio, but the run has no speech input")
    if speech is not None and (batch.has_audio or speech.every_step):
        inputs = {"inputs_embeds": speech.embeds(model, batch)}  # [B, L, H]
    path = attention.path_of(model)
    if path == attention.PER_DOCUMENT:
        plan = attention.DocPlan.build(
            batch.bounds(), batch.input_ids.shape[1], batch.input_ids.device
        )
        kw: dict[str, Any] = {attention.BOUNDS_KW: plan}  # built once, used by every layer
        return model(**inputs, position_ids=batch.position_ids, **kw).logits
    if path == attention.FLASH_VARLEN:
        # varlen kernels find document boundaries from restarting position_ids, but transformers
        # reads a batch as packed only when it has one row: the B rows go in as one [1, B*L] row
        # (every row starts a document at position 0, a pad is a document of one) and the logits
        # come back as [B, L, V]
        b, n = batch.input_ids.shape
        flat = {k: v.reshape(1, b * n, *v.shape[2:]) for k, v in inputs.items()}
        logits = model(**flat, position_ids=batch.position_ids.reshape(1, b * n)).logits
        return logits.reshape(b, n, -1)  # [B, L, V]
    return model(
        **inputs,
        attention_mask=batch.attention_mask(),
        position_ids=batch.position_ids,
    ).logits


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    docs: dict[str, list[Doc]],
    tasks: list[str],
    seq_len: int,
    pad: int,
    rows: int,
    device: torch.device,
    speech: SpeechFeed | None = None,
) -> dict[str, float]:
    """Per-task mean target-token loss on fixed held-out documents (every rank runs the same)."""
    was = model.training
    model.eval()
    speech_was = speech is not None and speech.module.training
    if speech is not None:
        speech.module.eval()
    out = {}
    for ti, task in enumerate(tasks):
        total, count = 0.0, 0.0
        for batch in pack_docs(docs.get(task, []), seq_len, pad, rows):
            batch = batch.to(device)
            _, s, c = token_losses(forward(model, batch, speech), batch, len(tasks))
            total, count = total + float(s[ti]), count + float(c[ti])
        if count:
            out[task] = total / count
    model.train(was)
    if speech is not None:
        speech.module.train(speech_was)
    return out


def eval_step(run: Run, step: int) -> None:
    if not any(run.ev_docs.values()):
        return
    cfg = run.cfg
    losses = evaluate(
        run.model,
        run.ev_docs,
        run.tasks,
        cfg.data.seq_len,
        run.bundle.vocab.pad,
        cfg.batch_size,
        run.acc.device,
        run.speech,
    )
    run.log.write({"step": step, **{f"eval/{t}": v for t, v in losses.items()}})


def checkpoint_step(run: Run, step: int) -> Path:
    from accelerate.utils import gather_object

    states = gather_object([run.data.state()])
    return save_checkpoint(
        run.acc, run.model, run.bundle, run.cfg, step, states, run.log.lines, run.speech_input
    )


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def train(run: Run) -> int:
    """The optimizer steps from ``run.start``; returns the last step done."""
    from tqdm import tqdm

    cfg, acc, model, opt, sched = run.cfg, run.acc, run.model, run.opt, run.sched
    n_tasks = len(run.tasks)
    bar = tqdm(
        total=cfg.steps,
        initial=run.start,
        disable=not (cfg.progress and acc.is_main_process),
        dynamic_ncols=True,
    )
    sums = torch.zeros(n_tasks, device=acc.device)
    counts = torch.zeros(n_tasks, device=acc.device)
    window_loss, window_n, window_tokens, t_window = 0.0, 0, 0, time.perf_counter()
    t_start = time.perf_counter()
    spent_before = run.schedule.elapsed_s  # training seconds before a resume (0 on a fresh run)
    done = run.start
    trainable = [p for p in model.parameters() if p.requires_grad]
    if run.speech is not None:
        trainable += [p for p in run.speech.module.parameters() if p.requires_grad]
    lr = sched.get_last_lr()[0]
    for step in range(run.start, cfg.steps):
        stepped = False
        for _ in range(cfg.grad_accum):
            batch = run.data.next_batch(cfg.batch_size).to(acc.device)
            with acc.accumulate(model):
                logits = forward(model, batch, run.speech)
                loss, s, c = token_losses(logits, batch, n_tasks)
                acc.backward(loss)
                if acc.sync_gradients and cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(trainable, cfg.optim.grad_clip)
                lr = sched.get_last_lr()[0]  # the LR this optimizer step uses
                opt.step()
                stepped |= acc.sync_gradients and not acc.optimizer_step_was_skipped
                opt.zero_grad()
            sums += s
            counts += c
            window_loss += float(loss.detach())
            window_n += 1
            window_tokens += batch.num_tokens
        done = step + 1
        # One collective per step: the slowest process's clock, so that every process computes
        # the same LR and stops at the same step.
        local = torch.tensor([time.perf_counter() - t_start], device=acc.device)
        elapsed = float(acc.reduce(local, reduction="max")[0])
        run.schedule.tick(spent_before + elapsed, done, elapsed / (done - run.start))
        if stepped:  # once per optimizer step, whatever the number of processes, after the tick
            sched.step()
        out_of_time = (
            bool(cfg.max_minutes) and elapsed > 60 * cfg.max_minutes
        ) or run.schedule.out_of_time
        if done % cfg.log_every == 0 or done == cfg.steps or out_of_time:
            tot = acc.reduce(torch.stack([sums, counts]), reduction="sum")
            extra = torch.tensor(
                [float(window_tokens), float(sum(run.data.packer.counts.values()))],
                device=acc.device,
            )
            tokens, long_docs = (int(x) for x in acc.reduce(extra, reduction="sum").tolist())
            dt = time.perf_counter() - t_window
            row = {
                "step": done,
                "loss": window_loss / max(window_n, 1),
                "lr": lr,
                "tokens": tokens,
                "tokens_per_s": tokens / max(dt, 1e-9),
                "train_seconds": spent_before + elapsed,
                f"long_documents_{cfg.data.long_documents}": long_docs,
            }
            row.update(
                {
                    f"loss/{t}": float(tot[0, i] / tot[1, i])
                    for i, t in enumerate(run.tasks)
                    if tot[1, i] > 0
                }
            )
            run.log.write(row)
            eta = elapsed / max(done - run.start, 1) * (cfg.steps - done)
            if run.schedule.budget_s:
                eta = min(eta, max(run.schedule.budget_s - run.schedule.elapsed_s, 0.0))
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if not cfg.progress:
                run.log.say(
                    f"step {done}/{cfg.steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                    f"tokens/s {row['tokens_per_s']:.0f} eta {_eta(eta)}"
                )
            sums.zero_()
            counts.zero_()
            window_loss, window_n, window_tokens, t_window = 0.0, 0, 0, time.perf_counter()
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            eval_step(run, done)
        if cfg.save_every and done % cfg.save_every == 0 and done != cfg.steps:
            checkpoint_step(run, done)
        bar.update(1)
        if out_of_time:  # the same decision on every process (the reduced clock)
            why = "budget_minutes" if run.schedule.out_of_time else "max_minutes"
            run.log.write(
                {
                    "step": done,
                    "stopped": why,
                    "train_seconds": spent_before + elapsed,
                    "step_seconds": elapsed / (done - run.start),
                }
            )
            run.log.say(f"{why} reached after step {done}/{cfg.steps}")
            break
    bar.close()
    return done
