"""README's tables name tests: each named test exists."""
import ast
import re

from conftest import ROOT


def test_every_test_named_in_the_readme_exists():
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)", text))
    assert len(named) > 60
    defined = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        defined[path.name] = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
    missing = sorted(f"{f}::{t}" for f, t in named if t not in defined.get(f, set()))
    assert missing == []
