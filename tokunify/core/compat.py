"""The module paths of tokunify 0.1 before the layered layout, kept importable for one release.

``import tokunify.formats`` (or ``from tokunify.bundle import load``) still works: a meta-path finder
maps the old name to the module's new home, so both names are one module object (one registry, one
set of classes), and warns with :class:`DeprecationWarning` naming the new path. Written by hand:
the import system has no alias table of its own, and a re-export module per old path would put
twenty files back at the top level.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "tokunify.vocab": "tokunify.core.vocab",
    "tokunify.layouts": "tokunify.core.layouts",
    "tokunify.fsio": "tokunify.core.fsio",
    "tokunify.config": "tokunify.core.config",
    "tokunify.textnorm": "tokunify.core.textnorm",
    "tokunify.audio": "tokunify.data.audio",
    "tokunify.melspec": "tokunify.data.melspec",
    "tokunify.manifest": "tokunify.data.manifest",
    "tokunify.launcher": "tokunify.data.launcher",
    "tokunify.synth_interleave": "tokunify.data.spans",
    "tokunify.store.commands": "tokunify.tokenize.store_commands",
    "tokunify.store": "tokunify.data.store",
    "tokunify.importers": "tokunify.data.importers",
    "tokunify.corpus": "tokunify.data.corpus",
    "tokunify.formats": "tokunify.tasks",
    "tokunify.chat.task": "tokunify.tasks.chat",
    "tokunify.chat.templates": "tokunify.tasks.templates",
    "tokunify.chat.conversation": "tokunify.tasks.conversation",
    "tokunify.chat.instructions": "tokunify.tasks.instructions",
    "tokunify.tokenize_job": "tokunify.tokenize.job",
    "tokunify.tokenize_ray": "tokunify.tokenize.ray",
    "tokunify.bundle": "tokunify.model.bundle",
    "tokunify.extend": "tokunify.model.extend",
    "tokunify.generate.evaluate": "tokunify.eval.generative",
    "tokunify.generate.synth_interleave": "tokunify.synth.interleave",
    "tokunify.slm": "tokunify.eval.slm",
    "tokunify.chat_data": "tokunify.synth.chat_data",
    "tokunify.demo": "tokunify.demos.default",
    "tokunify.demo_instruct": "tokunify.demos.instruct",
    "tokunify.demo_ssl": "tokunify.demos.ssl",
    "tokunify.demo_report": "tokunify.demos.report",
}
"""Old module path -> new one. A moved package's submodules follow it (``tokunify.store.reader``)."""


def new_name(old: str) -> str | None:
    """The new path of an old module name, or None if ``old`` did not move."""
    if old in MOVED:
        return MOVED[old]
    head = old.rpartition(".")[0]
    while head:
        if head in MOVED:
            return f"{MOVED[head]}.{old[len(head) + 1 :]}"
        head = head.rpartition(".")[0]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self.old} moved to {self.new}; the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=3,
        )
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The new module is already executed; the import system has just set its ``__spec__`` to
        # the alias's (``_init_module_attrs`` always does), which would make a moved package look
        # like a plain module to ``importlib.resources``: give it back its own spec.
        module.__spec__ = self.spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname) if fullname.startswith("tokunify.") else None
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname, new))


def install() -> None:
    """Put the alias finder first on :data:`sys.meta_path` (a moved package's old submodule names
    must not be found again by the path finder as second copies); idempotent."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
