"""One command that exercises every CUDA path of tokunify on tiny models it builds itself.

    scripts/gpu_check.sh            # or: python scripts/gpu_check.py [--keep DIR]

Each path runs through the code users run (the subcommands of ``tokunify.core.commands.main``, or
the functions they call) on tiny random models written to a temp dir: no downloads. One line per
path, then a summary; exit 0 when every path is ok (or skipped with its reason), 1 otherwise::

    ok  train-bf16-sdpa            41230 tokens/s (30 steps, per_document)
    FAILED tokenize-dac: RuntimeError: ...
    gpu_check: 10 ok, 1 skipped, 1 failed in 94 s on cuda

Without CUDA (and without ``--device``) it says so and exits 0 without running anything.
``--device cpu`` (a developer option, hidden from --help) runs every path on the CPU with the same
code, except the two that need CUDA (flash-attn, FSDP), which print why they are skipped:
``tests/test_gpu_check.py`` runs it end to end.

The paths are one explicit list, :data:`PATHS` (name -> function). A path returns its throughput
figure, or raises :class:`Skip` with the reason; anything else it raises is a failure. Shared inputs
(the corpus, the unit store, the bundles, the server) are built once per run by :class:`Check` and a
failure there fails every path that needs them, with the same message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import transformers
import yaml

from tokunify.core.commands import main as cli
from tokunify.data.manifest import read_manifest
from tokunify.generate.generator import Generator
from tokunify.model.bundle import load as load_bundle
from tokunify.train import attention
from tokunify.train.packing import Doc, pack
from tokunify.train.step import forward, token_losses

ROOT = Path(__file__).resolve().parents[1]
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"
NEEDS_CUDA = "gpu_check: needs CUDA (torch.cuda.is_available() is False); nothing run"

# ---- sizes: every model is tiny, every run a few seconds --------------------------------------
CORPUS = dict(utterances=48, test_utterances=4, voices=["en-us", "en"])
UNITS_K = 32  # mel units of the LM's stream
PRESET = "llama-small"  # the demo's size class (~2-5 M parameters)
TRAIN = dict(steps=30, batch_size=4, seq_len=256)
FLASH_ROWS, FLASH_SEQ, FLASH_ITERS = 4, 512, 10
GEN_PROMPTS, GEN_NEW_TOKENS = 8, 48
SERVE_START_S = 180.0
SSL_TINY = dict(  # a HubertConfig as tests/tokenizers/conftest.py builds it
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16),
    conv_stride=(5, 4, 4),
    conv_kernel=(10, 4, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
MIMI_TINY = dict(
    sampling_rate=16000,
    hidden_size=32,
    num_filters=4,
    upsampling_ratios=[8, 5, 4],
    codebook_size=32,
    codebook_dim=16,
    num_quantizers=4,
    vector_quantization_hidden_dimension=16,
    num_hidden_layers=1,
    intermediate_size=32,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
    upsample_groups=32,
    sliding_window=16,
    max_position_embeddings=512,
)
DAC_TINY = dict(
    encoder_hidden_size=4,
    downsampling_ratios=[4, 5, 8],
    decoder_hidden_size=16,
    n_codebooks=4,
    codebook_size=32,
    codebook_dim=4,
    sampling_rate=16000,
)


class Skip(Exception):
    """A path that cannot run here; the message says why."""


class StepFailed(RuntimeError):
    """A `tokunify` subcommand returned non-zero; the message is its last output line."""


@dataclass
class Check:
    """One run: the device, the temp dir, the log, and the shared inputs built once on demand."""

    root: Path
    device: str
    log: io.TextIOBase
    built: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def tokunify(self, *argv: str) -> None:
        """``tokunify ARGV`` through the CLI main, its output into the log; StepFailed on rc != 0."""
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                rc = cli(list(argv))
        finally:
            self.log.write(f"$ tokunify {' '.join(argv)}\n{buf.getvalue()}")
        if rc != 0:
            lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
            raise StepFailed(lines[-1] if lines else f"tokunify {argv[0]} exited {rc}")

    def need(self, name: str) -> Any:
        """The shared input ``name`` (a key of :data:`INPUTS`), built at its first use."""
        if name in self.failed:
            raise self.failed[name]
        if name not in self.built:
            try:
                self.built[name] = INPUTS[name](self)
            except Exception as e:
                self.failed[name] = e
                raise
        return self.built[name]


# ---- shared inputs ------------------------------------------------------------------------------
def build_corpus(c: Check) -> Path:
    out = c.root / "corpus"
    c.tokunify("synth-corpus", "--out", str(out), "--utterances", str(CORPUS["utterances"]),
               "--test-utterances", str(CORPUS["test_utterances"]), "--voices", *CORPUS["voices"])  # fmt: skip
    return out


def build_text_tokenizer(c: Check) -> Path:
    out = c.root / "text_tokenizer"
    texts = c.need("corpus") / "train_texts.txt"
    c.tokunify("train-text-tokenizer", str(texts), "--out", str(out), "--vocab-size", "512")
    return out


def build_units(c: Check) -> Path:
    """Mel units (k-means on MFCCs, on the device): the LM's speech stream."""
    feats = c.root / "mel_units.yaml"
    feats.write_text(yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc", "n_mfcc": 20}, "dedup": True}))  # fmt: skip
    out = c.root / "units"
    c.tokunify("train-kmeans", str(c.need("corpus") / "train.jsonl"), "--tokenizer", str(feats),
               "--k", str(UNITS_K), "--out", str(out), "--device", c.device)  # fmt: skip
    return out / "tokenizer.yaml"


def build_store(c: Check) -> Path:
    out = c.root / "stores" / "train"
    c.tokunify("tokenize", str(c.need("corpus") / "train.jsonl"), "--out", str(out),
               "--tokenizer", f"units={c.need('units')}", "--text-tokenizer", str(c.need("text_tokenizer")),
               "--device", c.device, "--no-progress")  # fmt: skip
    return out


def build_bundle(c: Check) -> Path:
    """The untrained scratch bundle (the LM of generation and serving)."""
    out = c.root / "bundle_init"
    c.tokunify("extend", f"scratch:{PRESET}", "--text-tokenizer", str(c.need("text_tokenizer")),
               "--units", str(UNITS_K), "--speech-tokenizer", f"units={c.need('units')}", "--out", str(out))  # fmt: skip
    return out


def build_voc_bundle(c: Check) -> Path:
    """The scratch bundle with a CodeHiFiGAN unit vocoder trained a few steps on the device."""
    voc = c.root / "vocoder"
    cpu = [] if c.cuda else ["--cpu"]
    c.tokunify("train-vocoder", str(c.need("store")), "--out", str(voc), "--arch", "codehifigan",
               "--preset", "tiny-cpu", "--steps", "10", "--batch-size", "4", "--segment-frames", "32",
               "--log-every", "5", "--save-every", "100000", *cpu)  # fmt: skip
    out = c.root / "voc_bundle"
    shutil.copytree(c.need("bundle"), out)
    c.tokunify("attach-vocoder", str(out), str(voc / "vocoder"))
    return out


def build_server(c: Check) -> tuple[str, str]:
    """`tokunify serve` in a subprocess on a free loopback port -> (url, model name)."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise Skip("the serve extra is not installed (pip install 'tokunify[serve]')")
    port = free_port()
    env = child_env()
    cmd = [sys.executable, "-m", "tokunify", "serve", str(c.need("voc_bundle")), "--port", str(port),
           "--device", c.device, "--max-new-tokens", "256"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=c.log, stderr=subprocess.STDOUT, text=True)
    c.stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"tokunify serve exited {proc.returncode} (its output is in the log)"
            )
        try:
            status, body = http(f"{url}/health", timeout=2)
            if status == 200:
                return url, str(json.loads(body)["model"])
        except OSError:  # not listening yet
            pass
        if time.monotonic() - t0 > SERVE_START_S:
            raise RuntimeError(f"tokunify serve did not answer /health in {SERVE_START_S:.0f} s")
        time.sleep(0.3)


INPUTS: dict[str, Callable[[Check], Any]] = {
    "corpus": build_corpus,
    "text_tokenizer": build_text_tokenizer,
    "units": build_units,
    "store": build_store,
    "bundle": build_bundle,
    "voc_bundle": build_voc_bundle,
    "server": build_server,
}


# ---- helpers ------------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    """The environment of a subprocess that runs this checkout's tokunify."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def train_config(c: Check, name: str, **over: Any) -> Path:
    """A `tokunify train` config on the unit store, bf16, no evaluation, checkpoints at the end."""
    cfg = {
        "bundle": str(c.need("bundle")), "out": str(c.root / name), "steps": TRAIN["steps"],
        "batch_size": TRAIN["batch_size"], "save_every": TRAIN["steps"], "eval_every": 0, "log_every": 5,
        "progress": False, "mixed_precision": "bf16", "cpu": not c.cuda,
        "data": {"stores": [str(c.need("store"))], "seq_len": TRAIN["seq_len"],
                 "mixture": {"asr": 0.4, "tts": 0.4, "continue": 0.1, "text": 0.1}},
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        **over,
    }  # fmt: skip
    path = c.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def log_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def train_figure(run: Path) -> str:
    """Mean tokens/s of the logged steps after the first (which holds start-up), the path taken."""
    rows = log_rows(run)
    speed = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    path = next(r["attention"] for r in rows if "attention" in r)
    steps = max(r["step"] for r in rows if "loss" in r)
    losses = [r["loss"] for r in rows if "loss" in r]
    if not all(np.isfinite(losses)):
        raise RuntimeError(f"{run.name}: non-finite loss {losses}")
    return f"{np.mean(speed[1:] or speed):.0f} tokens/s ({steps} steps, {path})"


def audio_seconds(manifest: Path) -> float:
    return sum(sf.info(str(manifest.parent / e.audio)).duration for e in read_manifest(manifest))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- the paths ----------------------------------------------------------------------------------
def train_bf16_sdpa(c: Check) -> str:
    """`tokunify train`, bf16, per-document SDPA over packed rows, then the final bundle loads."""
    c.tokunify("train", str(train_config(c, "train_sdpa")))
    run = c.root / "train_sdpa"
    rows = log_rows(run)
    got = next(r["attention"] for r in rows if "attention" in r)
    if got != attention.PER_DOCUMENT:
        raise RuntimeError(f"attention path {got!r}, expected {attention.PER_DOCUMENT!r}")
    load_bundle(run / "final", device=c.device)
    return train_figure(run)


def train_flash_varlen(c: Check) -> str:
    """flash-attn's varlen kernel on packed rows, through the functions `train` calls
    (``attention.choose``, ``step.forward``, ``token_losses``), checked against per-document SDPA
    on the same weights and batch. `train` has no switch to load a bundle with flash-attn."""
    if not c.cuda:
        raise Skip("flash-attn is CUDA-only")
    try:
        import flash_attn  # noqa: F401  # lazy (extra: flash-attn, optional)
    except ImportError:
        raise Skip("flash_attn is not installed") from None
    bundle = c.need("bundle")
    flash = load_bundle(bundle, device=c.device, dtype=torch.bfloat16).model
    flash.set_attn_implementation("flash_attention_2")
    sdpa = load_bundle(bundle, device=c.device, dtype=torch.bfloat16).model
    if attention.choose(flash) != attention.FLASH_VARLEN:
        raise RuntimeError(f"attention.choose took {attention.path_of(flash)!r}, not flash_varlen")
    if attention.choose(sdpa) != attention.PER_DOCUMENT:
        raise RuntimeError(f"attention.choose took {attention.path_of(sdpa)!r}, not per_document")
    batch = random_packed_batch(flash.config.vocab_size, c.device)
    with torch.no_grad():
        a, b = forward(flash, batch), forward(sdpa, batch)  # [B, L, V]
    real = batch.doc_ids >= 0  # [B, L]
    diff = float((a.float() - b.float())[real].abs().max())
    if diff > 0.1:
        raise RuntimeError(f"flash-attn varlen logits differ from per-document SDPA by {diff:.3f}")
    flash.train()
    opt = torch.optim.AdamW(flash.parameters(), lr=1e-4)
    sync(c.device)
    t = time.perf_counter()
    for _ in range(FLASH_ITERS):
        loss, _, _ = token_losses(forward(flash, batch), batch, 1)
        loss.backward()
        opt.step()
        opt.zero_grad()
    sync(c.device)
    tokens = FLASH_ITERS * int(real.sum())
    return f"{tokens / (time.perf_counter() - t):.0f} tokens/s (fwd+bwd, logits within {diff:.3f} of SDPA)"


def random_packed_batch(vocab_size: int, device: str) -> Any:
    """Rows of random documents of 20-200 tokens, packed as `train` packs them."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(FLASH_ROWS):
        docs, used = [], 0
        while used < FLASH_SEQ - 200:
            n = int(rng.integers(20, 200))
            ids = rng.integers(0, vocab_size, n).astype(np.int64)
            docs.append(Doc(ids=ids, mask=np.ones(n, bool), task=0))
            used += n
        rows.append(docs)
    b = pack(rows, FLASH_SEQ, 0)
    return type(b)(**{k: v.to(device) for k, v in vars(b).items()})


def train_fsdp(c: Check) -> str:
    """`accelerate launch` of `tokunify train` with configs/accelerate/fsdp.yaml on one process:
    sharded checkpoints, final/ gathered through get_state_dict and loaded by plain transformers."""
    if not c.cuda:
        raise Skip("accelerate engages FSDP only on GPUs (train refuses an FSDP config on CPU)")
    cfg = train_config(c, "train_fsdp")
    env = child_env()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
           "--num_processes", "1", "-m", "tokunify", "train", str(cfg)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    c.log.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        raise StepFailed(f"accelerate launch exited {res.returncode}: {lines[-1] if lines else ''}")
    run = c.root / "train_fsdp"
    shards = sorted(run.glob("checkpoints/step-*/state/pytorch_model_fsdp*"))
    if not shards:
        held = sorted(p.name for p in run.glob("checkpoints/step-*/state/*"))
        raise RuntimeError(f"no sharded FSDP model state in the checkpoint (it holds {held})")
    start = next(r for r in log_rows(run) if "world_size" in r)
    if start["world_size"] != 1:
        raise RuntimeError(f"world_size {start['world_size']}, expected 1")
    final = transformers.AutoModelForCausalLM.from_pretrained(str(run / "final"))
    init = transformers.AutoModelForCausalLM.from_pretrained(str(c.need("bundle")))
    trained = final.state_dict()
    if not any(not torch.equal(v, trained[k]) for k, v in init.state_dict().items()):
        raise RuntimeError("final/ holds the initial weights: the FSDP state was not gathered")
    return train_figure(run)


def tokenize_with(c: Check, name: str, cfg: Path, stream: str) -> str:
    """`tokunify tokenize --device` of the corpus with one tokenizer config -> audio seconds/s."""
    manifest = c.need("corpus") / "train.jsonl"
    t = time.perf_counter()
    c.tokunify("tokenize", str(manifest), "--out", str(c.root / "stores" / name), "--tokenizer",
               f"{stream}={cfg}", "--device", c.device, "--no-progress")  # fmt: skip
    dt = time.perf_counter() - t
    return f"{audio_seconds(manifest) / dt:.1f} audio s/s"


def tokenize_hubert(c: Check) -> str:
    """A tiny random HuBERT: `train-kmeans` on its layer-3 features, then `tokenize`, on the device."""
    torch.manual_seed(0)
    src = c.root / "hubert"
    transformers.HubertModel(transformers.HubertConfig(**SSL_TINY)).save_pretrained(src)
    feats = c.root / "hubert_feats.yaml"
    feats.write_text(yaml.safe_dump({"kind": "ssl_units", "source": str(src), "layer": 3, "dedup": True}))  # fmt: skip
    c.tokunify("train-kmeans", str(c.need("corpus") / "train.jsonl"), "--tokenizer", str(feats),
               "--k", "16", "--out", str(c.root / "hubert_units"), "--device", c.device)  # fmt: skip
    return tokenize_with(c, "hubert", c.root / "hubert_units" / "tokenizer.yaml", "units")


def tiny_codec(kind: str, out: Path) -> Path:
    """A tiny random Mimi or DAC as tests/tokenizers/conftest.py builds it (random codebooks and
    biases, so codes vary)."""
    torch.manual_seed(0)
    if kind == "mimi":
        model = transformers.MimiModel(transformers.MimiConfig(**MIMI_TINY))
    else:
        model = transformers.DacModel(transformers.DacConfig(**DAC_TINY))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and (kind == "mimi" or name == "encoder.conv1.bias"):
                p.normal_(0, 0.1 if kind == "mimi" else 0.03)
        for mod in model.modules():
            if hasattr(mod, "embed_sum"):
                mod.embed_sum.normal_()
                mod.cluster_usage.fill_(1.0)
    model.save_pretrained(out)
    return out


def tokenize_codec(c: Check, kind: str) -> str:
    cfg = c.root / f"{kind}.yaml"
    src = tiny_codec(kind, c.root / kind)
    cfg.write_text(yaml.safe_dump({"kind": kind, "source": str(src), "num_codebooks": 4}))
    return tokenize_with(c, kind, cfg, "codec")


def tokenize_mimi(c: Check) -> str:
    return tokenize_codec(c, "mimi")


def tokenize_dac(c: Check) -> str:
    return tokenize_codec(c, "dac")


def generate_batched(c: Check) -> str:
    """`tokunify generate --task tts` of 8 prompts in one batch (KV cache, constrained decoding)."""
    texts = [e.text for e in read_manifest(c.need("corpus") / "test_seen.jsonl")]
    prompts = [texts[i % len(texts)] for i in range(GEN_PROMPTS)]
    out, bundle = c.root / "generated", c.need("voc_bundle")
    t = time.perf_counter()
    c.tokunify("generate", str(bundle), "--task", "tts", "--input", *prompts, "--out", str(out),
               "--device", c.device, "--batch-size", str(GEN_PROMPTS), "--max-new-tokens", str(GEN_NEW_TOKENS))  # fmt: skip
    dt = time.perf_counter() - t
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    n_units = sum(len(r.get("units", [])) for r in rows)
    if len(rows) != GEN_PROMPTS or not any("wav" in r for r in rows):
        raise RuntimeError(
            f"generate wrote {len(rows)} results, {sum('wav' in r for r in rows)} with audio"
        )
    return f"{GEN_PROMPTS / dt:.2f} prompts/s ({GEN_PROMPTS} in one batch, {n_units} units, with loading)"


def vocode_hifigan(c: Check) -> str:
    """The bundle's CodeHiFiGAN (trained on the device by `train-vocoder`), durations predicted,
    on the test utterances' units -> audio seconds/s."""
    gen = Generator(c.need("voc_bundle"), device=c.device)
    wavs = [
        str(c.need("corpus") / e.audio) for e in read_manifest(c.need("corpus") / "test_seen.jsonl")
    ]
    units = gen.encode_audio(wavs)
    gen.decode(units[:1])  # warm-up
    sync(c.device)
    t = time.perf_counter()
    audio = gen.decode(units)
    sync(c.device)
    dt = time.perf_counter() - t
    seconds = sum(len(a) for a in audio) / gen.sample_rate
    if not all(np.isfinite(a).all() and len(a) for a in audio):
        raise RuntimeError("the vocoder returned empty or non-finite audio")
    return f"{seconds / dt:.1f} audio s/s ({len(audio)} utterances, {seconds:.1f} s of audio)"


def http(
    url: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 120,
) -> tuple[int, bytes]:
    """GET (no body) or POST ``url`` with the standard library -> (HTTP status, body)."""
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type} if body else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_json(url: str, payload: dict[str, Any]) -> bytes:
    """The body of a 200 reply to a JSON POST; RuntimeError naming the status otherwise."""
    status, body = http(url, json.dumps(payload).encode())
    if status != 200:
        raise RuntimeError(f"{urllib.parse.urlsplit(url).path}: HTTP {status}: {body[:200]!r}")
    return body


