"""The house in layers, checked by parsing every module's imports (function bodies included).

Each package of tokunify is one layer; a module imports only its own package and packages of
lower tiers (peers in one tier do not import each other)::

    core -> data -> tasks | tokenizers -> model | tokenize -> vocoder -> train | generate
         -> eval -> chat -> synth | serve -> demos -> cli (cli.py, __main__.py, the package root)

A tokunify import inside a function is declared on its own line(s) with
``# lazy (extra: NAME)`` (the module needs an optional extra) or ``# lazy (start-up: REASON)``
(a measured CLI start-up cost); anything else fails, as do circles and imports up a layer.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import tokunify

PKG = Path(tokunify.__file__).parent

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(tier.split())
    for tier in (
        "core",
        "data",
        "tasks tokenizers",
        "model tokenize",
        "vocoder",
        "train generate",
        "eval",
        "chat",
        "synth serve",
        "demos",
        "cli",
    )
)
TOP_FILES = {"__init__.py", "__main__.py", "cli.py"}  # the package root: the "cli" layer
LAZY = re.compile(r"#\s*lazy \((extra|start-up): [^)]+\)")

# Rules inside the layers: what a lower layer may never know even where the tiers allow it.
FORBIDDEN = {
    # Tokenizers emit local ids and know nothing of the LLM's vocabulary.
    "tokunify.tokenizers": ("tokunify.core.vocab", "tokunify.core.layouts", "tokunify.tasks"),
    # The vocab owns id ranges and knows no task; layouts know neither.
    "tokunify.core.vocab": ("tokunify.tasks",),
    "tokunify.core.layouts": ("tokunify.core.vocab", "tokunify.tasks"),
}


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path, root: Path) -> str:
    """The layer name of a file: its first folder under the package, or "cli" for the root files."""
    rel = path.relative_to(root)
    return "cli" if len(rel.parts) == 1 else rel.parts[0]


def tier_of(package: str, layers: tuple[frozenset[str], ...] = LAYERS) -> int:
    for i, tier in enumerate(layers):
        if package in tier:
            return i
    raise KeyError(f"package {package!r} is in no layer: add it to LAYERS")


def statement_ends(path: Path) -> dict[int, int]:
    """First line -> last line of every import statement (a declaration may sit on any of them)."""
    return {
        n.lineno: n.end_lineno or n.lineno
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }


def imports(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported tokunify module, line, inside a function) for every import statement of a file.
    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module."""
    name = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    top = root.name
    out: list[tuple[str, int, bool]] = []

    def add(mod: str, line: int, local: bool) -> None:
        if (mod == top or mod.startswith(top + ".")) and (mod, line, local) not in out:
            out.append((mod, line, local))

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    add(a.name, child.lineno, local)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = name.split(".")[: len(name.split(".")) - child.level + is_pkg]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    is_mod = (root.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                        root.parent / sub.replace(".", "/") / "__init__.py"
                    ).exists()
                    add(sub if is_mod else base, child.lineno, local)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return out


def package_of_module(mod: str, root: Path) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "cli"
    if (root / parts[1]).is_dir():
        return parts[1]
    return "cli"  # tokunify.cli, tokunify.__main__


def check(root: Path, layers: tuple[frozenset[str], ...] = LAYERS) -> dict[str, list[str]]:
    """Every breach of the layering under package dir ``root``: circles, imports up a layer (or
    across a tier), undeclared function-local imports and FORBIDDEN imports."""
    found: dict[str, list[str]] = {"circle": [], "up": [], "local": [], "forbidden": []}
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        mine = package_of(path, root)
        lines = path.read_text().splitlines()
        ends = statement_ends(path)
        graph[me] = set()
        for mod, line, local in imports(path, root):
            graph[me].add(mod)
            where = f"{path.relative_to(root)}:{line} imports {mod}"
            theirs = package_of_module(mod, root)
            if theirs != mine and tier_of(theirs, layers) >= tier_of(mine, layers):
                found["up"].append(where)
            if local and not any(LAZY.search(x) for x in lines[line - 1 : ends[line]]):
                found["local"].append(where)
            for owner, banned in FORBIDDEN.items():
                if (me == owner or me.startswith(owner + ".")) and any(
                    mod == b or mod.startswith(b + ".") for b in banned
                ):
                    found["forbidden"].append(where)
    found["circle"] = [" -> ".join(c) for c in circles(graph)]
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan); a package's ``__init__`` counts
    as importing what it re-exports, so a submodule that imports its own package root is a circle
    only if the root imports it back."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def edges(m: str) -> Iterable[str]:
        return (n for n in graph.get(m, ()) if n in graph and n != m)

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges(v):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_house_is_in_layers():
    found = check(PKG)
    assert found == {"circle": [], "up": [], "local": [], "forbidden": []}, found


def test_top_level_holds_only_the_entry_points():
    assert {p.name for p in PKG.glob("*.py")} == TOP_FILES
    for d in PKG.iterdir():
        if d.is_dir() and (d / "__init__.py").exists():
            tier_of(d.name)  # every package is in a layer


PLANTED = {
    "core/__init__.py": "",
    "core/a.py": "import pkg.core.b\n",
    "core/b.py": "from pkg.core import a\n",  # a <-> b: a circle
    "core/up.py": "from pkg.train.loop import step\n",  # core imports train: up a layer
    "train/__init__.py": "",
    "train/loop.py": "def step():\n    from pkg.generate import g\n",  # a peer, and undeclared local
    "train/ok.py": "def f():\n    from pkg.core import b  # lazy (start-up: 1 s of torch)\n",
    "generate/__init__.py": "",
    "generate/g.py": "import pkg.core.b\n",
}


def test_the_check_catches_planted_breaches(tmp_path):
    root = tmp_path / "pkg"
    for rel, src in {"__init__.py": "", **PLANTED}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(src)
    layers = (frozenset({"core"}), frozenset({"train", "generate"}), frozenset({"cli"}))
    found = check(root, layers)
    assert found["circle"] == ["pkg.core.a -> pkg.core.b"]
    assert found["up"] == [
        "core/up.py:1 imports pkg.train.loop",
        "train/loop.py:2 imports pkg.generate.g",
    ]
    assert found["local"] == ["train/loop.py:2 imports pkg.generate.g"]  # ok.py's is declared


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
    at a literal position (``mask[2:]``). Only :mod:`tokunify.core.vocab` may know these."""
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
