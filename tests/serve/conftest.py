"""A tiny bundle with a tiny vocoder, served by the real app on 127.0.0.1 (a free port) in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="tokunify[serve] is not installed")
import uvicorn

from tokunify.serve.commands import build_app
from tokunify.serve.config import ServeArgs

LIMITS = {"max_upload_mb": 0.5, "max_input_chars": 300, "max_audio_seconds": 15.0, "max_new_tokens": 4000}  # fmt: skip


class ThreadServer:
    """uvicorn serving an app from a background thread; ``url`` once started."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > 60 or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        return self.app.state.engine


@contextmanager
def serving(bundle: Path, engine_class: Any = None, **options: Any) -> Iterator[ThreadServer]:
    """The tiny bundle served with the test LIMITS and ``options`` (ServeArgs fields)."""
    args = ServeArgs(str(bundle), model_name="tiny", **{**LIMITS, **options})
    with ThreadServer(build_app(args, engine_class)) as s:
        yield s


@pytest.fixture(scope="session")
def serve_with(voc_bundle):  # type: ignore[no-untyped-def]
    """``with serve_with(max_queue=2) as s:`` the tiny vocoder bundle with other options."""
    return lambda engine_class=None, **options: serving(voc_bundle, engine_class, **options)


@pytest.fixture(scope="session")
def server(voc_bundle) -> Iterator[ThreadServer]:
    args = ServeArgs(str(voc_bundle), model_name="tiny", **LIMITS)
    with ThreadServer(build_app(args)) as s:
        yield s


@pytest.fixture(scope="session")
def wav_file(speech_manifest) -> Path:
    return sorted((speech_manifest.parent / "wavs").glob("*.wav"))[0]


@pytest.fixture(scope="session")
def no_vocoder_server(train_bundle) -> Iterator[ThreadServer]:
    """The same tiny bundle without a vocoder: text outputs only."""
    with ThreadServer(build_app(ServeArgs(str(train_bundle), model_name="nv"))) as s:
        yield s
