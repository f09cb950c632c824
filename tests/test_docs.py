"""The README and the pages in docs/ say only what is there: plain file checks, no mkdocs needed.

- README.md is a front door: at most ``MAX_README_LINES`` lines.
- Every relative link resolves to a file, and an ``#anchor`` into a Markdown page to one of its
  headings (slugged as Python-Markdown's ``toc`` does, which mkdocs uses).
- Every test a page cites exists. The citation form, always in backticks:
  ``tests/<path>.py::<test>`` or ``tests/<path>.py::<Class>::<test>`` (the file must define it:
  parsed with ast), or a whole file or folder (``tests/<path>.py``, ``tests/<dir>/``). A test
  cited without its path (``test_foo`` where a test of that name exists, or
  ``test_bar.py::test_foo``) is an error.
- Every ``tokunify/...``, ``configs/...`` and ``benchmarks/...`` path named exists; every
  backticked dotted name ``tokunify.a.b`` (and every ``::: tokunify.a.b`` directive) names a module
  or something one defines or imports, or a module path kept by ``tokunify/core/compat.py``.
- Every page under docs/ is in mkdocs.yml's nav, and every nav entry is a page.
- Every ``make TARGET`` in code (spans and blocks) is a Makefile target.

The checks are functions of a repository root, so a planted repository shows each one fails.
"""

from __future__ import annotations

import ast
import functools
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CITATION = re.compile(r"tests/(?:[\w.-]+/)*(?:[\w.-]+\.py(?:::\w+){0,2}|)")
BARE_NAME = re.compile(r"test_\w+\*?")
BARE_FILE = re.compile(r"[\w/]*test_\w*\.py(?:::\w+)*")
REPO_PATH = re.compile(r"(?<![\w./<-])(?:tokunify|configs|benchmarks)/[\w/.-]*\w")
DOTTED = re.compile(r"tokunify(?:\.\w+)+(?:\(\))?")
DIRECTIVE = re.compile(r"^:::\s+(\S+)")
MAKE = re.compile(r"\bmake ([a-z][\w-]*)")


# ---- reading files (each parsed once per version) ----------------------------------------------
def stamp(path: Path) -> tuple[Path, int, int]:
    st = path.stat()
    return path, st.st_mtime_ns, st.st_size


@functools.cache
def _tree(key: tuple[Path, int, int]) -> ast.Module:
    return ast.parse(key[0].read_text())


def tree(path: Path) -> ast.Module:
    return _tree(stamp(path))


# ---- reading Markdown -------------------------------------------------------------------------
def blocks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each stretch of lines outside fenced code blocks."""
    inside, start, buf = False, 1, []
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            if not inside and buf:
                yield start, "\n".join(buf)
            inside, buf, start = not inside, [], n + 1
        elif not inside:
            buf.append(line)
    if buf and not inside:
        yield start, "\n".join(buf)


def fenced_lines(text: str) -> Iterator[str]:
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif inside:
            yield line


def code_spans(text: str) -> Iterator[tuple[int, str]]:
    """(line number, content) of every inline code span outside fenced blocks; a span may wrap."""
    for start, block in blocks(text):
        for m in CODE_SPAN.finditer(block):
            yield start + block.count("\n", 0, m.start()), " ".join(m.group(2).split())


def without_code(block: str) -> str:
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), block)


def slug(heading: str) -> str:
    """Python-Markdown's default ``toc`` slug of a heading's text."""
    text = re.sub(r"`+([^`]*)`+", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text).replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The ids of a page's headings (``{#id}`` if given; repeated slugs get ``_1``, ``_2``)."""
    return _anchors(stamp(page))


@functools.cache
def _anchors(key: tuple[Path, int, int]) -> set[str]:
    seen: set[str] = set()
    for _, block in blocks(key[0].read_text()):
        for line in block.splitlines():
            m = HEADING.match(line)
            if not m:
                continue
            given = re.search(r"\{\s*#([\w-]+)[^}]*\}\s*$", m.group(2))
            base = given.group(1) if given else slug(m.group(2))
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            seen.add(name)
    return seen


# ---- the checks -------------------------------------------------------------------------------
def long_readme(readme: Path, limit: int = MAX_README_LINES) -> list[str]:
    n = len(readme.read_text().splitlines())
    return [f"{readme.name}: {n} lines, more than {limit}"] if n > limit else []


