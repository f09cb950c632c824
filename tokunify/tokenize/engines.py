"""Tokenize engines: who runs the store job's chunks. One registered object per engine, asked by name.

``native`` runs them in this process and its ``--workers`` (the store job's own executor); ``ray``
hands them to Ray Data (:mod:`tokunify.tokenize.ray`, extra ``[ray]``, imported by Ray only when
it runs). A new engine is one class with a ``name`` and an :meth:`Engine.executor`, added to
:data:`ENGINES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from tokunify.data.store import StoreMeta
from tokunify.tokenize.job import Row, TokenizeArgs, TokenizeError
from tokunify.tokenize.ray import run_ray

Executor = Callable[[list[int], str, Callable[[dict[str, Any]], None]], None]
"""(chunks to do, device, report one finished chunk's stats) -> None."""


class Engine(Protocol):
    name: ClassVar[str]

    def executor(self, args: TokenizeArgs, meta: StoreMeta, rows: list[Row]) -> Executor | None:
        """The chunk executor for :func:`tokunify.data.store.job.run_store_job` (None: its own)."""
        ...


class NativeEngine:
    """This process and its local ``--workers``: the store job's own executor."""

    name: ClassVar[str] = "native"

    def executor(self, args: TokenizeArgs, meta: StoreMeta, rows: list[Row]) -> Executor | None:
        return None


class RayEngine:
    """Ray Data: decode tasks and a pool of tokenizer actors (``--ray-*`` options)."""

    name: ClassVar[str] = "ray"

    def executor(self, args: TokenizeArgs, meta: StoreMeta, rows: list[Row]) -> Executor | None:
        def run(todo: list[int], device: str, done: Callable[[dict[str, Any]], None]) -> None:
            run_ray(args, meta, rows, todo, device, done)

        return run


ENGINES: dict[str, Engine] = {e.name: e for e in (NativeEngine(), RayEngine())}


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise TokenizeError(
            f"engine: unknown tokenize engine {name!r}; known: {sorted(ENGINES)}"
        ) from None
