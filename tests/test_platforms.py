"""Machines unlike the 2-core Linux box the pipeline is developed on: containers with a CPU quota, macOS,
Windows, a CPU that makes TensorFlow abort at start-up."""
import pytest

from core import hardware


def cgroup(root, files):
    """A cgroup file system under `root` with these files ({relative path: content})."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, cores", [
    ({"cpu.max": "200000 100000\n"}, 2.0),                      # cgroup v2, docker --cpus 2
    ({"cpu.max": "150000 100000\n"}, 1.5),                      # --cpus 1.5
    ({"cpu.max": "max 100000\n"}, None),                        # v2 without a limit
    ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4.0),  # cgroup v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1 without a limit
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),                                                 # no cgroups: macOS, Windows
])
def test_cpu_quota_is_read_from_cgroup_v2_and_v1(tmp_path, files, cores):
    assert hardware.cpu_quota(cgroup(tmp_path, files)) == cores


@pytest.mark.parametrize("affinity, quota, cores", [
    (64, 2.0, 2), (64, 1.5, 2), (64, 0.5, 1), (2, 8.0, 2), (4, None, 4), (None, None, 1), (0, 0.1, 1),
])
def test_usable_cores_are_the_affinity_within_the_quota_rounded_up(affinity, quota, cores):
    assert hardware.cores_allowed(affinity, quota) == cores


def test_a_one_core_quota_is_what_threads_and_the_conditions_count(tmp_path, monkeypatch):
    """This machine's affinity is 2 cores or more; a `--cpus 1` container limits it to 1."""
    from core import profiling
    monkeypatch.setattr(hardware, "CGROUP_ROOT", str(cgroup(tmp_path, {"cpu.max": "100000 100000\n"})))
    assert hardware.usable_cores() == 1
    assert hardware.plan([], hardware.usable_cores())["intra_op_threads"] == 1
    conditions = profiling.conditions()
    assert conditions["usable_cores"] == 1 and conditions["cpu_quota_cores"] == 1.0


@pytest.mark.parametrize("workers, cores", [("1", 4), ("2", 2), ("3", 1), ("8", 1)])
def test_experiments_sharing_the_host_split_its_cores(tmp_path, monkeypatch, workers, cores):
    """make benchmark JOBS=N sets BENCHMARK_WORKERS=N: each experiment sizes its threads to its share of a
    4-core quota (never below 1), and the profile's conditions say how many shared the host."""
    from core import profiling
    monkeypatch.setattr(hardware, "CGROUP_ROOT", str(cgroup(tmp_path, {"cpu.max": "400000 100000\n"})))
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setenv(hardware.WORKERS_ENV, workers)
    assert hardware.usable_cores() == cores
    assert hardware.plan([], hardware.usable_cores())["intra_op_threads"] == cores
    conditions = profiling.conditions()
    assert (conditions["usable_cores"], conditions["queue_workers"]) == (cores, int(workers))


def test_a_bad_worker_count_is_one_line_naming_the_variable(monkeypatch):
    from core import StageError
    monkeypatch.setenv(hardware.WORKERS_ENV, "two")
    with pytest.raises(StageError, match="BENCHMARK_WORKERS='two': the number of experiments sharing this host"):
        hardware.usable_cores()


@pytest.mark.parametrize("platform, ru_maxrss", [("linux", 2048), ("darwin", 2048 * 1024)])
def test_peak_rss_is_read_in_each_systems_unit(platform, ru_maxrss):
    """getrusage reports kibibytes on Linux and bytes on macOS: both are 2 MiB here."""
    from core.profiling import maxrss_bytes
    assert maxrss_bytes(ru_maxrss, platform) == 2 * 1024 * 1024


# A stage as DVC would start it on Windows: no fcntl, no resource (POSIX-only modules), sys.platform "win32".
# Stage modules are imported first, as their own `python -m` runs would, so a module-level import of either
# fails here; the platform is set afterwards so that the libraries' own imports see this machine. psutil is
# imported before: its Linux backend uses resource, its Windows one does not.
WINDOWS_STAGE = """
import runpy, sys
import psutil
sys.modules["fcntl"] = sys.modules["resource"] = None
import stages.download_cifar10, stages.profile, stages.train
sys.platform = "win32"
runpy.run_module("stages.resolve_params", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow  # imports TensorFlow in a child process (~10 s on 2 cores)
def test_windows_is_refused_with_one_line_before_any_work(tmp_path):
    import os
    import subprocess
    import sys
    from conftest import ROOT
    out = subprocess.run([sys.executable, "-c", WINDOWS_STAGE], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "error: this system (win32) is not supported: the stages run on Linux and macOS (on Windows, run them in "
        "WSL 2)"], out.stderr
    assert list(tmp_path.iterdir()) == []  # refused before reading params.yaml or writing anything


def test_linux_and_macos_are_supported():
    from core.cli import unsupported_platform
    assert unsupported_platform("linux") is None and unsupported_platform("darwin") is None
    assert unsupported_platform("cygwin").startswith("error: this system (cygwin) is not supported")


# A python3 of another version, for `make setup PYTHON=<it>`: it runs `-c` code with sys.version_info and
# platform.python_version() set to that version, and records any other call (the venv it would create) and
# fails it.
FAKE_PYTHON = """#!{python}
import platform, sys
version = tuple(map(int, "{version}".split(".")))
if sys.argv[1] == "-c":
    sys.version_info = version + ("final", 0)
    platform.python_version = lambda: "{version}"
    exec(sys.argv[2])
else:
    with open("calls", "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
    sys.exit(1)
"""


def make_setup(tmp_path, version):
    """`make setup` in a copy of the Makefile with a fake Python `version`: (result, calls it got)."""
    import os
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    fake = tmp_path / "python-fake"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable, version=version))
    fake.chmod(0o755)
    result = subprocess.run(["make", "--no-print-directory", "setup", f"PYTHON={fake}"], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})
    calls = tmp_path / "calls"
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_make_setup_refuses_a_python_older_than_3_11_before_building_anything(tmp_path):
    result, calls = make_setup(tmp_path, "3.10.12")
    assert result.returncode != 0 and calls == [] and not (tmp_path / ".venv").exists()
    assert result.stderr.splitlines()[0] == (
        f"error: this project needs Python 3.11 or newer; {tmp_path / 'python-fake'} is Python 3.10.12 (run e.g. "
        "make setup PYTHON=python3.12)"), result.stderr


@pytest.mark.parametrize("version", ["3.11.0", "3.13.1"])
def test_make_setup_goes_on_to_the_venv_with_python_3_11_or_newer(tmp_path, version):
    result, calls = make_setup(tmp_path, version)
    assert calls == ["-m venv .venv"] and "error: this project needs" not in result.stderr
