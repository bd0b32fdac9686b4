"""README's snippet that classifies one JPEG with models/model.keras, run exactly as written.

A tiny dataset of JPEGs in the class-folder layout (made here with Pillow, and
real CIFAR-10 ones from ../shared/data where that archive is, side by side in
the same folders) goes through the download, features and train stages once;
the snippet then runs in a fresh Python process that cannot import this project
(a model that needed our code to load or to preprocess would fail here), on a
test image of each kind. The class it prints must be the one the pipeline's own
prediction gives for that image as the download stage decoded it.
"""
import copy
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from core.data import CIFAR10_CLASSES
from core.io import load_npz
from core.params import load
from core.pipeline import predict_images
from stages import download_cifar10, features, train

ARCHIVE = ROOT.parent / "shared/data/cifar10-jpg.tar.gz"
MARK = "<!-- tested by tests/test_readme_snippet.py -->"

pytestmark = pytest.mark.slow  # runs download, features and train in this process (~15 s on 2 cores)


def readme_snippet():
    after = (ROOT / "README.md").read_text().split(MARK, 1)[1]
    return after.split("```python\n", 1)[1].split("\n```", 1)[0]


def made_jpegs(dest, per_split={"train": 5, "test": 2}):
    """Small JPEG files written by Pillow, train/<class>/*.jpg and test/<class>/*.jpg: a colour per class
    under seeded noise, so that the files are real JPEGs with content, not a decoder's corner case."""
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for k, cls in enumerate(CIFAR10_CLASSES):
            folder = dest / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([k * 25, 255 - k * 25, (k * 80) % 256])
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"pillow-{i:04d}.jpg", quality=90)  # not an archive name
    return dest


def real_jpegs(dest, per_split={"train": 5, "test": 2}):
    """The first few JPEGs of each class and split of the shared archive, in its own layout."""
    wanted = {(split, c): n for split, n in per_split.items() for c in CIFAR10_CLASSES}
    with tarfile.open(ARCHIVE) as tar:
        for member in tar:
            parts = member.name.split("/")
            key = tuple(parts[:2])
            if member.isfile() and wanted.get(key, 0) > 0:
                wanted[key] -= 1
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                if not any(wanted.values()):
                    break
    return dest


KINDS = {"pillow": made_jpegs, "shared-archive": real_jpegs}


def is_kind(path, kind):
    return path.name.startswith("pillow-") == (kind == "pillow")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A directory in which download, features and train ran on JPEGs of every kind at hand, side by side."""
    directory = tmp_path_factory.mktemp("snippet")
    for kind, jpegs in KINDS.items():
        if kind == "pillow" or ARCHIVE.exists():
            jpegs(directory / "images")
    params = copy.deepcopy(load(ROOT / "params.yaml"))
    params["fetch"].update(dir=str(directory / "downloads"), backoff_s=0, timeout_s=5)
    params["cifar10"].update(format="folders", urls=[str(directory / "images")], checksum=None, size_bytes=None,
                             val_fraction=0.2)
    params.update(model="basecnn", weights="none")
    params["train"].update(batch_size=10)
    params["train"]["scratch"].update(epochs=1, precision="float32")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        download_cifar10.main(params)
        features.main(params)
        train.main(params)
    return directory


@pytest.mark.parametrize("kind", [
    "pillow",
    pytest.param("shared-archive", marks=pytest.mark.skipif(not ARCHIVE.exists(), reason=f"{ARCHIVE} not here")),
])
def test_readme_snippet_classifies_a_jpeg(trained, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(trained)
    jpeg = sorted(p for p in (trained / "images/test/ship").iterdir() if is_kind(p, kind))[0]
    # The snippet's directory: the files it reads, under the names it uses.
    for name in ("models/model.keras", "data/cifar10/info.json"):
        (tmp_path / name).parent.mkdir(parents=True)
        shutil.copy(name, tmp_path / name)
    shutil.copy(jpeg, tmp_path / "image.jpg")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", readme_snippet()], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.strip().splitlines()[-1]

    test = load_npz("data/cifar10/test.npz")
    pixels = np.asarray(Image.open(jpeg).convert("RGB"))
    row = int(np.flatnonzero((test["x"] == pixels).all(axis=(1, 2, 3)))[0])  # the image as the stage decoded it
    probs = predict_images(keras.models.load_model("models/model.keras"), test["x"][row:row + 1], 1)[0]
    assert printed == f"{CIFAR10_CLASSES[probs.argmax()]} ({probs.max():.0%})"
