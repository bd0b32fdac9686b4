"""core.io's atomic writers when the output is a symlink (data kept on another
disk) and when two runs write one output at once; what "previous outputs
are kept" means under `dvc repro`; and outputs whose bytes depend on their
content only, as DVC's content hashes need."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from builders import cifar10_binary, tiny_model
from conftest import ROOT, run_cmd
from core.io import atomic_dir, load_npz, save_keras, save_npz, write_json
from stages import download_cifar10
from test_bad_inputs import cifar_params, listing, snapshot
from core.params import load as load_params  # DVC's YAML 1.2 reading: 1e-05 is a float


def write_dir(path, tag):
    with atomic_dir(path) as tmp:
        (tmp / "a.txt").write_text(tag)
        (tmp / "b.txt").write_text(tag)


@pytest.mark.parametrize("runs", [1, 2, 3])
@pytest.mark.parametrize("link_at", ["output", "parent", "both", "dangling-output"])
def test_symlinked_output_stays_a_symlink(tmp_path, link_at, runs):
    """data/cifar10 or data/ (or both) linked to another disk: every run writes there and the links stay."""
    disk = tmp_path / "other-disk"
    (disk / "data").mkdir(parents=True)
    (disk / "store").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    if link_at in ("parent", "both"):
        (work / "data").symlink_to(disk / "data", target_is_directory=True)
    else:
        (work / "data").mkdir()
    real = disk / "data" / "cifar10" if link_at == "parent" else disk / "store" / "cifar10"
    if link_at != "parent":
        if link_at != "dangling-output":
            real.mkdir()
        (work / "data" / "cifar10").symlink_to(real, target_is_directory=True)
    for i in range(runs):
        write_dir(work / "data" / "cifar10", f"run {i}")
        assert (work / "data" / "cifar10" / "a.txt").read_text() == f"run {i}"
    assert (real / "b.txt").read_text() == f"run {runs - 1}"  # written on the other disk
    if link_at != "parent":
        assert (work / "data" / "cifar10").is_symlink()
    assert listing(work / "data") == ["cifar10"]
    assert listing(disk / "data") == ([] if link_at in ("output", "dangling-output") else ["cifar10"])
    assert listing(disk / "store") == ([] if link_at == "parent" else ["cifar10"])


def test_symlinked_output_file_stays_a_symlink(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").symlink_to(tmp_path / "elsewhere" / "train.json")
    for i in range(2):
        write_json(tmp_path / "metrics" / "train.json", {"run": i})
    assert (tmp_path / "metrics" / "train.json").is_symlink()
    assert (tmp_path / "elsewhere" / "train.json").read_text() == '{\n  "run": 1\n}\n'
    assert listing(tmp_path / "metrics") == listing(tmp_path / "elsewhere") == ["train.json"]


def test_stage_output_on_another_disk_survives_every_run(params, tmp_path):
    cifar10_binary(tmp_path / "c.tar.gz")
    (tmp_path / "disk" / "cifar10").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    out = tmp_path / "data" / "cifar10"
    out.symlink_to(tmp_path / "disk" / "cifar10", target_is_directory=True)
    cifar_params(params, tmp_path / "c.tar.gz", val_fraction=0.2)
    for seed in (1, 2, 3):
        download_cifar10.main({**params, "data_seed": seed}, out_dir=out)
        assert out.is_symlink() and sorted(p.name for p in out.iterdir()) == ["info.json", "test.npz", "train.npz",
                                                                                "val.npz"]
    assert listing(tmp_path / "data") == listing(tmp_path / "disk") == ["cifar10"]


CONCURRENT_WRITER = textwrap.dedent("""
    import sys
    from core.io import atomic_dir
    for i in range(int(sys.argv[2])):
        with atomic_dir(sys.argv[1]) as tmp:
            for name in "abcde":
                (tmp / name).write_text(f"{sys.argv[3]} {i}")
""")


def test_concurrent_runs_of_one_output_take_turns(tmp_path):
    out = tmp_path / "data" / "cifar10"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(out), "25", f"writer{w}"],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True) for w in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    contents = {p.read_text() for p in out.iterdir()}
    assert len(contents) == 1 and sorted(p.name for p in out.iterdir()) == list("abcde")  # one complete output
    assert listing(out.parent) == ["cifar10"]


@pytest.mark.e2e
def test_dvc_repro_removes_outputs_first_and_dvc_checkout_restores_them(project, tmp_path):
    """README: under `dvc repro`, DVC deletes a stage's outputs before running it, so a failed run leaves none;
    the previous ones are in DVC's cache and `dvc checkout` brings them back."""
    cifar10_binary(tmp_path / "c.tar.gz")
    params = load_params(project / "params.yaml")
    cifar_params(params, tmp_path / "c.tar.gz", val_fraction=0.2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    run_cmd([*dvc, "repro", "download_cifar10"], project)
    before = snapshot(project / "data" / "cifar10")
    run_cmd(["git", "add", "-A"], project)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], project)

    (tmp_path / "c.tar.gz").write_bytes(b"not an archive")  # the next run fails
    params["data_seed"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run_cmd([*dvc, "repro", "download_cifar10"], project, check=False)
    assert failed.returncode != 0 and "error: " in failed.stderr
    assert not (project / "data" / "cifar10").exists()  # DVC removed it before running the stage

    run_cmd(["git", "checkout", "params.yaml"], project)
    run_cmd([*dvc, "checkout", "download_cifar10"], project)
    assert snapshot(project / "data" / "cifar10") == before


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    """Files and directories written atomically get the modes open() and mkdir() would give them."""
    old = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "out") as tmp:
            write_json(tmp / "inner.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "out/inner.json").stat().st_mode & 0o777 == 0o666 & ~umask


# Byte-identical reruns: DVC caches an output by its content hash, so a stage rerun with the same inputs must
# write the same bytes, or every rerun is a new version in the cache and on the remote.

def npz_arrays():
    return {"x": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), "y": np.array([3, 1], np.int64),
            "index": np.array([0.5, -2.0], ">f8"), "empty": np.zeros((0, 3), np.float32)}


