"""The one-way data flow of the house, checked by parsing imports.

tokenizers -> (vocab, layouts, formats) -> bundle/extend -> train -> generate -> vocoder
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tokunify

PKG = Path(tokunify.__file__).parent

# package part -> tokunify modules it must never import
FORBIDDEN = {
    "tokenizers": (
        "tokunify.vocab",
        "tokunify.formats",
        "tokunify.layouts",
        "tokunify.extend",
        "tokunify.bundle",
        "tokunify.train",
        "tokunify.generate",
    ),
    "vocab": (
        "tokunify.formats",
        "tokunify.train",
        "tokunify.generate",
        "tokunify.tokenizers",
        "tokunify.extend",
        "tokunify.bundle",
    ),
    "layouts": ("tokunify.vocab", "tokunify.formats", "tokunify.train", "tokunify.generate"),
    "formats": (
        "tokunify.train",
        "tokunify.generate",
        "tokunify.tokenizers",
        "tokunify.bundle",
        "tokunify.extend",
    ),
    "core": ("tokunify.train", "tokunify.generate"),
    "vocoder": ("tokunify.train",),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


# Modules of core packages that are applications on top of generation (like serve/).
APPLICATIONS = (
    "chat/engine.py",
    "chat/session.py",
    "chat/commands.py",
    "chat_data.py",
    "demo_instruct.py",
)


def part_of(path: Path) -> list[str]:
    rel = path.relative_to(PKG)
    top = rel.parts[0].removesuffix(".py")
    parts = [top]
    if top not in ("train", "generate", "serve", "cli.py", "cli", "__main__", "demo") and (
        rel.as_posix() not in APPLICATIONS
    ):
        parts.append("core")
    return parts


def test_data_flows_one_way():
    bad = []
    for path in PKG.rglob("*.py"):
        for part in part_of(path):
            for mod in imports_of(path):
                if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN.get(part, ())):
                    bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, bad


def test_no_top_level_tokenizers_package():
    import tokenizers  # Hugging Face's, not ours

    assert "site-packages" in (tokenizers.__file__ or "") or "dist-packages" in (
        tokenizers.__file__ or ""
    )


# Expressions that are vocab ids or id bounds (UnifiedVocab properties and methods).
ID_ATTRS = {"bos", "eos", "pad", "text_start", "text_end", "empty", "text_size", "num_used", "prefix_len"}  # fmt: skip
ID_CALLS = {"task", "stream_start", "stream_end", "special", "stream_range", "codebook_range", "prefix"}  # fmt: skip
SEQUENCES = {"ids", "mask", "loss_mask", "prompt", "input_ids", "tokens", "seq"}


def _is_id(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in ID_ATTRS
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in ID_CALLS
    return isinstance(node, ast.Subscript) and _is_id(node.value)


def _int(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def position_arithmetic(source: str) -> list[str]:
    """Lines that compute ids or sequence positions by hand: ``+``/``-`` on a vocab id or bound
    (``tag_id - vocab.task(...)``), sums of int literals (``2 + 1``), and token sequences sliced
    at a literal position (``mask[2:]``). Only :mod:`tokunify.vocab` may know these."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            if _is_id(node.left) or _is_id(node.right) or (_int(node.left) and _int(node.right)):
                out.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Add, ast.Sub)):
            if _is_id(node.value) or _is_id(node.target):
                out.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in SEQUENCES
        ):
            s = node.slice
            bounds = [s.lower, s.upper] if isinstance(s, ast.Slice) else [s]
            if any(_int(b) and b.value >= 2 for b in bounds):  # type: ignore[union-attr]
                out.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(out, key=lambda x: int(x.split(":")[0]))


def test_no_position_arithmetic_outside_vocab():
    offenders = {
        str(p.relative_to(PKG)): found
        for p in PKG.rglob("*.py")
        if p.name != "vocab.py" and (found := position_arithmetic(p.read_text()))
    }
    assert not offenders, offenders


def test_position_check_catches_planted_examples():
    """What formats.py did before the vocab answered position questions is caught, line by line;
    asking the vocab is not."""
    planted = """
def parse(vocab, ids, i):
    task = vocab.tasks[int(ids[i]) - vocab.task(vocab.tasks[0])]
    split = 2 + 1 + boundary
    mask[2:] = True
    start = vocab.stream_range(name)[0] + q * size
    n = vocab.text_size
    n += vocab.num_used
"""
    assert [line.split(":")[0] for line in position_arithmetic(planted)] == [
        "3",
        "4",
        "5",
        "6",
        "8",
    ]
    clean = """
def parse(vocab, ids, i, q):
    task = vocab.task_name(ids[i])
    mask[vocab.prefix_len :] = True
    head = len(vocab.prefix(task)) + 1
    x = vocab.to_global(name, q)
    y = ids[1:] + 2
"""
    assert position_arithmetic(clean) == []


def test_no_id_offset_literals_outside_vocab():
    """Only vocab.py computes id ranges: nobody else adds text_size or slices by hard-coded offsets."""
    pattern = re.compile(r"text_size\s*\+|\+\s*text_size|range\(\s*\d{3,}\s*,")
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if p.name != "vocab.py" and pattern.search(p.read_text())
    ]
    assert not offenders, offenders
