"""Helpers for the importer tests (a module of its own: `from conftest import` resolves to
whichever conftest was imported first as `conftest` in a run that collects several folders)."""

from __future__ import annotations


def reasons(rejects: list[dict]) -> str:
    """All reject reasons, one per line (for `in` checks)."""
    return "\n".join(r["reason"] for r in rejects)
