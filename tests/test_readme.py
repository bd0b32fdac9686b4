"""README's and docs/' tables name tests, and their text keeps to what users have: each named test exists, no
commit hash or issue number (history lives in git), no path outside the repository, README at most 250 lines."""
import ast
import re

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Hex strings that are checksums (the archives' pinned sha256 and md5, shortened as "c4a38c50…bca1dd").
CHECKSUM = re.compile(r"\b(sha256|md5)[: ]|…")


def test_every_test_named_in_the_docs_exists():
    named = {m for path in DOCS for m in re.findall(r"`(test_\w+\.py)::(test_\w+)", path.read_text())}
    assert len(named) > 60
    defined = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        defined[path.name] = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
    missing = sorted(f"{f}::{t}" for f, t in named if t not in defined.get(f, set()))
    assert missing == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_hold_no_commit_hash_issue_number_or_outside_path(path):
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        hexes = [h for h in re.findall(r"\b[0-9a-f]{7,12}\b", line) if re.search(r"[a-f]", h) and re.search(r"\d", h)]
        if hexes and not CHECKSUM.search(line):
            found.append((n, "hash", hexes))
        if re.search(r"\b(issue|Issue|#)\s?\d+\b", line) and not line.lstrip().startswith("#"):
            found.append((n, "issue", line.strip()))
        if re.search(r"\.\./shared|MEASURING\.md|DESIGN\.md", line):
            found.append((n, "outside the repository", line.strip()))
    assert found == []


def test_readme_is_for_a_newcomer():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", "\n".join(lines)))
    assert linked == {f"docs/{p.name}" for p in DOCS[1:]}  # every page is reachable from README, none is missing


def test_links_between_pages_resolve():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not target.startswith(("http://", "https://")) and not (path.parent / target).exists():
                broken.append((path.name, target))
    assert broken == []