def multipart(fields: dict[str, str], name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body (text fields and one file) -> (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]  # fmt: skip
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'  # fmt: skip
    body = b"".join(parts) + head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def serve_transcription(c: Check) -> str:
    url, model = c.need("server")
    wav = c.need("corpus") / next(iter(read_manifest(c.need("corpus") / "test_seen.jsonl"))).audio
    body, ctype = multipart(
        {"model": model, "max_new_tokens": "16"}, "file", "a.wav", wav.read_bytes()
    )
    t = time.perf_counter()
    status, reply = http(f"{url}/v1/audio/transcriptions", body, ctype)
    dt = time.perf_counter() - t
    if status != 200 or not isinstance(json.loads(reply).get("text"), str):
        raise RuntimeError(f"/v1/audio/transcriptions: HTTP {status}: {reply[:200]!r}")
    return f"{dt:.2f} s/request ({sf.info(str(wav)).duration:.1f} s of audio in)"


def serve_speech(c: Check) -> str:
    url, model = c.need("server")
    t = time.perf_counter()
    wav = post_json(f"{url}/v1/audio/speech", {"model": model, "input": "the cat sat", "max_new_tokens": 32, "response_format": "wav"})  # fmt: skip
    dt = time.perf_counter() - t
    if wav[:4] != b"RIFF":
        raise RuntimeError(f"/v1/audio/speech: not a wav: {wav[:16]!r}")
    return f"{dt:.2f} s/request ({sf.info(io.BytesIO(wav)).duration:.2f} s of audio out)"


def serve_speech_stream(c: Check) -> str:
    """A streamed (chunked pcm) speech reply: time to its first audio and in all."""
    url, model = c.need("server")
    body = {"model": model, "input": "the cat sat", "max_new_tokens": 48, "min_new_tokens": 24,
            "response_format": "pcm", "stream": True}  # fmt: skip
    req = urllib.request.Request(f"{url}/v1/audio/speech", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})  # fmt: skip
    t = time.perf_counter()
    n, first = 0, None
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            while chunk := r.read1(65536):
                first = time.perf_counter() - t if first is None else first
                n += len(chunk)
    except urllib.error.HTTPError as e:
        raise RuntimeError(
            f"/v1/audio/speech (stream): HTTP {e.code}: {e.read()[:200]!r}"
        ) from None
    if first is None:
        raise RuntimeError("/v1/audio/speech (stream): the stream carried no audio")
    return f"{time.perf_counter() - t:.2f} s/request, first audio after {first:.2f} s ({n} bytes)"


