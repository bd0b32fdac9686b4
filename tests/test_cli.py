"""core.cli.run: what becomes one `error:` line and what keeps its traceback."""
import errno
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, SESSION_ENV

# A stage run as DVC runs it, with the file system refusing the final rename the
# way a read-only mount does (the tests run as root, for whom chmod is no barrier).
READ_ONLY_STAGE = textwrap.dedent("""
    import errno, os, runpy, sys
    real = os.replace
    def refuse(src, dst):
        raise OSError(errno.{err}, os.strerror(errno.{err}), str(dst))
    os.replace = refuse
    sys.argv = ["stages.{stage}"]
    runpy.run_module("stages.{stage}", run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("err", ["EROFS", "EACCES", "EPERM"])
def test_unwritable_output_location_is_one_line(tmp_path, params, err):
    import yaml
    from builders import cifar10_binary
    cifar10_binary(tmp_path / "c.tar.gz")
    params["cifar10"].update(urls=[str(tmp_path / "c.tar.gz")], checksum=None, size_bytes=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-c", READ_ONLY_STAGE.format(err=err, stage="download_cifar10")],
                            cwd=tmp_path, env={**SESSION_ENV, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data/cifar10: cannot write it ({os.strerror(getattr(errno, err))}); "), last
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [last]
    assert not (tmp_path / "data" / "cifar10").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # no temporary left behind


def test_a_bug_keeps_its_traceback(tmp_path):
    script = "from core.cli import run\nrun(lambda params: {}['no such key'])\n"
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**SESSION_ENV, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'no such key'" in result.stderr


def test_library_file_errors_name_the_file():
    from core.cli import report
    line = report(FileNotFoundError(errno.ENOENT, "No such file or directory", "data/cifar10/info.json"))
    assert line == ("error: data/cifar10/info.json: No such file or directory; missing: run the stage that writes it "
                    "(`dvc repro`), or check the path in params.yaml; the previous outputs are unchanged")
    assert report(IsADirectoryError(errno.EISDIR, "Is a directory", "models/model.keras")).startswith(
        "error: models/model.keras: Is a directory; that path is a directory where a file is expected")
    assert report(OSError(errno.EMFILE, "Too many open files")) == (
        "error: Too many open files; raise the limit on open files (`ulimit -n`); the previous outputs are unchanged")


# A stage that fails while a progress bar it holds is open. (A bar that is only a for loop's iterable closes
# itself as the exception leaves the loop; one held by a name lives on with the frame in the traceback.)
FAILS_MID_BAR = """
from tqdm import tqdm
from core import StageError
from core.cli import run
def main(params):
    bar = tqdm(total=10, desc="working", leave={leave}, mininterval=0)
    bar.update(3)
    raise StageError("image 3 is broken; fix it")
run(main)
"""


@pytest.mark.parametrize("leave", [True, False])
def test_the_error_line_is_the_last_line_even_from_inside_a_progress_bar(tmp_path, leave):
    """An open bar redraws itself when it is closed at exit, below the error: the user would be left with a
    progress bar as the last line. Bars are closed before the error is printed."""
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    result = subprocess.run([sys.executable, "-c", FAILS_MID_BAR.format(leave=leave)], cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert result.returncode == 1 and lines[-1] == "error: image 3 is broken; fix it", result.stderr
