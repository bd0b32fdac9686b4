"""Stage download_cifar10 on tiny archives in the official binary layout and
on class-folder datasets; failures leave no output and keep the old one."""
import json
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import yaml
from PIL import Image

from builders import add_bytes, cifar10_binary, class_folders, png_bytes, tar_directory
from conftest import ROOT, SESSION_ENV, sha256
from core import StageError
from core.io import load_npz
from core.contracts import read_dataset_info
from stages import download_cifar10


def use_archive(params, server, archive, **extra):
    data = archive.read_bytes()
    params["cifar10"].update(urls=[server.serve("/cifar-10-binary.tar.gz", data)], checksum=sha256(data),
                             size_bytes=len(data), **extra)
    return params


def test_parsed_arrays_equal_the_pixels_in_the_archive(params, server, tmp_path):
    written = cifar10_binary(tmp_path / "c.tar.gz", per_batch=20, n_test=20)
    out = tmp_path / "out"
    download_cifar10.main(use_archive(params, server, tmp_path / "c.tar.gz", val_fraction=0.2), out_dir=out)

    test = load_npz(out / "test.npz")
    assert test["x"].dtype == np.uint8 and test["x"].shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(test["x"], written["test"][0])
    np.testing.assert_array_equal(test["y"], written["test"][1])
    # train + val is the official training set, split without loss or overlap.
    train, val = load_npz(out / "train.npz"), load_npz(out / "val.npz")
    x_all, y_all = written["train"]
    assert len(train["x"]) == 80 and len(val["x"]) == 20
    rows = {img.tobytes(): label for img, label in zip(x_all, y_all)}
    got = [(img.tobytes(), label) for split in (train, val) for img, label in zip(split["x"], split["y"])]
    assert sorted(got) == sorted(rows.items())
    # Stratified: each class gives the same share to val.
    assert np.bincount(val["y"], minlength=10).tolist() == [2] * 10
    info = json.loads((out / "info.json").read_text())
    assert info["classes"][:3] == ["airplane", "automobile", "bird"] and len(info["classes"]) == 10
    assert info["counts"]["val"]["cat"] == 2 and sum(info["counts"]["train"].values()) == 80


def test_train_fraction_keeps_a_stratified_share_of_train_and_all_of_val_and_test(params, server, tmp_path):
    cifar10_binary(tmp_path / "c.tar.gz", per_batch=20, n_test=20)
    use_archive(params, server, tmp_path / "c.tar.gz", val_fraction=0.2)
    download_cifar10.main(params, out_dir=tmp_path / "all")
    params["cifar10"]["train_fraction"] = 0.25
    download_cifar10.main(params, out_dir=tmp_path / "part")
    full, part = (load_npz(tmp_path / d / "train.npz") for d in ("all", "part"))
    assert np.bincount(part["y"], minlength=10).tolist() == [2] * 10  # 8 per class -> 2
    assert {i.tobytes() for i in part["x"]} <= {i.tobytes() for i in full["x"]}
    # The budget is recorded for train (train.max_repeats) and read back as the contract reads it.
    assert [read_dataset_info(tmp_path / d)["train_fraction"] for d in ("all", "part")] == [1.0, 0.25]
    for split in ("val", "test"):
        np.testing.assert_array_equal(load_npz(tmp_path / "all" / f"{split}.npz")["x"],
                                      load_npz(tmp_path / "part" / f"{split}.npz")["x"])


def test_val_split_follows_data_seed_and_not_the_training_seed(params, server, tmp_path):
    """Training seeds are compared on the same images: another `seed` writes byte-identical data; another
    `data_seed` holds out other images."""
    cifar10_binary(tmp_path / "c.tar.gz")
    use_archive(params, server, tmp_path / "c.tar.gz")
    download_cifar10.main(params, out_dir=tmp_path / "a")
    download_cifar10.main({**params, "seed": params["seed"] + 1}, out_dir=tmp_path / "b")
    download_cifar10.main({**params, "data_seed": params["data_seed"] + 1}, out_dir=tmp_path / "c")
    files = {d: {f.name: f.read_bytes() for f in (tmp_path / d).iterdir()} for d in "abc"}
    assert sorted(files["a"]) == ["info.json", "test.npz", "train.npz", "val.npz"]
    assert files["a"] == files["b"]
    assert not np.array_equal(*(load_npz(tmp_path / d / "val.npz")["x"] for d in "ac"))


