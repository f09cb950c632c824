"""Atomic file-system writes (the one owner of "write to a temp sibling, then rename") and the
one content hasher of files and directories.

A reader (or a resumed job) never sees a half-written file or directory: everything is written to a
temporary sibling named after the target and the writing process, and appears under its real name by
one ``os.replace`` only once complete. A crash or kill leaves the target as it was (plus, at worst, a
``.NAME.tmp-PID`` sibling that the next writer of the same target removes).
"""

from __future__ import annotations

import fcntl
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


class LockedError(ValueError):
    """Another live process holds the lock (its pid is in the message)."""


@contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` (created, with this pid in it) for the block.

    The kernel drops the lock when the process exits or crashes, so a stale file never blocks a
    later run. A second holder fails at once with :class:`LockedError` naming ``what`` and the
    holder's pid (``flock`` locks are per open file, so this holds within one process too).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            raise LockedError(
                f"{path.parent}: another {what} is running here (pid {pid}; lock {path.name})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield path
    finally:
        f.close()  # releases the lock


def refuse_non_empty(
    out: str | Path, overwrite: bool, writes: tuple[str, ...] = (), what: str = "--out"
) -> None:
    """Refuse to write into a non-empty directory unless ``overwrite`` (one line naming it).

    ``writes``: the names the command writes there; then only those count (a command that
    writes a few files beside its input config refuses only to replace its own earlier result).
    """
    p = Path(out)
    if overwrite or not p.exists():
        return
    if not p.is_dir():
        raise ValueError(f"{p}: {what} exists and is not a directory")
    if writes:
        found = [n for n in writes if (p / n).exists()]
        if found:
            raise ValueError(
                f"{p}: {what} holds an earlier result ({', '.join(found)}); "
                "pass --overwrite to replace it"
            )
    elif any(p.iterdir()):
        raise ValueError(f"{p}: {what} is not empty; pass --overwrite to replace it")


def looks_like_path(name: str, base_dir: str | Path | None = None) -> bool:
    """Whether a model/tokenizer ``source`` string is meant as a local path, not a hub id: it
    starts with ``.``, ``/`` or ``~``, has a backslash, has more than one ``/`` (hub ids have one),
    or exists relative to ``base_dir``."""
    s = str(name)
    if s.startswith((".", "/", "~")) or "\\" in s or s.count("/") > 1:
        return True
    return base_dir is not None and (Path(base_dir) / s).exists()


def check_local_path(name: str | Path, what: str, base_dir: str | Path | None = None) -> None:
    """One line ``NAME: no such directory (WHAT)`` for a path-like name that does not exist, before
    a hub client turns it into a misleading connection error."""
    s = str(name)
    missing = looks_like_path(s, base_dir) and not Path(s).expanduser().exists()
    if missing and (base_dir is None or not (Path(base_dir) / s).exists()):
        raise FileNotFoundError(f"{s}: no such directory ({what})")