def serve_chat(c: Check) -> str:
    url, model = c.need("server")
    t = time.perf_counter()
    reply = json.loads(post_json(f"{url}/v1/chat/completions", {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "the cat"}]}))  # fmt: skip
    dt = time.perf_counter() - t
    if not isinstance(reply["choices"][0]["message"].get("content"), str):
        raise RuntimeError(f"/v1/chat/completions: a reply without text: {str(reply)[:200]}")
    return f"{dt:.2f} s/request"


Path_ = Callable[[Check], str]
PATHS: dict[str, Path_] = {
    "train-bf16-sdpa": train_bf16_sdpa,
    "train-bf16-flash-varlen": train_flash_varlen,
    "train-fsdp-1proc": train_fsdp,
    "tokenize-hubert": tokenize_hubert,
    "tokenize-mimi": tokenize_mimi,
    "tokenize-dac": tokenize_dac,
    "generate-batched": generate_batched,
    "vocode-hifigan": vocode_hifigan,
    "serve-transcription": serve_transcription,
    "serve-speech": serve_speech,
    "serve-speech-stream": serve_speech_stream,
    "serve-chat": serve_chat,
}
"""Every CUDA path, in the order they run (name -> function returning its throughput figure)."""


# ---- running ------------------------------------------------------------------------------------
def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {text}"[:300]


