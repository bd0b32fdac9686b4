"""README's snippet that classifies one JPEG with models/model.keras, run exactly as written.

A tiny dataset of JPEGs in the class-folder layout (made here with Pillow, and
real CIFAR-10 ones from ../shared/data where that archive is) goes through the
download, features and train stages; the snippet then runs in a fresh Python
process that cannot import this project (a model that needed our code to load
or to preprocess would fail here), on a test image of that archive. The class it
prints must be the one the pipeline's own prediction gives for that image as
the download stage decoded it.
"""
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

from core.data import CIFAR10_CLASSES
from core.io import load_npz
from core.pipeline import predict_images
from stages import download_cifar10, features, train

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared/data/cifar10-jpg.tar.gz"
MARK = "<!-- tested by tests/test_readme_snippet.py -->"

pytestmark = pytest.mark.slow  # runs download, features and train in this process (~30 s on 2 cores)


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
            folder.mkdir(parents=True)
            colour = np.array([k * 25, 255 - k * 25, (k * 80) % 256])
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
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


@pytest.mark.parametrize("jpegs", [
    made_jpegs,
    pytest.param(real_jpegs, marks=pytest.mark.skipif(not ARCHIVE.exists(), reason=f"{ARCHIVE} not here")),
], ids=["pillow", "shared-archive"])
def test_readme_snippet_classifies_a_jpeg(tmp_path, monkeypatch, params, jpegs):
    jpegs(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    params["cifar10"].update(format="folders", urls=[str(tmp_path / "images")], checksum=None, size_bytes=None,
                             val_fraction=0.2)
    params.update(model="basecnn", weights="none")
    params["train"].update(batch_size=10)
    params["train"]["scratch"]["epochs"] = 1
    download_cifar10.main(params)
    features.main(params)
    train.main(params)

    jpeg = sorted((tmp_path / "images/test/ship").iterdir())[0]
    shutil.copy(jpeg, tmp_path / "image.jpg")  # the file name the snippet uses
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
