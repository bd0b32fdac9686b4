"""README's shell commands, run as written.

Every command in a fenced ```bash block of README.md is either run here, in a
temporary git + DVC repo on tiny data, in a shell that has only what README
says to do first (`source .venv/bin/activate`), or listed in NOT_RUN with the
reason (downloads, full-size runs, the suite itself). A command added to
README without a place in one of the two lists fails the fast test below.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# Not run here: what each costs, and what runs instead.
NOT_RUN = {
    "make setup": "installs requirements.txt (2.7 GB): CI's .ci/run does, through make test; this test uses that .venv",
    "make run": "downloads CIFAR-10, CINIC-10 and ImageNet weights, which this machine cannot reach",
    "make test": "the suite this test is part of",
    "dvc exp run -S 'cifar10.urls=[/data/cifar-10-binary.tar.gz]' -S 'cinic10.urls=[/data/CINIC-10.tar.gz]'":
        "an example of a site's own archive paths; tests/test_download_cifar10.py and tests/test_sample_cinic10.py "
        "read local archives of both formats",
    "make run-offline": "the full CIFAR-10 (about 14 min); here `dvc exp run` on a tiny class-folder dataset stands "
                        "in for it, and tests/test_params.py applies its overrides to params.yaml",
    "make benchmark": "five backbones on the full data; tests/test_compare.py runs bench.benchmark on a stand-in "
                      "pipeline",
    'make benchmark BENCHMARK_ARGS="-S weights=none -S cinic10.urls=none"': "as make benchmark",
    """make benchmark BENCHMARK_ARGS="-S cifar10.format=folders -S 'cifar10.urls=[$PWD/../shared/data/cifar10-jpg.tar.gz]' -S cifar10.checksum=sha256:d34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965 -S cifar10.size_bytes=null -S cinic10.urls=none -S weights=none\"""":  # noqa: E501
        "as make benchmark",
}
# Run here, in this order, after one tiny `dvc exp run` that stands in for `make run-offline`.
RUN = [
    "source .venv/bin/activate",
    "dvc exp run -n basecnn -S model=basecnn",
    "dvc exp run -n mobilenetv2 -S model=mobilenetv2",
    "dvc exp show --drop '.*' --keep 'Experiment|model$|weights$|image_size$|val_accuracy$|test.accuracy|"
    "cinic10.accuracy|corruptions.mean_accuracy|latency_p90_ms|size_mb|peak_rss_mb|train_time_s'",
    "dvc exp diff basecnn mobilenetv2",
    "dvc metrics diff basecnn",
    "dvc plots diff basecnn mobilenetv2",
    "dvc repro corrupt_cifar10",
    "time python -m stages.corrupt_cifar10 && du -sh data/cifar10c",
    "python -m bench.compare",
]


# TensorFlow warns when most of a function's recent calls traced it: here, with 3 steps per epoch and a
# partial last batch, each fit and evaluate traces about as often as it runs. On real data (352 steps per
# epoch) it does not fire: the make run-offline log of the README's figures has no such line.
TINY_DATA_ONLY = re.compile(r"^WARNING:tensorflow:\d+ out of the last \d+ calls to .* triggered tf\.function retracing")


def readme_commands():
    """Each command line of README's ```bash blocks: continuations joined, a trailing `  # comment` dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = re.split(r"\s{2,}#", line)[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def test_every_readme_command_is_run_or_excused():
    commands = readme_commands()
    assert len(commands) >= 15
    unplaced = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert unplaced == [], "README commands this file neither runs nor excuses"
    assert [c for c in RUN if c not in commands] == []  # and nothing here that README no longer says


def shell_env(project):
    """A user's shell before `source .venv/bin/activate`: this interpreter's directory is not on PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() !=
                           Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": path, "COLUMNS": "200"}


@pytest.mark.e2e
def test_readme_commands_run_as_written(project, tmp_path):
    from test_pipeline_e2e import dvc, tiny_pipeline_params
    if not (Path(sys.prefix) / "bin/activate").exists():
        pytest.skip("not running from a venv: README's `source .venv/bin/activate` has no .venv to point at")
    (project / ".venv").symlink_to(sys.prefix)  # the .venv `make setup` made, as in the user's clone
    # (a symlink, which the project's `.venv/` pattern, meant for a directory, does not ignore)
    (project / ".gitignore").write_text((project / ".gitignore").read_text() + ".venv\ndvc_plots/\n")
    shutil.copytree(ROOT / "bench", project / "bench", ignore=shutil.ignore_patterns("__pycache__", "results"))
    tiny_pipeline_params(project, tmp_path)
    dvc(project, "exp", "run")  # stands in for make run-offline: an unnamed experiment in the workspace

    env = shell_env(project)
    assert subprocess.run(["bash", "-c", "command -v dvc"], cwd=project, env=env).returncode != 0  # not yet
    out = {}
    for command in RUN[1:]:
        result = subprocess.run(["bash", "-c", f"{RUN[0]}\n{command}"], cwd=project, env=env, capture_output=True,
                                text=True)
        out[command] = result.stdout
        said = result.stdout + result.stderr
        assert result.returncode == 0, (command, said)
        alarming = [line for line in re.split(r"[\r\n]", said) if re.search(r"error|warning", line, re.I)
                    and not TINY_DATA_ONLY.search(line)]
        assert alarming == [], f"{command}:\n{said}"

    # Naming the run just made trains nothing; the second backbone does.
    assert "Running stage" not in out[RUN[1]] and "Running stage 'train'" in out[RUN[2]]
    table = out[RUN[3]]
    assert max(map(len, table.splitlines())) <= 200 and "…" not in table, table  # every column in full
    for name in ("basecnn", "mobilenetv2", "val_accuracy", "test.accuracy", "latency_p90_ms", "size_mb"):
        assert name in table, name
    # Only what differs is listed: on tiny data the accuracies may tie, the sizes never do.
    assert re.search(r"params.yaml\s+model\s+basecnn\s+mobilenetv2", out[RUN[4]]) and "size_mb" in out[RUN[4]]
    assert re.search(r"basecnn\s+workspace\s+Change", out[RUN[5]]) and "size_mb" in out[RUN[5]]
    assert (project / "dvc_plots/index.html").exists()
    assert (project / "reports/comparison.md").exists()
