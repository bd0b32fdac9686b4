"""The suite leaves no trace outside its temporary directories, whatever the machine's state."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SESSION_ENV

PROBE = '''
import json, os, sys
from dvc.repo import Repo
from conftest import run_cmd


def test_probe(project):
    import keras  # noqa: F401  (its import writes keras.json)
    run_cmd([sys.executable, "-m", "dvc", "status"], project)  # fills the repo's site cache
    # The user's ~/.gitconfig signs every commit (with a key this machine lacks): not the tests' git.
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--allow-empty", "-qm", "x"], project)
    with Repo(project) as repo:
        site_cache = repo.site_cache_dir
    # The session's directory goes at its end: what is in it is looked at here.
    (project.parent.parent / "seen.json").write_text(json.dumps({
        "env": dict(os.environ), "site_cache": site_cache, "site_cache_filled": os.listdir(site_cache) != [],
        "keras_json": os.path.isfile(os.path.join(os.environ.get("KERAS_HOME", "~/.keras"), "keras.json"))}))
'''


@pytest.mark.e2e
def test_a_session_writes_nothing_to_home_or_the_shared_dvc_site_cache(tmp_path, monkeypatch):
    """A pytest session started from a bare shell (HOME a directory holding only a ~/.gitconfig that signs every
    commit with a key this machine lacks, none of the session's variables
    set), that imports Keras and runs `dvc init` and `dvc status` in the `project` fixture's repo."""
    from dvc.dirs import site_cache_dir
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ENV}  # a user's shell has none
    env.update(HOME=str(home), PYTHONPATH=str(ROOT / "tests"),
               PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             "-c", str(ROOT / "pytest.ini"), "--rootdir", str(tmp_path),
                             "--basetemp", str(tmp_path / "base"), str(tmp_path / "test_probe.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(p.relative_to(home).as_posix() for p in home.rglob("*"))
    assert written == [".gitconfig"], written
    seen = json.loads((tmp_path / "base/seen.json").read_text())
    assert seen["env"]["DVC_NO_ANALYTICS"] == "1" and seen["keras_json"]
    assert not os.path.exists(seen["env"]["PYTEST_SESSION_STATE"])  # the session took its directory with it
    # The repo's site cache was in the session's directory, and not where DVC keeps it by default (the
    # repo's token, its directory's name there, does not depend on where).
    assert seen["site_cache_filled"] and seen["site_cache"].startswith(seen["env"]["DVC_SITE_CACHE_DIR"])
    monkeypatch.delenv("DVC_SITE_CACHE_DIR")
    default = os.path.join(site_cache_dir(), "repo", os.path.basename(seen["site_cache"]))
    assert not os.path.exists(default), default


def test_a_test_starts_with_tensorflow_configured_as_the_stages_leave_it(machine_plan):
    """Alone or after a stage ran in this process: op determinism, the plan's threads and dtype policy."""
    from core import hardware
    from core.runtime import keras, tf
    assert hardware.op_determinism()
    assert keras.mixed_precision.global_policy().name == hardware.global_policy(machine_plan)
    assert tf.config.threading.get_intra_op_parallelism_threads() == machine_plan["intra_op_threads"]
    assert tf.config.threading.get_inter_op_parallelism_threads() == machine_plan["inter_op_threads"]


@pytest.mark.parametrize("ci, derandomized", [({"CI": "true"}, True), ({}, False)])
def test_hypothesis_profile_is_derandomized_on_ci(ci, derandomized):
    probe = ("import conftest\nfrom hypothesis import settings\n"
             "print(settings.default.derandomize, settings.default.deadline)")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ci
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "tests", env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(derandomized), "None"]


HANGING = '''
import os
import pytest


@pytest.mark.timeout(0.5)
def test_hangs(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    open(tmp_path / "fifo").read()  # no writer: blocks for ever


def test_after_it(request):
    assert float(request.config.getini("timeout")) == 900
'''


def test_a_hanging_test_fails_alone(tmp_path):
    """pytest-timeout with pytest.ini's settings: a test blocked in a read fails, and the session goes on."""
    (tmp_path / "test_hanging.py").write_text(HANGING)
    # pytest-timeout the one plugin loaded: the others installed (Hypothesis', Hydra's) cost a second to import.
    # Its own --basetemp: by default a session takes a numbered directory under the user's pytest temporary
    # root and deletes the old ones there (other sessions', seconds of work on a busy machine).
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pytest_timeout", "-p", "no:cacheprovider",
                             "-c", str(ROOT / "pytest.ini"), "--rootdir", str(tmp_path),
                             "--basetemp", str(tmp_path / "base"), str(tmp_path / "test_hanging.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in result.stdout and "Timeout (>0.5s)" in result.stdout, result.stdout
