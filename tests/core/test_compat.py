"""The module paths of 0.1 still import, as the very modules of the new layout, with a warning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import tokunify
from tokunify.core.compat import MOVED, new_name


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_path_is_its_new_module(old):
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        mod = importlib.import_module(old)
    assert mod is new  # one module object: one registry, one set of classes
    assert mod.__spec__.name == MOVED[old]  # still itself: a package stays a package


def test_a_package_reached_by_its_old_path_keeps_its_resources():
    code = (
        "import warnings; warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import tokunify.formats\n"  # the old path of tokunify.tasks
        "from importlib import resources\n"
        "assert resources.files('tokunify.tasks').joinpath('instructions.yaml').is_file()\n"
        "from tokunify.tasks.instructions import InstructionPool\n"
        "assert InstructionPool.load().pools\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_old_imports_users_write_keep_working():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import tokunify\n"  # the new layout alone warns about nothing
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from tokunify.formats import get_format, FORMATS\n"
        "from tokunify.bundle import load\n"
        "from tokunify.store.reader import TokenStore\n"
        "import tokunify.tasks, tokunify.model.bundle, tokunify.data.store.reader as r\n"
        "assert FORMATS is tokunify.tasks.FORMATS and load is tokunify.model.bundle.load\n"
        "assert TokenStore is r.TokenStore and 'asr' in FORMATS\n"
        "import tokunify.store.reader as old\n"
        "assert old is r, (old, r)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_new_name_follows_moved_packages_only():
    assert new_name("tokunify.store.layout") == "tokunify.data.store.layout"
    assert new_name("tokunify.store.commands") == "tokunify.tokenize.store_commands"
    assert new_name("tokunify.formats") == "tokunify.tasks"
    assert new_name("tokunify.train.loop") is None  # did not move
    assert new_name("tokunify.chat.engine") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tokunify.no_such_module")
    assert tokunify.load is tokunify.model.bundle.load
