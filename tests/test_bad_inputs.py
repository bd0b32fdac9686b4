"""Bad inputs, interruptions and hostile archives: each gives one error naming
the key or file and the fix, a non-zero exit, no partial output, and the
previous output as it was. Rows already covered elsewhere are listed in
README's "Bad inputs" table and not repeated here.

TensorFlow is imported only inside the few tests that need it (stage features).
"""
import ast
import errno
import gzip
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
import zlib

import numpy as np
import pytest
import yaml
from PIL import Image

from builders import (booby_trap, booby_trapped_pickle, cifar10_binary, cifar10_python, cinic10, class_folders,
                      image_bytes, with_extra_member)
from conftest import ROOT, SESSION_ENV, sha256
import core.io
from core import StageError
from core import fetch as fetch_module
from core.fetch import DownloadError, fetch, parse_checksum
from core.io import DiskFullError, atomic_path, load_npz, save_npz, write_json
from stages import download_cifar10, sample_cinic10
from core.params import load as load_params  # DVC's YAML 1.2 reading: 1e-05 is a float

DELETE = object()


def snapshot(directory):
    """{relative path: bytes} of every file under `directory` (None if it does not exist)."""
    if not directory.exists():
        return None
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def listing(directory):
    """Every entry of `directory`, by name: compared whole, so a temporary under any name shows."""
    return sorted(p.name for p in directory.iterdir())


def set_key(params, key, value):
    *path, last = key.split(".")
    target = params
    for part in path:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value


def cifar_params(params, archive, **extra):
    params["cifar10"].update(urls=[str(archive)], checksum=None, size_bytes=None, **extra)
    return params


def cinic_params(params, archive, **extra):
    params["cinic10"].update(urls=[str(archive)], checksum=None, size_bytes=None, **extra)
    return params


@pytest.fixture
def cifar(params, tmp_path):
    """A tiny CIFAR-10 binary archive, params pointing at it, and a previous complete output."""
    archive = tmp_path / "cifar-10-binary.tar.gz"
    cifar10_binary(archive)
    out = tmp_path / "data" / "cifar10"
    download_cifar10.main(cifar_params(params, archive, val_fraction=0.2), out_dir=out)
    return params, archive, out, snapshot(out)


@pytest.fixture
def cinic(params, tmp_path):
    """A tiny CINIC-10 archive (test split only), params pointing at it, and a previous complete output."""
    archive = tmp_path / "CINIC-10.tar.gz"
    cinic10(archive, imagenet=2, cifar=1, splits=("test",))
    out = tmp_path / "data" / "cinic10"
    sample_cinic10.main(cinic_params(params, archive, per_class=2), out_dir=out)
    return params, archive, out, snapshot(out)


STAGES = {"download_cifar10": ("cifar", download_cifar10), "sample_cinic10": ("cinic", sample_cinic10)}
SECTION = {"download_cifar10": "cifar10", "sample_cinic10": "cinic10"}


def stage_setup(request, name):
    """(stage module, params, archive, output dir, snapshot of the previous output) for a data stage."""
    fixture, module = STAGES[name]
    return (module, *request.getfixturevalue(fixture))


