"""`tokunify serve` under load: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients,
dynamic batching on against the same server with batching off (``--no-batching``).
Goal (issue 19): >= 4x requests/s at 16 clients.

Set-up: a demo-sized bundle (scratch ``llama-small``, 100 units, a SentencePiece text tokenizer)
with a random CodeHiFiGAN vocoder, built in a temp dir. The server is ``build_app`` (what
``tokunify serve`` runs) under uvicorn in a child process; httpx clients in this process. Each
request is a TTS request that generates exactly ``--new-tokens`` units (``min_new_tokens`` =
``max_new_tokens``) and is vocoded, so every request costs the same whatever the random weights say.

Run: python benchmarks/serve.py [--new-tokens 48] [--requests-per-client 4] [--device cpu]

``--soak``: a bounded soak (issue 29) against one server with its default limits: ``--soak-requests``
requests (a fixed count, not a duration) from ``--clients`` 32 closed-loop clients, mixed
transcription, speech, streamed speech and chat (text and an audio part, in turn). It reports
requests/s, p50/p95/p99 latency per kind, the 429 and 5xx counts (goal: no 5xx) and the server
process's resident memory after warm-up and at the end (goal: growth < 5%). A client that gets 429
waits its ``Retry-After`` before its next request.

Run: python benchmarks/serve.py --soak [--soak-requests 2000] [--clients 32] [--max-queue N]

``--chat``: latency of one conversation at a time on ``/v1/chat/completions`` (issue 28), text and
spoken replies, streaming on and off: time to the first token (the first text delta; a spoken
reply's first ``delta.audio`` chunk of speech) and to the full response. Streaming off, both are
the time to the full response. Greedy, so on and off generate the same reply (its tokens are in
the table); p50 over ``--chat-repeats`` requests after one warm-up.

Run: python benchmarks/serve.py --chat [--chat-tokens 48] [--chat-repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from _corpus import WORDS

from tokunify.cli import main as cli
from tokunify.model.bundle import attach_vocoder
from tokunify.serve.commands import build_app
from tokunify.serve.config import ServeArgs
from tokunify.tokenizers.text import train_sentencepiece
from tokunify.vocoder import CodeHiFiGAN, CodeHiFiGANConfig, save_codehifigan

UNITS = 100
TEXTS = ["the quick brown fox jumps over the lazy dog", "seven red birds sing in the old green tree",
         "we saw five small birds", "where are you going today"]  # fmt: skip


def unit_tokenizer(root: Path, n_utts: int = 40) -> tuple[Path, bytes]:
    """k-means mel units on ``n_utts`` espeak utterances -> (tokenizer.yaml, one utterance as WAV)."""
    import io

    import soundfile as sf
    import yaml

    from tokunify.data.corpus.espeak import Espeak
    from tokunify.data.manifest import Entry, write_manifest

    (root / "wavs").mkdir(parents=True, exist_ok=True)
    engine, entries = Espeak(), []
    for i in range(n_utts):
        text = TEXTS[i % len(TEXTS)]
        s = engine.synthesize(text, "en-us")
        sf.write(root / "wavs" / f"w{i}.wav", s.audio, s.sample_rate)
        entries.append(
            Entry(id=f"u{i}", audio=root / "wavs" / f"w{i}.wav", text=text, words=s.words)
        )
    write_manifest(entries, root / "m.jsonl")
    (root / "mel.yaml").write_text(
        yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc"}})
    )
    assert cli(["train-kmeans", str(root / "m.jsonl"), "--tokenizer", str(root / "mel.yaml"), "--k", str(UNITS), "--out", str(root / "km"), "--overwrite"]) == 0  # fmt: skip
    wav, sr = sf.read(root / "wavs" / "w0.wav", dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV")
    return root / "km" / "tokenizer.yaml", buf.getvalue()


def build_bundle(root: Path, speech_tokenizer: Path | None = None) -> Path:
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(1500)))  # fmt: skip
    train_sentencepiece(corpus, root / "tok", vocab_size=320)
    bundle = root / "bundle"
    tok = ["--speech-tokenizer", f"units={speech_tokenizer}"] if speech_tokenizer else []
    assert cli(["extend", "scratch:llama-small", "--text-tokenizer", str(root / "tok"), "--units", str(UNITS), *tok, "--out", str(bundle), "--overwrite"]) == 0  # fmt: skip
    torch.manual_seed(0)
    cfg = CodeHiFiGANConfig(num_embeddings=UNITS, embedding_dim=64, upsample_initial_channel=64, upsample_rates=[5, 4, 4, 4], upsample_kernel_sizes=[11, 8, 8, 8],
                            resblock="2", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                            dur_predictor_params={"encoder_embed_dim": 64, "var_pred_hidden_dim": 64, "var_pred_kernel_size": 3, "var_pred_dropout": 0.0})  # fmt: skip
    attach_vocoder(bundle, save_codehifigan(CodeHiFiGAN(cfg), root / "voc"))
    return bundle


def _serve(bundle: str, port: int, batching: bool, device: str, options: dict | None = None) -> None:  # fmt: skip
    import uvicorn

    torch.set_num_threads(max(1, torch.get_num_threads()))
    args = ServeArgs(bundle, port=port, batching=batching, device=device, model_name="bench", **(options or {}))  # fmt: skip
    uvicorn.run(build_app(args), host="127.0.0.1", port=port, log_level="warning")


def _start(bundle: Path, batching: bool, device: str, options: dict | None = None) -> tuple[mp.Process, str]:  # fmt: skip
    """The server in a child process, once /health answers."""
    port = _free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(str(bundle), port, batching, device, options), daemon=True)  # fmt: skip
    proc.start()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return proc, url
        except httpx.TransportError:
            if time.monotonic() - t0 > 300 or not proc.is_alive():
                raise RuntimeError("server did not start") from None
            time.sleep(0.3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, clients: int, per_client: int, new_tokens: int) -> tuple[float, list[float], int]:  # fmt: skip
    """``clients`` concurrent clients, each sending ``per_client`` requests back to back."""
    lat: list[float] = []
    errors = 0

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in range(per_client):
            body = {"model": "bench", "input": TEXTS[(c + i) % len(TEXTS)], "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "response_format": "wav"}  # fmt: skip
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/audio/speech", json=body)
            lat.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
    return wall, lat, errors


def bench(bundle: Path, batching: bool, levels: list[int], per_client: int, new_tokens: int, device: str) -> dict[int, tuple[float, float, float, int, float]]:  # fmt: skip
    proc, url = _start(bundle, batching, device)
    try:
        asyncio.run(_load(url, 2, 1, new_tokens))  # warm-up
        out = {}
        for n in levels:
            b0 = httpx.get(f"{url}/health").json()["batching"]
            wall, lat, errors = asyncio.run(_load(url, n, per_client, new_tokens))
            b1 = httpx.get(f"{url}/health").json()["batching"]
            p50, p95 = np.percentile(lat, [50, 95])
            rows = (b1["rows"] - b0["rows"]) / max(1, b1["batches"] - b0["batches"])
            out[n] = (len(lat) / wall, float(p50), float(p95), errors, rows)
        return out
    finally:
        proc.terminate()
        proc.join(30)


# ---- the soak ------------------------------------------------------------------------------------
KINDS = ("transcription", "speech", "streamed speech", "chat")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


async def _one(http: httpx.AsyncClient, url: str, kind: str, i: int, wav: bytes, new_tokens: int) -> httpx.Response:  # fmt: skip
    text = TEXTS[i % len(TEXTS)]
    speech = {"model": "bench", "input": text, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "response_format": "wav"}  # fmt: skip
    if kind == "transcription":
        return await http.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")},
                               data={"model": "bench", "max_new_tokens": str(new_tokens)})  # fmt: skip
    if kind == "speech":
        return await http.post(f"{url}/v1/audio/speech", json=speech)
    if kind == "streamed speech":
        async with http.stream(
            "POST", f"{url}/v1/audio/speech", json={**speech, "stream": True}
        ) as r:
            async for _ in r.aiter_raw():
                pass
            return r
    content: str | list = text
    if i % 2:  # every other chat sends an audio part
        content = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}]  # fmt: skip
    return await http.post(f"{url}/v1/chat/completions", json={"model": "bench", "max_tokens": new_tokens,
                           "messages": [{"role": "user", "content": content}]})  # fmt: skip


async def _soak_load(url: str, clients: int, requests: int, wav: bytes, new_tokens: int, pid: int | None = None,
                     rss: list[float] | None = None) -> tuple[float, list[tuple[str, int, float]]]:  # fmt: skip
    """``requests`` requests in all from ``clients`` closed-loop clients -> (wall s, [(kind, status, s)]);
    with ``pid``, the server's RSS is appended to ``rss`` every 10% of the requests."""
    results: list[tuple[str, int, float]] = []
    next_i = 0
    step = max(1, requests // 10)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < requests:
            i, next_i = next_i, next_i + 1
            kind = KINDS[i % len(KINDS)]
            t0 = time.perf_counter()
            try:
                r = await _one(http, url, kind, i, wav, new_tokens)
                status = r.status_code
            except httpx.HTTPError:
                status, r = -1, None  # a transport error: counted with the failures
            results.append((kind, status, time.perf_counter() - t0))
            if pid is not None and rss is not None and len(results) % step == 0:
                rss.append(_rss_mb(pid))
            if status == 429 and r is not None:
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    async with httpx.AsyncClient(
        timeout=600, limits=httpx.Limits(max_connections=clients + 4)
    ) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - t0, results


def soak(bundle: Path, wav: bytes, clients: int, requests: int, new_tokens: int, device: str, options: dict) -> int:  # fmt: skip
    proc, url = _start(bundle, True, device, options)
    try:
        # warm-up at full concurrency: every kind, full batches (allocator pools reach their size)
        asyncio.run(_soak_load(url, clients, 4 * clients, wav, new_tokens))
        assert proc.pid is not None
        rss0 = _rss_mb(proc.pid)
        t0 = time.monotonic()
        samples: list[float] = []
        wall, res = asyncio.run(
            _soak_load(url, clients, requests, wav, new_tokens, proc.pid, samples)
        )
        rss1 = _rss_mb(proc.pid)
        print(f"soak took {time.monotonic() - t0:.0f} s", flush=True)
        health = httpx.get(f"{url}/health").json()
    finally:
        proc.terminate()
        proc.join(30)
    print(f"\nsoak: {requests} requests from {clients} clients in {wall:.0f} s, {new_tokens} new tokens each, "
          f"llama-small (demo size) + vocoder, device {device}, server options {options or 'default'}\n")  # fmt: skip
    print("| kind | requests | 200 | 429 | 5xx | other | p50 s | p95 s | p99 s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in (*KINDS, "all"):
        rows = [r for r in res if kind in ("all", r[0])]
        ok = [t for _, s, t in rows if s == 200]
        n429, n5xx = sum(s == 429 for _, s, _ in rows), sum(s >= 500 for _, s, _ in rows)
        other = len(rows) - len(ok) - n429 - n5xx
        p = np.percentile(ok, [50, 95, 99]) if ok else [float("nan")] * 3
        print(f"| {kind} | {len(rows)} | {len(ok)} | {n429} | {n5xx} | {other} | {p[0]:.2f} | {p[1]:.2f} | {p[2]:.2f} |")  # fmt: skip
    n5xx = sum(s >= 500 for _, s, _ in res)
    growth = (rss1 - rss0) / rss0 * 100
    print(f"\n{len(res) / wall:.2f} requests/s; 5xx: {n5xx} (goal 0); server RSS {rss0:.0f} -> {rss1:.0f} MB "
          f"({growth:+.1f}%, goal < 5%); refused by the server: {health['refused']}")  # fmt: skip
    print(f"server RSS every 10% of the requests, MB: {' '.join(f'{x:.0f}' for x in samples)}")
    return 0 if n5xx == 0 and growth < 5 else 1


# ---- chat latency ------------------------------------------------------------------------------
CHAT = [{"role": "system", "content": "answer briefly"}, {"role": "user", "content": TEXTS[0]},
        {"role": "assistant", "content": TEXTS[2]}, {"role": "user", "content": TEXTS[3]}]  # fmt: skip


def _chat_once(http: httpx.Client, url: str, spoken: bool, stream: bool, tokens: int) -> tuple[float, float, int]:  # fmt: skip
    """One chat request -> (s to the first token or audio chunk, s to the full response, reply
    tokens); streaming off, the first is the full response too."""
    body: dict = {"model": "bench", "messages": CHAT, "max_tokens": tokens, "temperature": 0, "stream": stream}  # fmt: skip
    if spoken:
        body |= {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "pcm16"}}
    t0 = time.perf_counter()
    if not stream:
        r = http.post(f"{url}/v1/chat/completions", json=body)
        r.raise_for_status()
        full = time.perf_counter() - t0
        return full, full, r.json()["usage"]["completion_tokens"]
    first, pieces = None, 0
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            got = (delta.get("audio") or {}).get("data") if spoken else delta.get("content")
            if got:
                first = first if first is not None else time.perf_counter() - t0
                pieces += 1
    return (first if first is not None else float("nan")), time.perf_counter() - t0, pieces


def chat_latency(bundle: Path, device: str, tokens: int, repeats: int) -> None:
    proc, url = _start(bundle, True, device)
    rows = []
    try:
        with httpx.Client(timeout=600) as http:
            for spoken in (False, True):
                # warm-up, and the reply's tokens (greedy: the same reply on and off)
                want = _chat_once(http, url, spoken, False, tokens)[2]
                for stream in (False, True):
                    _chat_once(http, url, spoken, stream, tokens)
                    runs = [_chat_once(http, url, spoken, stream, tokens) for _ in range(repeats)]
                    first, full = (float(np.median([r[i] for r in runs])) for i in (0, 1))
                    rows.append((spoken, stream, first, full, want, runs[0][2] if stream else 1))
    finally:
        proc.terminate()
        proc.join(30)
    print(f"\nchat latency: one conversation (system + 3 turns) at a time, greedy, max_tokens {tokens}, "
          f"llama-small (demo size) + vocoder, device {device}, p50 of {repeats} requests\n")  # fmt: skip
    print("| reply | streaming | first token s | full response s | reply tokens | pieces |")
    print("|---|---|---:|---:|---:|---:|")
    for spoken, stream, first, full, n, pieces in rows:
        print(f"| {'spoken' if spoken else 'text'} | {'on' if stream else 'off'} | {first:.3f} | {full:.3f} | {n} | {pieces} |")  # fmt: skip
    print("\nfirst token: the first text delta; for a spoken reply the first delta.audio chunk of speech; "
          "pieces: text deltas or audio chunks (1: one response)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--soak", action="store_true", help="the bounded soak instead of the batching sweep"
    )
    ap.add_argument("--soak-requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--soak-new-tokens", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own)")  # fmt: skip
    ap.add_argument("--max-streams", type=int, default=None, help="the server's --max-streams (default: its own)")  # fmt: skip
    ap.add_argument("--chat", action="store_true", help="chat latency (first token / audio chunk, streaming on and off)")  # fmt: skip
    ap.add_argument("--chat-tokens", type=int, default=48)
    ap.add_argument("--chat-repeats", type=int, default=5)
    a = ap.parse_args(argv)
    if a.chat:
        with tempfile.TemporaryDirectory() as tmp:
            chat_latency(build_bundle(Path(tmp)), a.device, a.chat_tokens, a.chat_repeats)
        return 0
    if a.soak:
        if not os.path.exists("/proc/self/status"):
            raise SystemExit("--soak reads the server's memory from /proc (Linux)")
        opts = {k: v for k, v in (("max_queue", a.max_queue), ("max_streams", a.max_streams)) if v is not None}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            tok, wav = unit_tokenizer(Path(tmp) / "units")
            return soak(
                build_bundle(Path(tmp), tok),
                wav,
                a.clients,
                a.soak_requests,
                a.soak_new_tokens,
                a.device,
                opts,
            )
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp))
        res = {on: bench(bundle, on, a.levels, a.requests_per_client, a.new_tokens, a.device) for on in (False, True)}  # fmt: skip
    print(f"\nTTS requests, {a.new_tokens} units each + vocoder, llama-small (demo size), device {a.device}, "
          f"{a.requests_per_client} requests per client\n")  # fmt: skip
    print("| clients | batching | req/s | p50 s | p95 s | errors | mean batch | speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in a.levels:
        for on in (False, True):
            rps, p50, p95, err, rows = res[on][n]
            up = f"{rps / res[False][n][0]:.2f}x" if on else ""
            print(f"| {n} | {'on' if on else 'off'} | {rps:.2f} | {p50:.3f} | {p95:.3f} | {err} | {rows:.1f} | {up} |")  # fmt: skip
    top = max(a.levels)
    gain = res[True][top][0] / res[False][top][0]
    print(f"\nbatching at {top} clients: {gain:.2f}x requests/s (goal >= 4x): {'met' if gain >= 4 else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