def past_the_next_even_second(after):
    """Sleep until the wall clock has passed the even second that follows `after` (a time.time()): zip headers
    hold the time to 2 s, Keras' date_saved to 1 s, so anything saved by `after` and anything saved once this
    returns differ if they hold the time."""
    time.sleep(max(0.0, after - after % 2 + 2.01 - time.time()))


def test_npz_bytes_depend_on_the_arrays_only(tmp_path, monkeypatch):
    arrays = npz_arrays()
    save_npz(tmp_path / "first.npz", **arrays)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 400 * 86400)  # zipfile stamps time.localtime(time.time())
    save_npz(tmp_path / "later.npz", **arrays)
    assert (tmp_path / "first.npz").read_bytes() == (tmp_path / "later.npz").read_bytes()
    loaded = load_npz(tmp_path / "later.npz")
    assert list(loaded) == list(arrays)  # in argument order
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_npz_bytes_are_the_same_on_windows(tmp_path, monkeypatch):
    """zipfile records the system that wrote a member (0 on Windows, 3 elsewhere) in its header: np.savez's
    bytes, and so DVC's hashes, differ between a team's Windows and Linux machines."""
    save_npz(tmp_path / "linux.npz", **npz_arrays())
    monkeypatch.setattr(sys, "platform", "win32")  # what zipfile.ZipInfo reads
    save_npz(tmp_path / "windows.npz", **npz_arrays())
    monkeypatch.undo()
    assert (tmp_path / "linux.npz").read_bytes() == (tmp_path / "windows.npz").read_bytes()


def test_npz_bytes_are_those_np_savez_writes_on_linux(tmp_path):
    """.npz outputs written before save_npz pinned its headers keep their bytes, and DVC its cache of them."""
    with open(tmp_path / "np.npz", "wb") as f:
        np.savez(f, **npz_arrays())
    save_npz(tmp_path / "ours.npz", **npz_arrays())
    assert (tmp_path / "ours.npz").read_bytes() == (tmp_path / "np.npz").read_bytes()


def predictions(model):
    return model.predict(np.linspace(-2, 2, 5 * 4, dtype="float32").reshape(5, 4), verbose=0)


def test_keras_bytes_depend_on_the_model_only(tmp_path):
    """Keras stamps the time in a .keras file (metadata.json, the weights' zip header) and the memory address
    of shared objects (config.json): two equal models, saved at different times, must give equal bytes."""
    first, second = tiny_model(), tiny_model()  # equal, their shared dtype policies at two addresses
    save_keras(first, tmp_path / "first.keras")
    saved = time.time()
    from core.runtime import keras
    loaded = keras.models.load_model(tmp_path / "first.keras")  # in safe mode; while the clock moves on
    np.testing.assert_array_equal(predictions(loaded), predictions(first))
    past_the_next_even_second(after=saved)
    save_keras(second, tmp_path / "later.keras")
    assert (tmp_path / "first.keras").read_bytes() == (tmp_path / "later.keras").read_bytes()  # so later loads too


SAVE_TINY_MODEL = textwrap.dedent("""
    import sys
    import time
    from builders import tiny_model
    from core.io import save_keras
    model = tiny_model()
    saved_here = float(sys.argv[2])
    time.sleep(max(0.0, saved_here - saved_here % 2 + 2.01 - time.time()))  # past the even second after it
    save_keras(model, sys.argv[1])
""")


@pytest.mark.slow  # a fresh process imports TensorFlow (~5 s)
def test_keras_bytes_are_the_same_from_another_process(tmp_path):
    """What a rerun is: another process (its own memory addresses and string hash seed) at another time.
    This process saves first; the other saves past the next even second (its TensorFlow import takes
    longer than that, so it seldom waits)."""
    save_keras(tiny_model(), tmp_path / "here.keras")
    saved_here = time.time()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "PYTHONHASHSEED": "1"}
    other = subprocess.run([sys.executable, "-c", SAVE_TINY_MODEL, str(tmp_path / "other.keras"), repr(saved_here)],
                           cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "here.keras").read_bytes() == (tmp_path / "other.keras").read_bytes()