def run_stage(args, cwd, extra_env=None, **kwargs):
    """A stage as DVC runs it: `python -m stages.<name>` in a directory holding params.yaml."""
    env = {**SESSION_ENV, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd), **(extra_env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# Params: misspelt keys, values out of range or of the wrong type (data stages)

@pytest.mark.parametrize("stage, key, value, match", [
    pytest.param("download_cifar10", "cifar10.val_fration", 0.2, r"unknown key `cifar10.val_fration`; did you mean "
                 r"`cifar10.val_fraction`\?", id="misspelt-cifar10-key"),
    pytest.param("download_cifar10", "fetch.retry", 3, r"unknown key `fetch.retry`; did you mean `fetch.retries`\?",
                 id="misspelt-fetch-key"),
    pytest.param("download_cifar10", "cifar10.val_fraction", DELETE, r"missing key `cifar10.val_fraction`",
                 id="missing-key"),
    pytest.param("download_cifar10", "data_seed", "forty-two", r"`data_seed` must be an integer, got 'forty-two'",
                 id="seed-not-integer"),
    pytest.param("download_cifar10", "fetch.retries", 0, r"`fetch.retries` is 0; must be in \[1, 20\]",
                 id="retries-zero"),
    pytest.param("download_cifar10", "cifar10.train_fraction", float("nan"), r"`cifar10.train_fraction` is NaN",
                 id="train-fraction-nan"),
    pytest.param("download_cifar10", "cifar10.val_fraction", float("inf"), r"`cifar10.val_fraction` is inf; it "
                 r"must be a finite number", id="val-fraction-inf"),
    pytest.param("download_cifar10", "data_seed", 2 ** 32, r"`data_seed` is 4294967296; must be in "
                 r"\[0, 4294967295\]", id="seed-past-numpy"),
    pytest.param("download_cifar10", "cifar10.checksum", "sha256:c4a38c50a1bc", r"`cifar10.checksum` is "
                 r"'sha256:c4a38c50a1bc'; it must look like sha256:<hex> or md5:<hex>", id="checksum-cut-short"),
    pytest.param("download_cifar10", "cifar10.size_bytes", "170 MB", r"`cifar10.size_bytes` must be an integer",
                 id="size-not-integer"),
    pytest.param("sample_cinic10", "cinic10.origin", "imagnet", r"`cinic10.origin` is 'imagnet'; allowed: imagenet, "
                 r"cifar10, all", id="misspelt-origin"),
    pytest.param("sample_cinic10", "cinic10.per_class", 0, r"`cinic10.per_class` is 0; must be in \[1, 9000\]",
                 id="per-class-zero"),
    pytest.param("sample_cinic10", "cinic10.per_class", -5, r"`cinic10.per_class` is -5; must be in \[1, 9000\]",
                 id="per-class-negative"),
    pytest.param("sample_cinic10", "cinic10.per-class", 5, r"unknown key `cinic10.per-class`; did you mean "
                 r"`cinic10.per_class`\?", id="misspelt-cinic10-key"),
    pytest.param("sample_cinic10", "cinic10.checksum", "sha1:" + "0" * 40, r"`cinic10.checksum` is 'sha1:0+'; it "
                 r"must look like", id="checksum-unknown-algorithm"),
])
def test_bad_data_params_name_the_key_and_keep_the_output(request, stage, key, value, match):
    module, params, _, out, before = stage_setup(request, stage)
    set_key(params, key, value)
    with pytest.raises(StageError, match=r"params.yaml: " + match):
        module.main(params, out_dir=out)
    assert snapshot(out) == before
    assert listing(out.parent) == [out.name]


def test_cli_per_class_larger_than_available_is_one_line(cinic, tmp_path):
    params, _, out, before = cinic
    params["cinic10"]["per_class"] = 3  # 2 ImageNet images per class exist
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(["-m", "stages.sample_cinic10"], tmp_path)
    assert result.returncode == 1
    assert error_lines(result.stderr) == [result.stderr.strip().splitlines()[-1]] and "Traceback" not in result.stderr
    assert "`cinic10.per_class` is 3" in result.stderr and "lower per_class" in result.stderr
    assert snapshot(out) == before


# Params and weights of the model stages (stage features; TensorFlow)

def features_workdir(tmp_path, params):
    """data/cifar10 (tiny) and a previous data/features output; returns (params, data dir, out dir, snapshot)."""
    data, out = tmp_path / "data" / "cifar10", tmp_path / "data" / "features"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        save_npz(data / f"{split}.npz", x=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
                 y=np.arange(4, dtype=np.uint8))
    write_json(data / "info.json", {"classes": [f"c{i}" for i in range(4)], "image_shape": [32, 32, 3]})
    write_json(out / "info.json", {"model": "previous"})
    params.update(model="mobilenetv2", image_size=32, weights="none")
    return params, data, out, snapshot(out)


@pytest.mark.parametrize("key, value, match", [
    pytest.param("model", "resnet50", r"params.yaml: `model` is 'resnet50'; allowed: basecnn, mobilenetv2, "
                 r"resnet50v2", id="unknown-model"),
    pytest.param("image_size", 16, r"params.yaml: `image_size` is 16; must be in \[32, 1024\]",
                 id="image-size-too-small"),
    pytest.param("weights", "imagenet21k", r"params.yaml: `weights` is 'imagenet21k'; allowed: imagenet, none, or a "
                 r"weights file", id="unknown-weights"),
])
def test_bad_model_params_stop_features_before_any_output(params, tmp_path, key, value, match):
    from stages import features
    params, data, out, before = features_workdir(tmp_path, params)
    params[key] = value
    with pytest.raises(StageError, match=match):
        features.main(params, data_dir=data, out_dir=out)
    assert snapshot(out) == before and listing(out.parent) == ["cifar10", "features"]


def weights_of_another_architecture(path):
    import keras
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save_weights(path)
    return path


@pytest.mark.slow  # builds a real MobileNetV2 backbone
@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras lists every layer it could not load
def test_weights_file_of_another_architecture_keeps_previous_features(params, tmp_path):
    from stages import features
    params, data, out, before = features_workdir(tmp_path, params)
    params["weights"] = str(weights_of_another_architecture(tmp_path / "other.weights.h5"))
    with pytest.raises(StageError, match=r"`weights` file .*other.weights.h5 does not fit mobilenetv2 at 32 px"):
        features.main(params, data_dir=data, out_dir=out)
    assert snapshot(out) == before and listing(out.parent) == ["cifar10", "features"]


@pytest.mark.slow  # builds a real MobileNetV2 backbone
def test_imagenet_weights_offline_keep_previous_features(params, tmp_path, no_imagenet_weights):
    from stages import features
    params, data, out, before = features_workdir(tmp_path, params)
    params["weights"] = "imagenet"
    with pytest.raises(StageError, match=r"could not get ImageNet weights for mobilenetv2 .*set `weights: none`"):
        features.main(params, data_dir=data, out_dir=out)
    assert snapshot(out) == before and listing(out.parent) == ["cifar10", "features"]
    assert [path.split("_weights")[0] for path, _ in no_imagenet_weights.server.log] == ["/mobilenet_v2"]


@pytest.mark.slow  # builds a real MobileNetV2 backbone
@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras lists every layer it could not load
def test_weights_errors_are_one_line(params, tmp_path):
    from core import models
    with pytest.raises(StageError) as e:
        models.build_backbone("mobilenetv2", 32, str(weights_of_another_architecture(tmp_path / "o.weights.h5")))
    assert "\n" not in str(e.value)


def test_cli_unknown_model_is_one_error_line(tmp_path, params):
    params["model"] = "resnet50"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    # The first stage that reads `model` (features and train read what it writes).
    result = run_stage(["-m", "stages.resolve_params"], tmp_path, {"KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 1
    # The stage's own report is one line, and the last.
    assert error_lines(result.stderr) == [
        "error: params.yaml: `model` is 'resnet50'; allowed: basecnn, mobilenetv2, resnet50v2, efficientnetb0, "
        "densenet121"]
    assert result.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


# Downloads and archives

def test_cli_checksum_mismatch_is_one_line_and_keeps_everything(cifar, server, tmp_path):
    params, archive, out, before = cifar
    data = archive.read_bytes()
    url = server.serve("/cifar-10-binary.tar.gz", data)
    params["cifar10"].update(urls=[url], checksum="sha256:" + "0" * 64, size_bytes=len(data))
    params["fetch"]["dir"] = str(tmp_path / "downloads")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(["-m", "stages.download_cifar10"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert line == result.stderr.strip().splitlines()[-1]
    assert f"{url}: " in line and "sha256 is " in line and f"expected {'0' * 64} (corrupt or wrong file)" in line
    assert "check `cifar10.urls`" in line
    assert snapshot(out) == before
    assert list((tmp_path / "downloads").iterdir()) == []  # the bad file is neither kept nor resumed from


def test_404_and_unreachable_host_name_every_mirror_and_keep_the_output(cinic, server):
    params, _, out, before = cinic
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    urls = [server.url("/gone/CINIC-10.tar.gz"), f"http://127.0.0.1:{closed}/CINIC-10.tar.gz"]
    params["cinic10"].update(urls=urls, checksum=sha256(b"x"), size_bytes=None)
    params["fetch"]["retries"] = 2
    with pytest.raises(DownloadError) as e:
        sample_cinic10.main(params, out_dir=out)
    message = str(e.value)
    assert "\n" not in message
    assert f"{urls[0]}: HTTP 404" in message and f"{urls[1]}: " in message and "refused" in message
    assert "after 2 tries" in message and "check `cinic10.urls`" in message
    assert [path for path, _ in server.log] == ["/gone/CINIC-10.tar.gz"]  # 404 is not retried
    assert snapshot(out) == before and listing(out.parent) == [out.name]


def corrupt(archive, how, tmp_path):
    """A damaged copy of `archive`."""
    data = archive.read_bytes()
    bad = tmp_path / f"bad-{how.replace(' ', '-')}.tar.gz"
    if how == "bit flipped in the data":  # inflates without error (as in a stored block); only gzip's CRC tells
        tar_bytes = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            biggest = max((m for m in tar if m.isfile()), key=lambda m: m.size)
        flipped = bytearray(tar_bytes)
        flipped[biggest.offset_data + biggest.size // 2] ^= 0x10
        deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = deflate.compress(bytes(flipped)) + deflate.flush()
        bad.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body +
                        struct.pack("<II", zlib.crc32(tar_bytes), len(tar_bytes) & 0xFFFFFFFF))
    elif how == "bit flipped in the stream":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        bad.write_bytes(bytes(flipped))
    elif how == "garbage":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif how == "empty":
        bad.write_bytes(b"")
    elif how == "zip":
        with tarfile.open(archive) as tar, zipfile.ZipFile(bad, "w") as z:
            for m in tar:
                if m.isfile():
                    z.writestr(m.name, tar.extractfile(m).read())
    return bad


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("how, match", [
    pytest.param("bit flipped in the data", r"corrupt, cut short or not a tar archive \(BadGzipFile: CRC check "
                 r"failed", id="bit-flipped-in-data"),
    pytest.param("bit flipped in the stream", r"corrupt, cut short or not a tar archive", id="bit-flipped-in-stream"),
    pytest.param("garbage", r"corrupt, cut short or not a tar archive", id="garbage"),
    pytest.param("empty", r"corrupt, cut short or not a tar archive", id="empty-file"),
    pytest.param("zip", r"a zip archive; only tar archives .* are read", id="zip"),
])
def test_corrupt_archive_is_refused_and_keeps_the_output(request, tmp_path, stage, how, match):
    module, params, archive, out, before = stage_setup(request, stage)
    bad = corrupt(archive, how, tmp_path)
    params[SECTION[stage]]["urls"] = [str(bad)]
    with pytest.raises(StageError, match=re.escape(f"{bad}: ") + match):
        module.main(params, out_dir=out)
    assert snapshot(out) == before and listing(out.parent) == [out.name]


def test_disk_full_while_downloading_is_not_retried(server, tmp_path, monkeypatch):
    data = bytes(range(256)) * 4096
    url = server.serve("/a.tar.gz", data)
    real_open = open

    class FullDisk:
        """A file whose writes fail with ENOSPC past 1,000 bytes."""

        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, chunk):
            if self.written + len(chunk) > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(chunk)
            return self.f.write(chunk)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(fetch_module, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    with pytest.raises(DiskFullError, match=r"a.tar.gz.part: disk full while downloading .*free space under "
                                            r"`fetch.dir`"):
        fetch([url], sha256(data), tmp_path / "dl", retries=3)
    assert len(server.log) == 1
    assert not (tmp_path / "dl" / "a.tar.gz").exists()


# Class-folder datasets (format: folders)

def folders(params, source, **extra):
    params["cifar10"].update(format="folders", urls=[str(source)], checksum=None, size_bytes=None, val_fraction=0.5,
                             **extra)
    return params


def test_grey_palette_bilevel_and_opaque_alpha_images_are_converted_and_reported(params, tmp_path, capsys):
    root = tmp_path / "ds"
    class_folders(root)
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    opaque = np.concatenate([rgb[3], np.full((32, 32, 1), 255, np.uint8)], axis=2)
    files = {"train/cat/grey.png": image_bytes(rgb[0], "L"), "train/dog/palette.png": image_bytes(rgb[1], "P"),
             "test/cat/bilevel.png": image_bytes(rgb[2], "1"), "train/frog/opaque.png": image_bytes(opaque)}
    expected = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        expected[name] = np.asarray(Image.open(root / name).convert("RGB"))
    download_cifar10.main(folders(params, root), out_dir=tmp_path / "out")

    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["converted_to_rgb"] == {"1": 1, "L": 1, "P": 1, "RGBA": 1}
    assert "converted to RGB: 1 of mode 1, 1 of mode L, 1 of mode P, 1 of mode RGBA" in capsys.readouterr().out
    stored = {split: load_npz(tmp_path / "out" / f"{split}.npz")["x"] for split in ("train", "val", "test")}
    for name, pixels in expected.items():
        pool = stored["test"] if name.startswith("test/") else np.concatenate([stored["train"], stored["val"]])
        assert any(np.array_equal(x, pixels) for x in pool), name
    assert np.array_equal(expected["train/cat/grey.png"][..., 0], expected["train/cat/grey.png"][..., 2])
    assert np.array_equal(expected["train/frog/opaque.png"], rgb[3])


@pytest.mark.parametrize("case, match", [
    pytest.param("no test folder", r"no test/<class>/ folders found", id="no-test-folder"),
    pytest.param("one class", r"1 class folders under train/; a classifier needs 2 to 256", id="one-class"),
    pytest.param("file outside a class folder", r"train/labels.csv is not at train/<class>/<image>",
                 id="file-outside-class-folder"),
    pytest.param("transparent palette", r"train/cat/clear.png: image mode is P with transparent pixels; flatten it",
                 id="transparent-palette-image"),
])
def test_bad_folder_layouts_are_refused(params, tmp_path, case, match):
    root = tmp_path / "ds"
    class_folders(root, classes=("cat",) if case == "one class" else ("cat", "dog", "frog"))
    if case == "no test folder":
        shutil.rmtree(root / "test")
    elif case == "file outside a class folder":
        (root / "train" / "labels.csv").write_text("cat,1\n")
    elif case == "transparent palette":
        image = Image.fromarray(np.zeros((32, 32), np.uint8), "P")
        image.info["transparency"] = 0
        image.save(root / "train" / "cat" / "clear.png", transparency=0)
    with pytest.raises(StageError, match=match):
        download_cifar10.main(folders(params, root), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() and listing(tmp_path) == ["ds"]


def test_val_fraction_that_leaves_a_class_without_training_images(params, tmp_path):
    class_folders(tmp_path / "ds", per_class=(1, 1))
    with pytest.raises(StageError, match=r"`cifar10.val_fraction` 0.5 and `cifar10.train_fraction` 1.0 leave no "
                                         r"training image of cat \(1 image\), dog \(1 image\), frog \(1 image\);"):
        download_cifar10.main(folders(params, tmp_path / "ds"), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Disk full and interruptions while writing outputs

@pytest.mark.parametrize("stage", list(STAGES))
def test_disk_full_midway_keeps_the_previous_output(request, monkeypatch, stage):
    module, params, _, out, before = stage_setup(request, stage)
    params["data_seed"] += 1  # the new output would differ from the previous one
    real, calls = core.io.write_npz, []

    def fills_the_disk(f, arrays):
        calls.append(1)
        if len(calls) == (2 if stage == "download_cifar10" else 1):  # train.npz written, then val.npz half
            f.write(b"PK\x03\x04 first bytes of an npz")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, arrays)

    monkeypatch.setattr(core.io, "write_npz", fills_the_disk)
    with pytest.raises(DiskFullError, match="^" + re.escape(f"{out}: disk full while writing it (No space left on "
                                                            "device); free space on that disk and run again")):
        module.main(params, out_dir=out)
    assert snapshot(out) == before
    assert listing(out.parent) == [out.name]  # no temporary directory or half-written file left


def test_disk_full_in_a_single_file_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics" / "train.json"
    target.parent.mkdir()
    target.write_text('{"previous": true}\n')
    with pytest.raises(DiskFullError, match="^" + re.escape(f"{target}: disk full while writing it")):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half')
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == '{"previous": true}\n' and listing(target.parent) == ["train.json"]


# Runs `python -m stages.download_cifar10` with core.io.write_npz stalling half-way through
# the Nth file it writes, so a signal arrives mid-write at a known point.
STALLING_STAGE = textwrap.dedent("""
    import os, pathlib, runpy, signal, sys, time
    # Ctrl-C as a terminal delivers it: a shell that starts the suite in the background leaves SIGINT ignored,
    # and its children inherit that (Python then installs no KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import core.io
    real, calls = core.io.write_npz, []
    def stalling_write_npz(f, arrays):
        calls.append(1)
        if len(calls) == int(os.environ["STALL_AT"]):
            f.write(b"PK\\x03\\x04 half of an npz")
            f.flush()
            pathlib.Path(os.environ["STALLED"]).touch()
            time.sleep(60)
        return real(f, arrays)
    core.io.write_npz = stalling_write_npz
    sys.argv = ["stages.download_cifar10"]
    runpy.run_module("stages.download_cifar10", run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("sig, previous", [(signal.SIGKILL, True), (signal.SIGKILL, False), (signal.SIGINT, True)],
                         ids=["SIGKILL-previous-output", "SIGKILL-first-run", "Ctrl-C"])
def test_killed_mid_write_leaves_previous_output_or_nothing(params, tmp_path, sig, previous):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    cifar10_binary(archive)
    work, out = tmp_path / "work", tmp_path / "work" / "data" / "cifar10"
    work.mkdir()
    cifar_params(params, archive, val_fraction=0.2)
    if previous:
        download_cifar10.main({**params, "data_seed": 7}, out_dir=out)
    before = snapshot(out)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    stalled = tmp_path / "stalled"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "STALL_AT": "2", "STALLED": str(stalled)}
    proc = subprocess.Popen([sys.executable, "-c", STALLING_STAGE], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not stalled.exists():  # train.npz is written, val.npz half-written
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the stage never reached its second file"
            time.sleep(0.05)
        assert any(p.name.startswith(".cifar10.") for p in out.parent.iterdir())  # the stage is mid-write
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=15)[1]
    finally:
        proc.kill()
        proc.wait()

    assert snapshot(out) == before  # the previous complete output, or (first run) nothing at all
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert stderr.strip().splitlines()[-1] == "interrupted; outputs were left as they were before this run"
        assert listing(out.parent) == [out.name]  # Ctrl-C cleans up on the way out
    else:
        assert proc.returncode == -signal.SIGKILL
        assert set(listing(out.parent)) - {out.name}  # SIGKILL cannot clean up: the next run must
        rerun = run_stage(["-m", "stages.download_cifar10"], work)
        assert rerun.returncode == 0, rerun.stderr
        assert listing(out.parent) == [out.name]  # the dead run's temporary directory is gone
        assert {k: len(v["x"]) for k, v in ((s, load_npz(out / f"{s}.npz")) for s in ("train", "val", "test"))} == \
            {"train": 80, "val": 20, "test": 20}


# Security

def test_archive_of_python_pickles_is_refused_never_unpickled(params, tmp_path):
    sentinel = tmp_path / "unpickled"
    archive = cifar10_python(tmp_path / "cifar-10-python.tar.gz", sentinel)
    with pytest.raises(StageError, match=r"not the CIFAR-10 binary layout; missing cifar-10-batches-bin/.*"
                                         r"top-level entries: cifar-10-batches-py"):
        download_cifar10.main(cifar_params(params, archive), out_dir=tmp_path / "out")
    assert not sentinel.exists()
    pickle.loads(booby_trapped_pickle(tmp_path / "live"))  # the trap is live: unpickling would have sprung it
    assert (tmp_path / "live").exists()


def test_data_stages_never_unpickle(params, tmp_path, monkeypatch):
    """Both data stages run to the end with every unpickling entry point disabled, on archives that
    also carry booby-trapped pickles as extra members."""
    sentinel = tmp_path / "unpickled"
    trap = booby_trapped_pickle(sentinel)
    cifar10_binary(tmp_path / "c.tar.gz", extra=[("cifar-10-batches-py/data_batch_1", trap)])
    cinic10(tmp_path / "cinic.tar.gz", imagenet=1, cifar=0, splits=("test",))
    with_extra_member(tmp_path / "cinic.tar.gz", tmp_path / "cinic-trap.tar.gz", "test/model.pkl", trap)

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    download_cifar10.main(cifar_params(params, tmp_path / "c.tar.gz"), out_dir=tmp_path / "cifar")
    sample_cinic10.main(cinic_params(params, tmp_path / "cinic-trap.tar.gz", per_class=1), out_dir=tmp_path / "cinic")
    assert len(load_npz(tmp_path / "cinic" / "sample.npz")["y"]) == 10
    assert not sentinel.exists()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    sentinel = tmp_path / "unpickled"
    path = tmp_path / "train.npz"
    np.savez(path, x=np.array([booby_trap(sentinel)], dtype=object))  # an object array is stored as a pickle
    with pytest.raises(StageError, match=re.escape(f"{path}: not a plain .npz of arrays (") + ".*nothing is unpickled"):
        load_npz(path)
    assert not sentinel.exists()
    np.savez(tmp_path / "live.npz", x=np.array([booby_trap(tmp_path / "live")], dtype=object))
    np.load(tmp_path / "live.npz", allow_pickle=True)["x"]  # the trap is live: unpickling springs it
    assert (tmp_path / "live").exists()


SOURCE_FILES = sorted(p for d in ("core", "stages", "bench", "compare") for p in (ROOT / d).rglob("*.py"))
UNPICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield owner, name, {k.arg: k.value for k in node.keywords}


def test_code_has_no_unpickling_and_loads_npz_without_pickles():
    problems = []
    for path in SOURCE_FILES:
        tree = ast.parse(path.read_text())
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNPICKLERS]
        for owner, name, keywords in calls(tree):
            if owner in ("np", "numpy") and name == "load":
                flag = keywords.get("allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all"):
                problems.append(f"{where}: yaml.{name} (use yaml.safe_load)")
            if name in ("eval", "exec") and not owner:
                problems.append(f"{where}: {name}()")
            if isinstance(keywords.get("safe_mode"), ast.Constant) and keywords["safe_mode"].value is False:
                problems.append(f"{where}: safe_mode=False")
    assert problems == []
    assert any("allow_pickle" in p.read_text() for p in SOURCE_FILES)  # the scan does see the one np.load


BAD_MEMBERS = {
    "absolute-path": dict(name="/tmp/evil-absolute"),
    "windows-drive": dict(name="C:/evil"),
    "dot-dot-inside": dict(name="test/airplane/../../../evil"),
    "backslash-dot-dot": dict(name="..\\evil"),
    "hardlink": dict(name="test/airplane/hard.png", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
    "symlink": dict(name="test/airplane/soft.png", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    "char-device": dict(name="test/airplane/tty", type=tarfile.CHRTYPE, devmajor=5, devminor=0),
    "block-device": dict(name="test/airplane/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0),
    "fifo": dict(name="test/airplane/pipe", type=tarfile.FIFOTYPE),
}
OUTSIDE, LINK, SPECIAL = "points outside the archive's directory", "is a link", "is a device or special file"
MEMBER_ERRORS = {"absolute-path": OUTSIDE, "windows-drive": OUTSIDE, "dot-dot-inside": OUTSIDE,
                 "backslash-dot-dot": OUTSIDE, "hardlink": LINK, "symlink": LINK, "char-device": SPECIAL,
                 "block-device": SPECIAL, "fifo": SPECIAL}


# download_cifar10's `..` and symlink members are in test_download_cifar10.py.
@pytest.mark.parametrize("stage, kind", [(s, k) for s in STAGES for k in BAD_MEMBERS
                                         if not (s == "download_cifar10" and k == "symlink")])
def test_archive_members_that_escape_or_are_special_are_refused(request, tmp_path, stage, kind):
    module, params, archive, out, before = stage_setup(request, stage)
    info = dict(BAD_MEMBERS[kind])
    name = info.pop("name")
    bad = with_extra_member(archive, tmp_path / "bad.tar.gz", name, b"" if "type" in info else b"x", **info)
    params[SECTION[stage]]["urls"] = [str(bad)]
    with pytest.raises(StageError, match=re.escape(f"{bad}: member {name!r} {MEMBER_ERRORS[kind]}; refusing it")):
        module.main(params, out_dir=out)
    assert snapshot(out) == before and listing(out.parent) == [out.name]
    assert not os.path.lexists("/tmp/evil-absolute") and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("side, pillow_limit", [(40, 1500), (64, 1500), (64, None)],
                         ids=["between-pillow-limit-and-twice-it", "over-twice-pillow-limit", "pillow-limit-off"])
def test_decompression_bomb_image_is_refused(params, tmp_path, monkeypatch, side, pillow_limit):
    """Our own pixel limit, checked from the header before decoding: Pillow alone only warns below twice its
    limit, and nothing at all where a program has switched its check off (`Image.MAX_IMAGE_PIXELS = None`, the
    usual cure for its warning). Over twice its limit Pillow refuses in Image.open, before our check can run:
    its refusal must then read as ours, naming our limit, not as an unreadable image."""
    from core import archives
    class_folders(tmp_path / "ds")
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / "ds" / "train" / "dog" / "bomb.png")
    monkeypatch.setattr(archives, "MAX_IMAGE_PIXELS", 1500)  # 32x32 passes
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    if side * side > 2 * (pillow_limit or float("inf")):
        match = rf"train/dog/bomb.png: Image size \({side * side} pixels\) exceeds .*; over the limit of 1,500 pixels: " \
                r"resize it"
    else:
        match = rf"train/dog/bomb.png: image is {side}x{side} = {side * side:,} pixels, over the limit of 1,500 "
    with pytest.raises(StageError, match=match):
        download_cifar10.main(folders(params, tmp_path / "ds"), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def python_files_string_constants():
    for path in SOURCE_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path.relative_to(ROOT), node.value


def test_urls_come_only_from_params(params, server, tmp_path, monkeypatch):
    # No URL is written in the code ...
    assert [(p, s) for p, s in python_files_string_constants() if "http://" in s or "https://" in s] == []
    # ... and a run connects to the hosts in params.yaml and nowhere else, even when they fail.
    connected = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: connected.append(address[:2]) or
                        real(address, *a, **k))
    cifar10_binary(tmp_path / "c.tar.gz")
    data = (tmp_path / "c.tar.gz").read_bytes()
    params["cifar10"].update(urls=[server.url("/missing.tar.gz"), server.serve("/c.tar.gz", data)],
                             checksum=sha256(data), size_bytes=len(data))
    download_cifar10.main(params, out_dir=tmp_path / "out")
    assert set(connected) == {("127.0.0.1", server.httpd.server_address[1])}
    assert [path for path, _ in server.log] == ["/missing.tar.gz", "/c.tar.gz"]


def test_default_urls_have_pinned_checksums_and_sizes():
    defaults = load_params(ROOT / "params.yaml")
    for section in ("cifar10", "cinic10"):
        urls = defaults[section]["urls"]
        assert urls and all(u.startswith("https://") for u in urls), section
        algo, digest = parse_checksum(defaults[section]["checksum"], f"{section}.checksum")
        assert (algo, len(digest)) in {("sha256", 64), ("md5", 32)}
        assert isinstance(defaults[section]["size_bytes"], int) and defaults[section]["size_bytes"] > 10 ** 8
    assert defaults["cifar10"]["checksum"].startswith("sha256:c4a38c50") and defaults["cifar10"]["format"] == "binary"