@pytest.mark.parametrize("case, match", [
    ("missing member", r"missing cifar-10-batches-bin/data_batch_3.bin"),
    ("escaping member", r"'\.\./escape' points outside"),
    ("symlink member", r"'cifar-10-batches-bin/link' is a link"),
    ("truncated archive", r"cut short"),
    ("ragged records", r"not a whole number of 3073-byte records"),
])
def test_bad_archive_fails_cleanly_and_keeps_old_output(params, tmp_path, case, match):
    archive = tmp_path / "c.tar.gz"
    if case == "missing member":
        cifar10_binary(archive, skip={"cifar-10-batches-bin/data_batch_3.bin"})
    elif case == "escaping member":
        cifar10_binary(archive, extra=[("../escape", b"x")])
    elif case == "symlink member":
        cifar10_binary(archive)
        with tarfile.open(archive, "r:gz") as src, tarfile.open(tmp_path / "l.tar.gz", "w:gz") as dst:
            for m in src:
                dst.addfile(m, src.extractfile(m))
            add_bytes(dst, "cifar-10-batches-bin/link", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        archive = tmp_path / "l.tar.gz"
    elif case == "truncated archive":
        cifar10_binary(archive)
        archive.write_bytes(archive.read_bytes()[:-3000])
    elif case == "ragged records":
        cifar10_binary(archive, skip={"cifar-10-batches-bin/test_batch.bin"},
                       extra=[("cifar-10-batches-bin/test_batch.bin", b"\x00" * 3000)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.npz").write_text("previous output")
    params["cifar10"].update(urls=[str(archive)], checksum=None, size_bytes=None)
    with pytest.raises(StageError, match=match):
        download_cifar10.main(params, out_dir=out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    assert [p.name for p in out.iterdir()] == ["train.npz"]
    assert (out / "train.npz").read_text() == "previous output"
    assert not (tmp_path / "escape").exists()


def test_cli_reports_one_line_and_exits_nonzero(tmp_path, params):
    params["cifar10"].update(urls=[str(tmp_path / "missing.tar.gz")], checksum=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "stages.download_cifar10"], cwd=tmp_path, capture_output=True,
                            text=True, env={**SESSION_ENV, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: could not get a verified copy from any source: {tmp_path}/missing.tar.gz: no such file; check "
        "`cifar10.urls` and the network, or download the file yourself and set `cifar10.urls` to its local path"]
    assert not (tmp_path / "data").exists()


def test_bad_params_name_the_key(params, tmp_path):
    for key, value, match in [("format", "pickle", "`cifar10.format` is 'pickle'; allowed: binary, folders"),
                              ("val_fraction", 0.9, r"`cifar10.val_fraction` is 0.9; must be in \[0.01, 0.5\]"),
                              ("train_fraction", 0, r"`cifar10.train_fraction` is 0; must be in \[0.01, 1.0\]"),
                              ("urls", "none", "`cifar10.urls` is none; give")]:
        bad = {**params, "cifar10": {**params["cifar10"], key: value}}
        with pytest.raises(StageError, match=match):
            download_cifar10.main(bad, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Class-folder datasets: a user's own images through the same stage.

def folders_params(params, source):
    params["cifar10"].update(format="folders", urls=[str(source)], checksum=None, size_bytes=None, val_fraction=0.5)
    return params


@pytest.mark.parametrize("packed", [False, True])
def test_class_folders_from_directory_or_tar(params, tmp_path, packed):
    written = class_folders(tmp_path / "ds", classes=("frog", "cat", "dog"), per_class=(6, 2))
    source = tar_directory(tmp_path / "ds", tmp_path / "ds.tar.gz") if packed else tmp_path / "ds"
    download_cifar10.main(folders_params(params, source), out_dir=tmp_path / "out")
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["classes"] == ["cat", "dog", "frog"]
    assert info["counts"] == {"train": {"cat": 3, "dog": 3, "frog": 3}, "val": {"cat": 3, "dog": 3, "frog": 3},
                              "test": {"cat": 2, "dog": 2, "frog": 2}}
    test = load_npz(tmp_path / "out" / "test.npz")
    np.testing.assert_array_equal(test["x"], written["test"][0])
    np.testing.assert_array_equal(test["y"], written["test"][1])


def test_class_folders_under_a_top_level_directory(params, tmp_path):
    class_folders(tmp_path / "wrap" / "mydata")
    source = tar_directory(tmp_path / "wrap", tmp_path / "ds.tar.gz")
    download_cifar10.main(folders_params(params, source), out_dir=tmp_path / "out")
    assert json.loads((tmp_path / "out" / "info.json").read_text())["classes"] == ["cat", "dog", "frog"]


@pytest.mark.parametrize("case, match", [
    ("empty class", r"class folder train/owl has no images"),
    ("non-image file", r"train/cat/notes.txt: not an image file"),
    ("16-bit image", r"train/cat/deep.png: image mode is I;16, which has no single 8-bit RGB form"),
    ("rgba image", r"train/dog/alpha.png: image mode is RGBA with transparent pixels; flatten it"),
    ("corrupt image", r"train/cat/0000.png: not a readable image"),
    ("different sizes", r"train/frog/big.png: image is 40x40 but .* is 32x32; resize"),
    ("test class missing from train", r"test classes owl have no train/ folder"),
])
def test_bad_class_folder_dataset(params, tmp_path, case, match):
    root = tmp_path / "ds"
    class_folders(root)
    rng = np.random.default_rng(1)
    if case == "empty class":
        (root / "train" / "owl").mkdir()
    elif case == "non-image file":
        (root / "train" / "cat" / "notes.txt").write_text("hello")
    elif case == "16-bit image":
        Image.fromarray(rng.integers(0, 65536, (32, 32), np.uint16)).save(root / "train" / "cat" / "deep.png")
    elif case == "rgba image":
        (root / "train" / "dog" / "alpha.png").write_bytes(png_bytes(rng.integers(0, 256, (32, 32, 4), np.uint8)))
    elif case == "corrupt image":
        (root / "train" / "cat" / "0000.png").write_bytes(b"\x89PNG broken")
    elif case == "different sizes":
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(root / "train" / "frog" / "big.png")
    elif case == "test class missing from train":
        (root / "test" / "owl").mkdir()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / "test" / "owl" / "a.png")
    with pytest.raises(StageError, match=match):
        download_cifar10.main(folders_params(params, root), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Folder names as another file system may hand them over: bytes that are not UTF-8 (Python carries them as lone
# surrogates), and control characters that would split a CSV row or a figure title.
NOT_TEXT = [pytest.param(b"caf\xe9", "not valid UTF-8", id="latin-1"),
            pytest.param(b"\xff\xfe", "not valid UTF-8", id="bare-bytes"),
            pytest.param(b"tab\there", "holds a control character", id="tab"),
            pytest.param(b"two\nlines", "holds a control character", id="newline")]


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "tar"])
@pytest.mark.parametrize("raw, why", NOT_TEXT)
def test_class_names_that_are_not_text_stop_the_download_with_one_line(params, tmp_path, raw, why, packed):
    import os
    name = os.fsdecode(raw)
    class_folders(tmp_path / "ds", classes=("cat", name), per_class=(4, 1))
    source = tar_directory(tmp_path / "ds", tmp_path / "ds.tar.gz") if packed else tmp_path / "ds"
    with pytest.raises(StageError, match=f"class name {re.escape(repr(raw))} {why}; rename the folder"):
        download_cifar10.main(folders_params(params, source), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_binary_class_list_that_is_not_text_is_refused(params, tmp_path):
    cifar10_binary(tmp_path / "c.tar.gz", per_batch=4, n_test=4)
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    meta = next(n for n in members if n.endswith("batches.meta.txt"))
    members[meta] = members[meta].replace(b"cat", b"c\xe4t")
    with tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as tar:
        for n, data in members.items():
            add_bytes(tar, n, data)
    p = {**params, "cifar10": {**params["cifar10"], "urls": [str(tmp_path / "bad.tar.gz")], "checksum": None,
                               "size_bytes": None}}
    with pytest.raises(StageError, match=r"class name b'c\\xe4t' not valid UTF-8"):
        download_cifar10.main(p, out_dir=tmp_path / "out")


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "tar"])
def test_dataset_past_the_total_size_limit_is_refused_with_one_line(params, tmp_path, monkeypatch, packed):
    """Each file and image is bounded, and so is their sum: a dataset of many small images that would not fit in
    memory stops at the limit (lowered here to 40 images of 32x32) and writes nothing."""
    from core import archives
    monkeypatch.setattr(archives, "MAX_DATASET_BYTES", 40 * 32 * 32 * 3)
    class_folders(tmp_path / "ds", classes=("cat", "dog"), per_class=(20, 1))  # 42 images
    source = tar_directory(tmp_path / "ds", tmp_path / "ds.tar.gz") if packed else tmp_path / "ds"
    with pytest.raises(StageError, match=r"hold 125,952 bytes, over the limit of 122,880 for one dataset"):
        download_cifar10.main(folders_params(params, source), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(archives, "MAX_DATASET_BYTES", 42 * 32 * 32 * 3)  # at the limit: read
    download_cifar10.main(folders_params(params, source), out_dir=tmp_path / "out")


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "tar"])
def test_hidden_entries_are_skipped(params, tmp_path, packed):
    """What macOS and other tools leave beside the images (.DS_Store, ._<name> resource forks, __MACOSX/) is not
    data: skipped, not refused, and the dataset reads as without them."""
    class_folders(tmp_path / "ds", classes=("cat", "dog"), per_class=(4, 1))
    for extra in ("train/.DS_Store", "train/cat/._0000.png", "__MACOSX/train/cat/._0000.png", ".DS_Store"):
        (tmp_path / "ds" / extra).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / extra).write_bytes(b"\x00\x05\x16\x07 not an image")
    source = tar_directory(tmp_path / "ds", tmp_path / "ds.tar.gz") if packed else tmp_path / "ds"
    download_cifar10.main(folders_params(params, source), out_dir=tmp_path / "out")
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["classes"] == ["cat", "dog"] and info["counts"]["test"] == {"cat": 1, "dog": 1}


@pytest.mark.parametrize("n, ok", [(256, True), (257, False)])
def test_at_most_256_classes(params, tmp_path, n, ok):
    """Labels are stored as uint8: 256 classes are read, 257 are refused before anything is written."""
    import shutil
    class_folders(tmp_path / "ds", classes=[f"c{i:03d}" for i in range(256)], per_class=(2, 1), size=4)
    for extra in range(256, n):  # past uint8: copied folders (the builder stores its labels as uint8 too)
        for split in ("train", "test"):
            shutil.copytree(tmp_path / "ds" / split / "c000", tmp_path / "ds" / split / f"c{extra:03d}")
    p = folders_params(params, tmp_path / "ds")
    p["cifar10"]["val_fraction"] = 0.5
    if ok:
        download_cifar10.main(p, out_dir=tmp_path / "out")
        assert len(json.loads((tmp_path / "out" / "info.json").read_text())["classes"]) == 256
    else:
        with pytest.raises(StageError, match=r"257 class folders under train/; a classifier needs 2 to 256"):
            download_cifar10.main(p, out_dir=tmp_path / "out")
        assert not (tmp_path / "out").exists()
