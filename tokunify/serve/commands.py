"""`tokunify serve`: load a bundle once and serve it with uvicorn."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tokunify.generate.generator import Generator
from tokunify.serve.batcher import Batcher
from tokunify.serve.config import ServeArgs, is_loopback

ARGS_ENV = "TOKUNIFY_SERVE_ARGS"
"""How ``--workers`` hands the arguments to each worker process (JSON of :class:`ServeArgs`)."""


def build_app(args: ServeArgs, engine_class: Any = None):  # type: ignore[no-untyped-def]  # -> fastapi.FastAPI
    """The app ``tokunify serve`` runs (benchmarks and tests build it through here too);
    ``engine_class``: a subclass of :class:`~tokunify.serve.engine.Engine` (default: Engine)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(
            f"tokunify serve needs its extra: pip install 'tokunify[serve]' ({e})"
        ) from e
    from tokunify.serve.app import create_app  # lazy (extra: serve, fastapi)
    from tokunify.serve.engine import Engine  # lazy (extra: serve, anyio)

    capacity = args.capacity()  # checks --max-batch, --max-queue, ...
    gen = Generator(args.bundle, device=args.device)
    batcher = Batcher(
        gen.generate_ids,
        eos=gen.vocab.eos,
        max_batch=args.max_batch if args.batching else 1,
        wait_s=args.batch_wait_ms / 1000 if args.batching else 0.0,
    )
    name = args.model_name or Path(args.bundle).resolve().name
    engine = (engine_class or Engine)(gen, args.limits(), batcher, name, capacity)
    return create_app(engine, args.access())


def app_from_env():  # type: ignore[no-untyped-def]
    """uvicorn factory for worker processes: the app of the :class:`ServeArgs` in ``$TOKUNIFY_SERVE_ARGS``."""
    raw = os.environ.get(ARGS_ENV)
    if not raw:
        raise ValueError(f"${ARGS_ENV} is not set (it is set by `tokunify serve --workers N`)")
    return build_app(ServeArgs(**json.loads(raw)))


def startup_warnings(args: ServeArgs) -> list[str]:
    """What ``tokunify serve`` warns about before it listens (one line each)."""
    if not is_loopback(args.host) and args.key() is None:
        return [f"warning: serving on {args.host} without an API key: anyone who can reach port {args.port} can use this model; set --api-key or $TOKUNIFY_API_KEY"]  # fmt: skip
    return []


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus tokunify's server log (request ids with tracebacks) on its handler."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["tokunify.serve"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return cfg


def run_serve(args: ServeArgs) -> None:
    import uvicorn

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.drain_seconds < 0:
        raise ValueError(f"--drain-seconds must be >= 0, got {args.drain_seconds}")
    args.capacity()  # bad limits fail here, before the model loads
    for line in startup_warnings(args):
        print(line, file=sys.stderr)
    where = f"http://{args.host}:{args.port}/ (page at /, API at /v1)"
    # uvicorn drains on SIGTERM (stops accepting, waits --drain-seconds for in-flight requests,
    # cancels the rest), then re-raises the signal to the handler it found: a no-op one makes a
    # drained stop exit 0 instead of dying by the signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    run: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": "info",
                           "log_config": _log_config(), "timeout_graceful_shutdown": args.drain_seconds}  # fmt: skip
    if args.workers == 1:
        app = build_app(args)
        print(f"serving {args.bundle} on {where}", flush=True)
        uvicorn.run(app, **run)
        return
    os.environ[ARGS_ENV] = json.dumps(dataclasses.asdict(args))
    print(f"serving {args.bundle} on {where} with {args.workers} worker processes", flush=True)
    uvicorn.run("tokunify.serve.commands:app_from_env", factory=True, workers=args.workers, **run)
