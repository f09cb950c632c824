"""`tokunify serve` as a user runs it: a subprocess on 127.0.0.1, then clean errors for bad arguments."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tokunify.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a fresh interpreter imports torch + transformers: ~10 s idle, 30 s+ loaded
def test_cli_serves_a_bundle(voc_bundle):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [
        sys.executable,
        "-m",
        "tokunify",
        "serve",
        str(voc_bundle),
        "--port",
        str(port),
        "--no-batching",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() - t0 < 90, "server did not come up"
                time.sleep(0.2)
        assert health["model"] == voc_bundle.name and health["batching"]["max_batch"] == 1
        r = httpx.post(f"{url}/v1/audio/speech", json={"model": voc_bundle.name, "input": "the cat", "max_new_tokens": 12, "response_format": "wav"}, timeout=60)  # fmt: skip
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokunify serve: error:") and "missing" in err and "\n" not in err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 1
    assert "--max-batch must be >= 1" in capsys.readouterr().err


def test_workers_build_their_app_from_the_environment(voc_bundle, monkeypatch):
    """`--workers N` hands ServeArgs to each uvicorn worker as JSON; the factory rebuilds the app."""
    import dataclasses
    import json

    from tokunify.serve.commands import ARGS_ENV, app_from_env
    from tokunify.serve.config import ServeArgs

    monkeypatch.delenv(ARGS_ENV, raising=False)
    with pytest.raises(ValueError, match=ARGS_ENV):
        app_from_env()
    args = ServeArgs(str(voc_bundle), model_name="w", max_batch=3, max_input_chars=77)
    monkeypatch.setenv(ARGS_ENV, json.dumps(dataclasses.asdict(args)))
    engine = app_from_env().state.engine
    assert engine.model_name == "w" and engine.batcher.max_batch == 3
    assert engine.limits.max_input_chars == 77


def _start_serve(bundle: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`tokunify serve bundle` on a free loopback port, once /health answers."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "tokunify", "serve", str(bundle), "--port", str(port), *options]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            httpx.get(f"{url}/health", timeout=2)
            return proc, url
        except httpx.TransportError:
            assert time.monotonic() - t0 < 90, "server did not come up"
            time.sleep(0.2)


def _sigterm_during_a_batch(bundle: Path, drain: str, new_tokens: int) -> tuple[int, object, tuple[int, object], str]:  # fmt: skip
    """Send a long TTS request and a long streamed one, SIGTERM once both run; -> (exit code, the
    response or the client's exception, (streamed bytes, None or how the stream broke), output)."""
    proc, url = _start_serve(bundle, "--drain-seconds", drain, "--max-new-tokens", "4000")
    got: list[object] = []
    streamed: list[tuple[int, object]] = []
    body = {"model": bundle.name, "input": "the red cat", "temperature": 0,
            "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "response_format": "wav"}  # fmt: skip

    def send() -> None:
        try:
            got.append(httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120))
        except httpx.HTTPError as e:
            got.append(e)

    def stream() -> None:
        n = 0
        try:
            with httpx.stream("POST", f"{url}/v1/audio/speech", json={**body, "stream": True}, timeout=120) as r:  # fmt: skip
                for chunk in r.iter_raw():
                    n += len(chunk)
            streamed.append((n, None))
        except httpx.HTTPError as e:
            streamed.append((n, e))

    clients = [threading.Thread(target=send), threading.Thread(target=stream)]
    try:
        for c in clients:
            c.start()
        t0 = time.monotonic()
        while True:
            h = httpx.get(f"{url}/health", timeout=5).json()
            if h["batching"]["batches"] >= 1 and h["streams"]["active"] == 1:
                break
            assert time.monotonic() - t0 < 60, "the requests never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        for c in clients:
            c.join(60)
        out = proc.stdout.read() if proc.stdout else ""
        return code, got[0], streamed[0], out
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow  # two fresh interpreters import torch + transformers
def test_sigterm_drains_in_flight_requests_and_exits_0(voc_bundle):
    code, r, (n, broke), out = _sigterm_during_a_batch(voc_bundle, "60", 600)
    assert code == 0, out
    assert isinstance(r, httpx.Response) and r.status_code == 200 and r.content[:4] == b"RIFF", (r, out)  # fmt: skip
    assert broke is None and n > 44  # the stream ran to its end
    assert "Shutting down" in out and "Finished server process" in out


@pytest.mark.slow
def test_sigterm_cancels_what_outlasts_the_drain_and_exits_0(voc_bundle):
    t0 = time.monotonic()
    code, r, (n, broke), out = _sigterm_during_a_batch(voc_bundle, "0.5", 4000)
    assert code == 0, out
    assert isinstance(r, httpx.Response) and r.status_code == 503, (r, out)
    assert r.json()["error"]["message"] == "the server is shutting down; retry the request"
    assert isinstance(broke, httpx.RemoteProtocolError) and n > 44, (n, broke)  # cut off
    assert "timeout graceful shutdown exceeded" in out
    assert time.monotonic() - t0 < 120
