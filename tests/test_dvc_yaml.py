"""dvc.yaml knows what each stage runs: a stage's deps list exactly the project
modules its script imports, directly or through core/ (its import closure), so
an edit to any of them makes DVC run the stage again."""
import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "stages")


def module_file(parts):
    """The file of module `a.b.c` (given as parts), or None if it is not a project module."""
    path = ROOT.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path):
    """Project files that importing `path` runs: every import in it, wherever it sits (the
    `__main__` guard's too), with each package's `__init__.py` on the way."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from core import io` imports core/io.py; `from core.io import write_json` only core/io.py
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in PACKAGES:
                found |= {f for i in range(1, len(parts) + 1) if (f := module_file(parts[:i]))}
    return found


def import_closure(module):
    """Files that `python -m <module>` runs: the module, its packages' __init__.py, and all they import."""
    parts = module.split(".")
    seen, todo = set(), [f for i in range(1, len(parts) + 1) if (f := module_file(parts[:i]))]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(imported_files(f))
    return seen


def test_import_closure_follows_packages_and_functions():
    assert ROOT / "core/__init__.py" in imported_files(ROOT / "stages/features.py")
    closure = {f.relative_to(ROOT).as_posix() for f in import_closure("stages.features")}
    assert {"stages/__init__.py", "stages/features.py", "core/models.py", "core/cli.py", "core/params.py",
            "core/pipeline.py"} <= closure  # cli: the __main__ guard; pipeline: through core/training.py


def test_each_stage_depends_on_every_module_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = stage["cmd"].split("python -m ", 1)[1].split()[0]
        needed = {f.relative_to(ROOT).as_posix() for f in import_closure(module)}
        declared = {d for d in stage["deps"] if isinstance(d, str) and d.endswith(".py")}
        assert declared == needed, (f"dvc.yaml stage {name}: missing {sorted(needed - declared)}, "
                                    f"not imported {sorted(declared - needed)}")


def test_each_stage_declares_exactly_the_params_it_reads():
    """dvc.yaml's params of a stage are core.reads.READS[stage]; a stage whose params depend on the model
    declares none and depends on the file resolve_params writes for it, and resolve_params reads every key
    any model's version of those stages reads."""
    from core.reads import READS, RESOLVED, params_path
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(READS)
    for name, stage in stages.items():
        if name in RESOLVED:
            assert "params" not in stage and params_path(name) in stage["deps"], name
            assert name in yaml.safe_dump(stages["resolve_params"]["outs"])
        else:
            assert stage["params"] == list(READS[name]), name
    resolver = READS["resolve_params"]
    read = {key for name in RESOLVED for keys in READS[name].values() for key in keys}
    assert all(any(key == r or key.startswith(r + ".") for r in resolver) for key in read), read