def broken_links(page: Path, root: Path) -> list[str]:
    out = []
    for start, block in blocks(page.read_text()):
        plain = without_code(block)
        for m in LINK.finditer(plain):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            where = f"{page.relative_to(root)}:{start + plain.count(chr(10), 0, m.start())}"
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                out.append(f"{where}: link to {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                out.append(f"{where}: link to {target}: {dest.name} has no heading #{anchor}")
    return out


def defines(path: Path, names: list[str]) -> bool:
    """Whether the module at ``path`` defines ``names[0]`` at top level (and, for a class, the
    method ``names[1]``)."""
    body = tree(path).body
    for name in names:
        found = [
            n
            for n in body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.name == name
        ]
        if not found:
            return False
        body = getattr(found[0], "body", [])
    return True


@functools.cache
def defined_tests(root: Path) -> set[str]:
    """The names of every test function and method under ``root/tests``."""
    return {
        n.name
        for p in (root / "tests").rglob("*.py")
        for n in ast.walk(tree(p))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")
    }


def bad_citations(page: Path, root: Path) -> list[str]:
    out = []
    known = defined_tests(root)
    for line, span in code_spans(page.read_text()):
        where = f"{page.relative_to(root)}:{line}"
        if span.startswith("tests/") and "<" not in span:
            if not CITATION.fullmatch(span):
                out.append(f"{where}: `{span}` is not tests/<path>.py[::<test>]")
                continue
            path, *names = span.split("::")
            if not (root / path).exists():
                out.append(f"{where}: `{span}`: no such file or folder {path}")
            elif names and not defines(root / path, names):
                out.append(f"{where}: `{span}`: {path} defines no {'::'.join(names)}")
        elif BARE_FILE.fullmatch(span) or (BARE_NAME.fullmatch(span) and span.rstrip("*") in known):
            out.append(f"{where}: `{span}` cites a test without its tests/ path")
    return out


@functools.cache
def moved_modules(root: Path) -> set[str]:
    """The old module paths that ``tokunify/core/compat.py`` keeps importable (``MOVED``'s keys)."""
    compat = root / "tokunify" / "core" / "compat.py"
    if not compat.exists():
        return set()
    for node in tree(compat).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "MOVED" and node.value is not None:
            return set(ast.literal_eval(node.value))
    return set()


def module_file(root: Path, parts: list[str]) -> Path | None:
    base = root.joinpath(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def resolves(root: Path, dotted: str, depth: int = 0) -> bool:
    """Whether ``tokunify.a.b.c`` is a module, or a name a module defines or imports (followed
    through ``from X import name``), or a class attribute of one."""
    parts = dotted.removesuffix("()").split(".")
    moved = moved_modules(root)
    if any(".".join(parts[:k]) in moved for k in range(2, len(parts) + 1)):
        return True
    k = max((k for k in range(1, len(parts) + 1) if module_file(root, parts[:k])), default=0)
    if k == 0:
        return False
    if k == len(parts):
        return True
    path = module_file(root, parts[:k])
    assert path is not None
    name, rest = parts[k], parts[k + 1 :]
    for node in tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return not rest or (isinstance(node, ast.ClassDef) and defines(path, [name, *rest]))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return not rest
        elif isinstance(node, ast.ImportFrom) and node.module and depth < 8:
            for a in node.names:
                if (a.asname or a.name) == name:
                    return resolves(root, ".".join([node.module, a.name, *rest]), depth + 1)
    return False


def missing_paths(page: Path, root: Path) -> list[str]:
    out = []
    text = page.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{page.relative_to(root)}:{n}"
        for m in REPO_PATH.finditer(line):
            if not (root / m.group(0)).exists():
                out.append(f"{where}: {m.group(0)}: no such file or folder")
        d = DIRECTIVE.match(line)
        if d and not resolves(root, d.group(1)):
            out.append(f"{where}: ::: {d.group(1)}: no such module or name")
    for line, span in code_spans(text):
        if DOTTED.fullmatch(span) and not resolves(root, span):
            out.append(f"{page.relative_to(root)}:{line}: `{span}`: no such module or name")
    return out


def missing_make_targets(page: Path, root: Path) -> list[str]:
    makefile = root / "Makefile"
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile.read_text(), re.M))
    text = page.read_text()
    code = [span for _, span in code_spans(text)] + list(fenced_lines(text))
    named = {t for c in code for t in MAKE.findall(c)}
    return [
        f"{page.relative_to(root)}: `make {t}`: no such Makefile target"
        for t in sorted(named - targets)
    ]


def nav_pages(nav: object) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


def nav_problems(root: Path) -> list[str]:
    config = yaml.safe_load((root / "mkdocs.yml").read_text())
    docs = root / config.get("docs_dir", "docs")
    listed = {p for p in nav_pages(config.get("nav", [])) if not re.match(r"^[a-z]+://", p)}
    pages = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    return [f"docs/{p}: not in mkdocs.yml's nav" for p in sorted(pages - listed)] + [
        f"mkdocs.yml: nav entry {p}: no such page" for p in sorted(listed - pages)
    ]