@dataclass
class Outcome:
    path: str
    status: str  # "ok", "skip" or "FAILED"
    detail: str

    def line(self) -> str:
        if self.status == "FAILED":
            return f"FAILED {self.path}: {self.detail}"
        return f"{self.status}  {self.path:<26}{self.detail}"


def run_path(c: Check, name: str, fn: Path_) -> Outcome:
    c.log.write(f"\n==== {name}\n")
    t = time.perf_counter()
    try:
        figure = fn(c)
        # the seconds include the shared inputs this path was the first to need
        return Outcome(name, "ok", f"{figure}  [{time.perf_counter() - t:.0f} s]")
    except Skip as e:
        return Outcome(name, "skip", f"({e})")
    except Exception as e:
        c.log.write(traceback.format_exc())
        return Outcome(name, "FAILED", one_line(e))


def run_all(root: Path, device: str, paths: list[str], out: Any = None) -> list[Outcome]:
    """Run ``paths`` on ``device`` in ``root``; one line each on ``out`` as they finish."""
    out = sys.stdout if out is None else out
    log_path = root / "gpu_check.log"
    results = []
    with open(log_path, "w") as log, contextlib.ExitStack() as stack:
        c = Check(root, device, log)
        stack.enter_context(c.stack)
        for name in paths:
            with quiet(log):
                res = run_path(c, name, PATHS[name])
            results.append(res)
            print(res.line(), file=out, flush=True)
    return results


@contextlib.contextmanager
def quiet(log: Any) -> Iterator[None]:
    """Output of the code under test (prints, warnings, progress) into the log, not the console."""
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Exercise every CUDA path of tokunify on tiny models (<= 5 min)."
    )
    p.add_argument(
        "--keep", metavar="DIR", help="work in DIR and keep it (models, stores, gpu_check.log)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(PATHS),
        metavar="PATH",
        help=f"run these paths only: {', '.join(PATHS)}",
    )
    # dev option: `--device cpu` runs the paths on the CPU (tests/test_gpu_check.py)
    p.add_argument("--device", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    if device is None:
        if not torch.cuda.is_available():
            print(NEEDS_CUDA)
            return 0
        device = "cuda"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    paths = args.only or list(PATHS)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(args.keep)
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        results = run_all(root, device, paths)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skip", "FAILED")}
    where = f"; log in {root / 'gpu_check.log'}" if args.keep else ""
    if counts["FAILED"] and not args.keep:
        where = "; rerun with --keep DIR for the log"
    print(f"gpu_check: {counts['ok']} ok, {counts['skip']} skipped, {counts['FAILED']} failed "
          f"in {time.perf_counter() - t0:.0f} s on {device}{where}")  # fmt: skip
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())
