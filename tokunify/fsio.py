"""Atomic file-system writes (the one owner of "write to a temp sibling, then rename") and the
one content hasher of files and directories.

A reader (or a resumed job) never sees a half-written file or directory: everything is written to a
temporary sibling named after the target and the writing process, and appears under its real name by
one ``os.replace`` only once complete. A crash or kill leaves the target as it was (plus, at worst, a
``.NAME.tmp-PID`` sibling that the next writer of the same target removes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _tmp_sibling(target: Path) -> Path:
    return target.parent / f".{target.name}.tmp-{os.getpid()}"


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` by rename.

    Replacing an existing ``target`` moves it aside first (``.NAME.old-PID``) and deletes it after
    the new one is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary sibling file, then rename it onto ``target``.

    ``write`` may be any writer that takes a path (``pq.write_table(t, p)``, ``Path.write_text``...).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return atomic_write(target, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    return atomic_write(target, lambda p: p.write_bytes(data))


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex, 64 digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def content_hash(path: str | Path) -> str:
    """Content hash (16 hex digits) of a file, or of a directory: every file's relative name and
    bytes, in sorted order, except hidden ones (a part starting with ``.``: ``.cache/`` of the hub,
    ``.git``, the ``.NAME.tmp-PID`` siblings of a writer). The one hasher of the inputs of a job
    (a model directory, a bundle, a manifest): equal hashes, equal bytes.

    >>> content_hash("model/") == content_hash("copy-of-model/")  # doctest: +SKIP
    True
    """
    root = Path(path)
    if root.is_file():
        return file_hash(root)[:16]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory to hash")
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not _hidden(q.relative_to(root))):
        h.update(f"{p.relative_to(root).as_posix()}:{file_hash(p)}\n".encode())
    return h.hexdigest()[:16]
