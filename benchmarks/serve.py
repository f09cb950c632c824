"""`tokunify serve` under load: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients,
dynamic batching on against the same server with batching off (``--no-batching``).
Goal (issue 19): >= 4x requests/s at 16 clients.

Set-up: a demo-sized bundle (scratch ``llama-small``, 100 units, a SentencePiece text tokenizer)
with a random CodeHiFiGAN vocoder, built in a temp dir. The server is ``build_app`` (what
``tokunify serve`` runs) under uvicorn in a child process; httpx clients in this process. Each
request is a TTS request that generates exactly ``--new-tokens`` units (``min_new_tokens`` =
``max_new_tokens``) and is vocoded, so every request costs the same whatever the random weights say.

Run: python benchmarks/serve.py [--new-tokens 48] [--requests-per-client 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
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

from tokunify.bundle import attach_vocoder
from tokunify.cli import main as cli
from tokunify.serve.commands import build_app
from tokunify.serve.config import ServeArgs
from tokunify.tokenizers.text import train_sentencepiece
from tokunify.vocoder import CodeHiFiGAN, CodeHiFiGANConfig, save_codehifigan

UNITS = 100
TEXTS = ["the quick brown fox jumps over the lazy dog", "seven red birds sing in the old green tree",
         "we saw five small birds", "where are you going today"]  # fmt: skip


def build_bundle(root: Path) -> Path:
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(1500)))  # fmt: skip
    train_sentencepiece(corpus, root / "tok", vocab_size=320)
    bundle = root / "bundle"
    assert cli(["extend", "scratch:llama-small", "--text-tokenizer", str(root / "tok"), "--units", str(UNITS), "--out", str(bundle), "--overwrite"]) == 0  # fmt: skip
    torch.manual_seed(0)
    cfg = CodeHiFiGANConfig(num_embeddings=UNITS, embedding_dim=64, upsample_initial_channel=64, upsample_rates=[5, 4, 4, 4], upsample_kernel_sizes=[11, 8, 8, 8],
                            resblock="2", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                            dur_predictor_params={"encoder_embed_dim": 64, "var_pred_hidden_dim": 64, "var_pred_kernel_size": 3, "var_pred_dropout": 0.0})  # fmt: skip
    attach_vocoder(bundle, save_codehifigan(CodeHiFiGAN(cfg), root / "voc"))
    return bundle


def _serve(bundle: str, port: int, batching: bool, device: str) -> None:
    import uvicorn

    torch.set_num_threads(max(1, torch.get_num_threads()))
    args = ServeArgs(bundle, port=port, batching=batching, device=device, model_name="bench")
    uvicorn.run(build_app(args), host="127.0.0.1", port=port, log_level="warning")


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
            body = {"model": "bench", "input": TEXTS[(c + i) % len(TEXTS)], "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}  # fmt: skip
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
    port = _free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(str(bundle), port, batching, device), daemon=True)  # fmt: skip
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() - t0 > 300 or not proc.is_alive():
                    raise RuntimeError("server did not start") from None
                time.sleep(0.3)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
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
