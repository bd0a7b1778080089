"""The docs are true: every fenced ``sh``/``bash`` and ``python`` block of README.md and docs/*.md runs as written,
each in a fresh folder with this environment's ``bluelm-v`` and ``python`` first on PATH (the rule, and the marker
for a block that cannot run here, are in docs/design.md, "Examples in the docs are tested"). A bare expression in
a Python block followed by a comment that reads as a Python literal (``p.grid  # (2, 1)``) is checked against it.
No tracked file may cite a document that is not in the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"sh": "sh", "bash": "sh", "python": "python"}  # fence tag -> how the block runs
NOT_RUN = {"text", "json", "cpp"}  # synopses, layouts, outputs, file formats, C++ fragments
FENCE = re.compile(r"^```(\S*)\s*$")
SKIP = re.compile(r"^<!--\s*not run in tests:(.*?)-->\s*$")
CONTINUES = re.compile(r"^<!--\s*doc-test:\s*continues the block above\s*-->\s*$")
SLOW = re.compile(r"^<!--\s*doc-test:\s*slow\s*-->\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason given by a "not run in tests" marker
    continues: bool  # runs after the block above it in the same folder
    slow: bool = False  # takes more than a few seconds (pytest -m "not slow" leaves it out; make test runs it)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def parse_blocks(doc: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of one Markdown file, with the markers on the lines just above each (blank lines between
    the marker and the fence are allowed)."""
    lines = (doc.read_text() if text is None else text).split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{doc}:{i + 1}: a fenced block that is never closed")
        skip, continues, slow, j = None, False, False, i - 1
        while j >= 0 and (not lines[j].strip() or lines[j].lstrip().startswith("<!--")):
            s = SKIP.match(lines[j].strip())
            if s:
                skip = s.group(1).strip()
            continues |= bool(CONTINUES.match(lines[j].strip()))
            slow |= bool(SLOW.match(lines[j].strip()))
            j -= 1
        out.append(Block(doc, i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n", skip, continues, slow))
        i = end + 1
    return out


ALL = [b for d in DOCS for b in parse_blocks(d)]
RUNNABLE = [b for b in ALL if b.lang in RUN]


def chain(block: Block) -> list[Block]:
    """The block and the ones above it it continues, first to last."""
    blocks = [b for b in ALL if b.doc == block.doc]
    k = blocks.index(block)
    start = k
    while blocks[start].continues and start > 0:
        start -= 1
    return blocks[start:k + 1]


# Runs one Python block statement by statement; a bare expression whose comment reads as a literal must equal it
# (floats to the decimals the comment shows).
CHECKER = r'''
import ast, io, re, sys, tokenize
path = sys.argv[1]
src = open(path).read()
comments = {t.start[0]: t.string[1:].strip() for t in tokenize.generate_tokens(io.StringIO(src).readline)
            if t.type == tokenize.COMMENT}
NUM = re.compile(r"(?<![\w.])-?\d+(?:\.(\d+))?(?:[eE][-+]?\d+)?")

def leaves(x):
    if isinstance(x, (tuple, list)):
        return [y for v in x for y in leaves(v)]
    return [x]

def same(actual, expected, text):
    if isinstance(expected, (tuple, list)):
        try:
            actual = tuple(actual)
        except TypeError:
            return False
        flat_a, flat_e = leaves(actual), leaves(expected)
        if len(flat_a) != len(flat_e):
            return False
        decimals = [len(m.group(1) or "") for m in NUM.finditer(text)]
        numbers = [e for e in flat_e if isinstance(e, (int, float)) and not isinstance(e, bool)]
        if len(decimals) != len(numbers):
            decimals = [None] * len(numbers)
        k = 0
        for a, e in zip(flat_a, flat_e):
            if isinstance(e, (int, float)) and not isinstance(e, bool):
                if not close(a, e, decimals[k]):
                    return False
                k += 1
            elif a != e:
                return False
        return True
    if isinstance(expected, float):
        m = NUM.search(text)
        return close(actual, expected, len(m.group(1) or "") if m else None)
    return actual == expected

def close(a, e, decimals):
    if isinstance(e, int) and not isinstance(e, float):
        return a == e
    tol = 0.5 * 10.0 ** -decimals + 1e-12 if decimals is not None else 1e-9 * max(1.0, abs(e))
    return abs(float(a) - e) <= tol

ns = {"__name__": "__main__"}
for node in ast.parse(src, path).body:
    if isinstance(node, ast.Expr) and node.end_lineno in comments:
        text = comments[node.end_lineno]
        try:
            expected = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            expected = text = None
        if text is not None:
            actual = eval(compile(ast.Expression(node.value), path, "eval"), ns)
            if not same(actual, expected, text):
                sys.exit(f"{path}:{node.lineno}: {ast.get_source_segment(src, node)} gives {actual!r}, "
                         f"the comment says {text}")
            continue
    exec(compile(ast.Module([node], []), path, "exec"), ns)
'''


def _fixtures(folder: Path) -> None:
    """What a reader has at hand when following the docs: a photo, a phone-screen page, a question, a clone's
    eval/, benchmarks/ and examples/ folders."""
    from PIL import Image
    import numpy as np

    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([x * 255 // 639, y * 255 // 479, (x + y) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    page = np.full((2400, 1080, 3), 245, np.uint8)
    page[200:2200:60, 80:1000] = 20  # lines of "text"
    Image.fromarray(page).save(folder / "page.jpg", quality=90)
    (folder / "question.txt").write_text("What is the capital of France?\n")
    for name in ("eval", "benchmarks", "examples"):
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)


@pytest.fixture(scope="session")
def doc_env(tmp_path_factory) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # One package cache for the whole run: the GGUF is packaged once however many blocks name it.
    env["BLUELM_CACHE"] = str(tmp_path_factory.mktemp("bluelm-cache"))
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONPATH", None)
    return env


def run_block(block: Block, folder: Path, env: dict) -> subprocess.CompletedProcess:
    if RUN[block.lang] == "sh":
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    else:
        script = folder / f"block_{block.line}.py"
        script.write_text(block.code)
        argv = [sys.executable, "-c", CHECKER, str(script)]
    return subprocess.run(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def test_every_fenced_block_says_whether_it_runs():
    """An untagged fence would silently escape the test: each block is tagged sh/bash/python (run) or
    text/json/cpp (shown only)."""
    bad = [f"{b.id} ```{b.lang}" for b in ALL if b.lang not in RUN and b.lang not in NOT_RUN]
    assert not bad, "fenced blocks with no known tag (use sh, python, text, json or cpp):\n" + "\n".join(bad)


def test_markers_sit_on_runnable_blocks_and_give_a_reason():
    misplaced = [b.id for b in ALL if (b.skip is not None or b.continues or b.slow) and b.lang not in RUN]
    assert not misplaced, f"doc-test markers above blocks that never run: {misplaced}"
    no_reason = [b.id for b in ALL if b.skip is not None and len(b.skip) < 10]
    assert not no_reason, f"'not run in tests' with no reason: {no_reason}"
    assert not [b.id for b in ALL if b.continues and b.skip is None and any(c.skip for c in chain(b))], \
        "a block continues one that is not run"


# Folders of the blocks that ran in this session, so a block that continues one starts from its files instead of
# running it again.
_RAN: dict[str, Path] = {}


@pytest.mark.parametrize("block", [pytest.param(b, marks=[pytest.mark.slow] if b.slow else [], id=b.id)
                                   for b in RUNNABLE])
def test_doc_block_runs(block, tmp_path, doc_env):
    if block.skip is not None:
        pytest.skip(f"not run in tests: {block.skip}")  # -ra lists every such block with its reason
    todo = chain(block)
    done = [k for k, b in enumerate(todo[:-1]) if b.id in _RAN]
    if done:
        shutil.copytree(_RAN[todo[done[-1]].id], tmp_path, symlinks=True, dirs_exist_ok=True)
        todo = todo[done[-1] + 1:]
    else:
        _fixtures(tmp_path)
    for b in todo:
        r = run_block(b, tmp_path, doc_env)
        assert r.returncode == 0, (f"{b.id} ({b.lang}) failed with exit code {r.returncode}\n--- block ---\n"
                                   f"{b.code}--- stdout ---\n{r.stdout[-4000:]}\n--- stderr ---\n{r.stderr[-4000:]}")
    _RAN[block.id] = tmp_path


def test_the_checker_refuses_a_wrong_comment_and_accepts_a_right_one(tmp_path, doc_env):
    doc = tmp_path / "x.md"
    for comment, ok in (("(1.3, 3)", True), ("(1.31, 3)", True), ("(1.2, 3)", False), ("(1.3, 4)", False),
                        ("(1.3,)", False), ("not a literal", True)):
        block = parse_blocks(doc, f"```python\nx = (1.31, 3)\nx  # {comment}\n```\n")[0]
        assert (run_block(block, tmp_path, doc_env).returncode == 0) == ok, comment


def test_parse_reads_markers_through_blank_lines(tmp_path):
    text = ("a\n<!-- not run in tests: needs a phone -->\n\n```sh\nadb shell\n```\n"
            "<!-- doc-test: continues the block above -->\n<!-- doc-test: slow -->\n```python\nprint(1)\n```\n"
            "```text\nx\n```\n")
    a, b, c = parse_blocks(tmp_path / "x.md", text)
    assert (a.lang, a.skip, a.continues, a.slow, a.line) == ("sh", "needs a phone", False, False, 4)
    assert (b.lang, b.skip, b.continues, b.slow, b.code) == ("python", None, True, True, "print(1)\n")
    assert (c.lang, c.skip, c.continues) == ("text", None, False)


# Documents that users do not have: the project's private notes. Their facts are carried into docs/ with the
# public source (docs/sources.md).
OUTSIDE = re.compile(r"facts[ -]sheet|perf-anchors|eval-spec|dynamic-resolution-spec|bluelm-v-facts|"
                     r"reference-notes|(?:/work/|\.\./|(?<![\w/.-]))shared/|\bfacts (?:§|[A-E]\d)|\bspec(?:'s)? §",
                     re.IGNORECASE)


def test_the_citation_pattern_catches_outside_documents():
    for text in ("see ../shared/bluelm-v-facts.md", "(eval-spec §3)", "facts sheet A1", "the facts-sheet tag",
                 "source: perf-anchors", "shared/dynres-vectors.json", "/work/shared/style.md",
                 "(facts A1, [V])", "spec §5(a)", "the spec's §5"):
        assert OUTSIDE.search(text), text
    for text in ("--work-dir /nfs/eval-out", "a shared library", "docs/sources.md [P]"):
        assert not OUTSIDE.search(text), text


def test_no_tracked_file_cites_a_document_outside_the_repository():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        path = ROOT / name
        if name == "tests/test_docs.py" or not path.is_file() or path.suffix in {".png", ".jpg", ".webp", ".gguf",
                                                                                   ".bin", ".xlsx"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.split("\n"), 1):
            if OUTSIDE.search(line):
                hits.append(f"{name}:{n}: {line.strip()[:140]}")
    assert not hits, "citations of documents users do not have:\n" + "\n".join(hits)



LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_point_at_files_and_headings_that_exist():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and dest.suffix == ".md":
                headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
                if anchor not in headings:
                    broken.append(f"{doc.relative_to(ROOT)} -> {target} (no such heading)")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_named_python_objects_exist():
    """`bluelm_v.x.y` in the prose names a module or attribute that imports."""
    import importlib

    missing = []
    for doc in DOCS:
        for ref in sorted(set(re.findall(r"`(bluelm_v(?:\.\w+)+)(?![\w/])", doc.read_text()))):
            parts = ref.split(".")
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                for attr in parts[i:]:
                    obj = getattr(obj, attr, None)
                break
            if obj is None:
                missing.append(f"{doc.relative_to(ROOT)}: {ref}")
    assert not missing, "names that do not exist:\n" + "\n".join(missing)
