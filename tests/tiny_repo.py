"""The project's pipeline in a temporary git + DVC repo on tiny data, for the end-to-end tests.

`readme_route` runs README's route once for the whole session (conftest's `readme_route` fixture): the
`dvc exp run` that stands in for `make run-offline`, then every command test_readme_commands.RUN gives, in
a user's shell. Several tests assert on what it printed and left; a test that runs more works on a copy
(`copy_repo`), whose DVC cache and run cache already hold both models' stages.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from conftest import ROOT, run_cmd
from core.params import load as load_params  # DVC's YAML 1.2 reading: 1e-05 is a float

# Run, as DVC runs them, with TensorFlow's log level unset: what a user's stages print by default.
USER_LEVEL = {"TF_CPP_MIN_LOG_LEVEL": None}


def dvc(repo, *args, check=True, env=None, timeout=None):
    return run_cmd([sys.executable, "-m", "dvc", *args], repo, check=check, env=env, timeout=timeout)


def make_project(repo):
    """A git + DVC repo at `repo` holding a copy of the project's pipeline."""
    repo.mkdir(parents=True)
    for name in ("core", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    run_cmd(["git", "init", "-q"], repo)
    run_cmd([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run_cmd([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")  # dvc.yaml's custom plot templates
    return repo


def copy_repo(repo, dest):
    """A copy of a project repo (git history, experiments, DVC cache and run cache) that a test may change.
    DVC's scratch directory is left behind: the copy makes its own."""
    shutil.copytree(repo, dest, symlinks=True, ignore=lambda d, names: ["tmp"] if d == str(repo / ".dvc") else [])
    return dest


def tiny_pipeline_params(project, data_dir, **top):
    """params.yaml of the temporary repo, committed: a tiny class-folder dataset (written to data_dir/images),
    one epoch, 32 px, no downloads, two corruptions of one image per class, the shortest profile params
    allow and no TFLite export (`-S profile.tflite=[fp32]` where a test checks one); `top` overrides
    top-level keys (model, weights, image_size)."""
    from builders import class_folders
    # 15 test images per class: CIFAR-10-C gives each of its 15 corruptions its own (corruptions.distinct).
    class_folders(data_dir / "images", classes=("cat", "dog", "ship"), per_class=(8, 15))
    params = load_params(project / "params.yaml")
    params.update({"weights": "none", "image_size": 32, **top})
    params["cifar10"].update(format="folders", urls=[str(data_dir / "images")], checksum=None, size_bytes=None,
                             val_fraction=0.25)
    params["cinic10"]["urls"] = "none"
    # Every model predicts each corrupted image at 5 severities: 450 images at 96 px took DenseNet121 ~40 s.
    params["corruptions"].update(per_class=1, names=["gaussian_noise", "pixelate"])  # 3 images each
    t = params["train"]
    t["batch_size"] = 8
    for phase in ("frozen", "fine_tune", "scratch"):
        t[phase]["epochs"] = 1
    t["scratch"]["precision"] = "float32"  # `auto` is bfloat16 on some CPUs only (tests/conftest.py's params)
    params["profile"].update(warmup_runs=1, latency_runs=20, batch_size=2, throughput_runs=3, tflite=[],
                             tflite_eval_images=10)  # the minimum of each (core.params.NUMBERS)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_cmd(["git", "add", "-A"], project)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], project)


def saved_model_accuracy(model_path, test_path):
    """The accuracy a saved model gives on a test split, computed here, apart from the evaluate stage."""
    import numpy as np

    from core.contracts import load_model
    from core.io import load_npz
    test = load_npz(test_path)
    model = load_model(model_path)
    return float(np.mean(model.predict(test["x"], verbose=0).argmax(axis=1) == test["y"]))


def readme_route(base):
    """README's route on tiny data in a repo under `base`: `dvc exp run` in the workspace (standing in for
    `make run-offline`: basecnn), the model, metrics and plots it left copied to base/after-first-run, then
    each command of test_readme_commands.RUN[1:] in a user's shell that sources the .venv first.
    Returns repo, first (the CompletedProcess of that run), after_first, and out ({command: CompletedProcess}).
    Nothing is asserted here: the tests do, each on its own claim."""
    from test_readme_commands import RUN, shell_env
    repo = make_project(base / "repo")
    if venv_missing():  # the commands run all the same, with this interpreter first on PATH
        shell, env = "", {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    else:
        (repo / ".venv").symlink_to(sys.prefix)  # the .venv `make setup` made, as in the user's clone
        shell, env = f"{RUN[0]}\n", shell_env()
    # (.venv is a symlink, which the project's `.venv/` pattern, meant for a directory, does not ignore)
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + ".venv\ndvc_plots/\n")
    shutil.copytree(ROOT / "compare", repo / "compare", ignore=shutil.ignore_patterns("__pycache__"))
    tiny_pipeline_params(repo, base)
    first = dvc(repo, "exp", "run", check=False, env=USER_LEVEL)
    after_first = base / "after-first-run"
    for name in ("models", "metrics", "plots"):
        if (repo / name).exists():
            shutil.copytree(repo / name, after_first / name)
    env = {k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = {command: subprocess.run(["bash", "-c", shell + command], cwd=repo, env=env, capture_output=True,
                                   text=True) for command in RUN[1:]}
    return SimpleNamespace(repo=repo, first=first, after_first=after_first, out=out)


def venv_missing():
    """Why README's `source .venv/bin/activate` cannot run here (not a venv), or None."""
    if not (Path(sys.prefix) / "bin/activate").exists():
        return "not running from a venv: README's `source .venv/bin/activate` has no .venv to point at"
    return None