def page_problems(page: Path, root: Path) -> list[str]:
    return (
        broken_links(page, root)
        + bad_citations(page, root)
        + missing_paths(page, root)
        + missing_make_targets(page, root)
    )


# ---- the tests --------------------------------------------------------------------------------
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_a_front_door():
    assert long_readme(ROOT / "README.md") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_citations_and_paths_resolve(page):
    problems = page_problems(page, ROOT)
    assert not problems, "\n".join(problems)


def test_every_page_is_in_the_nav():
    assert nav_problems(ROOT) == []


def test_the_docs_cite_tests():
    """The pages cite tests in the one checked form, so the citation check has work to do."""
    cited = [s for p in PAGES for _, s in code_spans(p.read_text()) if "::test_" in s]
    assert len(cited) > 100


def test_the_checks_catch_planted_breaches(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "def test_one():\n    pass\n\nclass TestB:\n    def test_two(self):\n        pass\n"
    )
    (tmp_path / "tokunify" / "core").mkdir(parents=True)
    (tmp_path / "tokunify" / "__init__.py").write_text("from tokunify.core.vocab import Vocab\n")
    (tmp_path / "tokunify" / "core" / "__init__.py").write_text("")
    (tmp_path / "tokunify" / "core" / "vocab.py").write_text("class Vocab:\n    def ids(self): ...\n")  # fmt: skip
    (tmp_path / "tokunify" / "core" / "compat.py").write_text('MOVED = {"tokunify.vocab": "tokunify.core.vocab"}\n')  # fmt: skip
    (tmp_path / "Makefile").write_text("test:\n\tpytest\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A page\n\n## Some `code` heading\n\n::: tokunify.core.nothing\n")
    (docs / "b.md").write_text("# Left out of the nav\n")
    (tmp_path / "mkdocs.yml").write_text("docs_dir: docs\nnav:\n  - a.md\n  - gone.md\n")
    good = [
        "[ok](docs/a.md#some-code-heading) [web](https://example.org/x.md)",
        "`tests/test_a.py::test_one`, `tests/test_a.py::TestB::test_two`, `tests/`",
        "`tokunify/core/vocab.py`, `tokunify.core.vocab.Vocab.ids`, `tokunify.Vocab`, `tokunify.vocab`",
        "`make test`; a split name is no test: `test_seen`; make sure is no target",
    ]
    bad = [
        "[broken](docs/missing.md) [no anchor](docs/a.md#nowhere)",
        "`tests/test_a.py::test_three`, `tests/test_a.py::TestB::test_one`, `tests/nope.py`",
        "`test_one`, `test_a.py::test_one`, a citation that wraps: `tests/test_a.py::\ntest_one`",
        "`tokunify/core/gone.py`, `tokunify.core.vocab.Gone`, `tokunify.formats`, `make demo`",
    ]
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(good) + "\n")
    assert page_problems(readme, tmp_path) == [], page_problems(readme, tmp_path)
    assert long_readme(readme) == []
    readme.write_text("\n".join([*good, *bad]) + "\n```\n[in a fence](nowhere.md)\n```\n")
    problems = page_problems(readme, tmp_path)
    expected = [
        "link to docs/missing.md: no such file",
        "link to docs/a.md#nowhere: a.md has no heading #nowhere",
        "`tests/test_a.py::test_three`: tests/test_a.py defines no test_three",
        "`tests/test_a.py::TestB::test_one`: tests/test_a.py defines no TestB::test_one",
        "`tests/nope.py`: no such file or folder tests/nope.py",
        "`test_one` cites a test without its tests/ path",
        "`test_a.py::test_one` cites a test without its tests/ path",
        "`tests/test_a.py:: test_one` is not tests/<path>.py[::<test>]",
        "tokunify/core/gone.py: no such file or folder",
        "`tokunify.core.vocab.Gone`: no such module or name",
        "`tokunify.formats`: no such module or name",
        "`make demo`: no such Makefile target",
    ]
    assert len(problems) == len(expected), problems
    for want in expected:
        assert any(want in p for p in problems), (want, problems)
    assert page_problems(docs / "a.md", tmp_path) == [
        "docs/a.md:5: ::: tokunify.core.nothing: no such module or name"
    ]
    readme.write_text("line\n" * (MAX_README_LINES + 1))
    assert long_readme(readme) == [f"README.md: 251 lines, more than {MAX_README_LINES}"]
    assert nav_problems(tmp_path) == [
        "docs/b.md: not in mkdocs.yml's nav",
        "mkdocs.yml: nav entry gone.md: no such page",
    ]
