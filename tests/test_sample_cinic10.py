"""Stage sample_cinic10 on tiny archives in the CINIC-10 layout."""
import csv
import json
import re
import tarfile

import numpy as np
import pytest

from builders import add_bytes, cinic10, png_bytes
from conftest import sha256
from core import StageError
from core.data import CIFAR10_CLASSES, cinic_origin, split_stratified
from core.io import load_npz
from stages import sample_cinic10


def run(params, archive, out, **cinic):
    params["cinic10"].update(urls=[str(archive)], checksum=None, size_bytes=None, **cinic)
    sample_cinic10.main(params, out_dir=out)
    sample = load_npz(out / "sample.npz")
    with open(out / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    return sample, manifest


def test_sample_is_balanced_from_test_split_and_pixels_match(params, tmp_path):
    written = cinic10(tmp_path / "cinic.tar.gz", imagenet=6, cifar=3)
    sample, manifest = run(params, tmp_path / "cinic.tar.gz", tmp_path / "out", per_class=4, origin="imagenet")
    assert sample["x"].shape == (40, 32, 32, 3) and sample["x"].dtype == np.uint8
    assert np.bincount(sample["y"], minlength=10).tolist() == [4] * 10
    assert set(sample["origin"]) == {"imagenet"}
    assert len(manifest) == 40
    for row, x, y in zip(manifest, sample["x"], sample["y"]):
        assert row["member"].startswith(f"test/{row['class']}/n")  # the test split only, ImageNet names only
        assert CIFAR10_CLASSES[y] == row["class"]
        np.testing.assert_array_equal(x, written[row["member"]])
    assert len({row["member"] for row in manifest}) == 40
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["origin_counts"] == {"imagenet": 40} and info["counts"]["cat"] == 4


def test_sampling_is_seeded_and_independent_of_member_order(params, tmp_path):
    cinic10(tmp_path / "a.tar.gz", imagenet=8, cifar=0, splits=("test",))
    cinic10(tmp_path / "b.tar.gz", imagenet=8, cifar=0, splits=("test",), order_seed=3)
    _, first = run(params, tmp_path / "a.tar.gz", tmp_path / "a", per_class=3)
    _, again = run(params, tmp_path / "a.tar.gz", tmp_path / "a2", per_class=3)
    _, shuffled = run(params, tmp_path / "b.tar.gz", tmp_path / "b", per_class=3)
    params["data_seed"] += 1
    _, reseeded = run(params, tmp_path / "a.tar.gz", tmp_path / "c", per_class=3)
    members = [[r["member"] for r in m] for m in (first, again, shuffled, reseeded)]
    assert members[0] == members[1] == members[2]
    assert members[0] != members[3]


@pytest.mark.parametrize("origin, per_class, expected", [
    ("cifar10", 2, {"cifar10": 20}),
    ("all", 3, {"cifar10": 20, "imagenet": 10}),  # 1 ImageNet + 2 CIFAR-10 images per class exist
])
def test_origin_param_selects_sources(params, tmp_path, origin, per_class, expected):
    cinic10(tmp_path / "c.tar.gz", imagenet=1, cifar=2, splits=("test",))
    sample, manifest = run(params, tmp_path / "c.tar.gz", tmp_path / "out", per_class=per_class, origin=origin)
    values, counts = np.unique(sample["origin"], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == expected
    assert all(cinic_origin(r["member"].split("/")[-1]) == r["origin"] for r in manifest)


def test_per_class_larger_than_available_names_the_key(params, tmp_path):
    cinic10(tmp_path / "c.tar.gz", imagenet=2, cifar=5, splits=("test",))
    with pytest.raises(StageError, match=r"`cinic10.per_class` is 3 .* origin imagenet for airplane: 2"):
        run(params, tmp_path / "c.tar.gz", tmp_path / "out", per_class=3)
    assert not (tmp_path / "out").exists()


def test_wrong_layout_is_reported(params, tmp_path):
    cinic10(tmp_path / "c.tar.gz", splits=("train", "valid"))
    with pytest.raises(StageError, match=r"no test/<class>/<image> members.*splits found: train, valid"):
        run(params, tmp_path / "c.tar.gz", tmp_path / "out", per_class=1)
    cinic10(tmp_path / "d.tar.gz", splits=("test",), classes=["airplane", "owl"])
    with pytest.raises(StageError, match=r"class 'owl' is not a CIFAR-10 class"):
        run(params, tmp_path / "d.tar.gz", tmp_path / "out", per_class=1)
    assert not (tmp_path / "out").exists()


def test_download_from_server(params, server, tmp_path):
    cinic10(tmp_path / "c.tar.gz", imagenet=2, cifar=1, splits=("test",))
    data = (tmp_path / "c.tar.gz").read_bytes()
    params["cinic10"].update(urls=[server.url("/missing/CINIC-10.tar.gz"), server.serve("/CINIC-10.tar.gz", data)],
                             checksum=sha256(data), size_bytes=len(data), per_class=2)
    sample_cinic10.main(params, out_dir=tmp_path / "out")
    assert len(load_npz(tmp_path / "out" / "sample.npz")["y"]) == 20


def test_source_none_writes_an_empty_sample_that_says_so(params, tmp_path):
    params["cinic10"]["urls"] = "none"
    sample_cinic10.main(params, out_dir=tmp_path / "out")
    sample = load_npz(tmp_path / "out" / "sample.npz")
    assert sample["x"].shape == (0, 32, 32, 3) and len(sample["y"]) == len(sample["origin"]) == 0
    assert json.loads((tmp_path / "out" / "info.json").read_text())["available"] is False


def test_origin_patterns():
    assert cinic_origin("cifar10-train-123.png") == "cifar10"
    assert cinic_origin("n02691156_1234.png") == "imagenet"
    assert cinic_origin("0001.png") is None


def test_split_stratified_is_exact_per_class():
    y = np.repeat(np.arange(3), [10, 20, 30])
    keep, held = split_stratified(y, 0.1, seed=0)
    assert np.bincount(y[held]).tolist() == [1, 2, 3]
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(60))


@pytest.mark.parametrize("names, said", [
    (["test/cat/n02000000_0.png", "backup/old/test/cat/n02000001_1.png"], "deeper than one top-level folder"),
    (["a/test/cat/n02000000_0.png", "b/test/cat/n02000001_1.png"], r"below a/ as well; one test split per archive"),
    (["test/cat/n02000000_0.png", "CINIC-10/test/cat/n02000001_1.png"], r"below the top/ as well"),
], ids=["deeper", "two-folders", "top-and-folder"])
def test_test_split_is_at_the_top_or_under_one_folder_only(params, tmp_path, names, said):
    """Only test/<class>/<image>, optionally under one folder, is the shift set: a second copy of the split
    elsewhere in the archive is refused with its path, never sampled from."""
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tar:
        for name in names:
            add_bytes(tar, name, png_bytes(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(StageError, match=rf"{re.escape(names[1])}: a test/<class>/<image> member {said}"):
        run(params, tmp_path / "c.tar.gz", tmp_path / "out", per_class=1)
    assert not (tmp_path / "out").exists()


def test_test_split_under_one_top_level_folder_is_read(params, tmp_path):
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tar:
        for k, cls in enumerate(CIFAR10_CLASSES):
            add_bytes(tar, f"CINIC-10/test/{cls}/n{2000000 + k:08d}_{k}.png", png_bytes(np.zeros((32, 32, 3), np.uint8)))
    run(params, tmp_path / "c.tar.gz", tmp_path / "out", per_class=1)
    assert len(load_npz(tmp_path / "out" / "sample.npz")["y"]) == 10
