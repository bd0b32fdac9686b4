"""Class-folder datasets and archives built to be altered silently or to cost
unbounded memory: layouts outside the accepted two, links and special files,
duplicate members, oversized members and images, endless sources, mutated
image bytes. Each is refused with one line naming the path, before the cost."""
import io
import os
import re
import shutil
import tarfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from builders import add_bytes, class_folders, cinic10, image_bytes, png_bytes, tar_directory
from conftest import sha256
from core import StageError
from core import archives
from core.archives import ArchiveError, decode_image, parse_class_folders
from core.fetch import DownloadError, fetch
from core.io import load_npz
from stages import download_cifar10, sample_cinic10
from test_bad_inputs import cinic_params, folders, listing, snapshot

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda n: n not in archives.SPLITS)


def dataset(root, under_top):
    """A valid tiny dataset at `root`, or under root/top; returns (dataset root, expected arrays)."""
    base = root / "top" if under_top else root
    return base, class_folders(base, per_class=(2, 1))


def as_source(root, container, tmp_path):
    """The dataset as a directory, a tar of its entries, or a tar of "." (as `tar -C root -czf x.tgz .` makes)."""
    if container == "tar":
        return tar_directory(root, tmp_path / "ds.tar.gz")
    if container == "tar-of-dot":
        with tarfile.open(tmp_path / "dot.tar.gz", "w:gz") as tar:
            tar.add(root, arcname=".")
        return tmp_path / "dot.tar.gz"
    return root


@pytest.mark.parametrize("container", ["dir", "tar", "tar-of-dot"])
@pytest.mark.parametrize("under_top", [False, True], ids=["at-root", "under-top"])
def test_accepted_layouts_read_the_same(tmp_path, under_top, container):
    _, expected = dataset(tmp_path / "ds", under_top)
    splits, classes, _ = parse_class_folders(as_source(tmp_path / "ds", container, tmp_path))
    assert classes == ["cat", "dog", "frog"]
    for split in ("train", "test"):
        assert np.array_equal(splits[split][0], expected[split][0])
        assert np.array_equal(splits[split][1], expected[split][1])


@pytest.mark.parametrize("kind", ["second-top-folder", "split-deeper", "file-beside-splits", "nested-in-class"])
@pytest.mark.parametrize("container", ["dir", "tar", "tar-of-dot"])
@pytest.mark.parametrize("under_top", [False, True], ids=["at-root", "under-top"])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_any_other_layout_is_refused_naming_the_path(tmp_path_factory, under_top, container, kind, name):
    """v1/ beside v2/, old_runs/train/<class>/ (test images leaking into training), a stray file, a sub-folder
    in a class: never merged or skipped, refused with the offending path."""
    tmp_path = tmp_path_factory.mktemp("bad")
    root = tmp_path / "ds"
    base, _ = dataset(root, under_top)
    image = (base / "test" / "cat" / "0000.png").read_bytes()
    extra = {"second-top-folder": root / name / "train" / "cat" / "x.png",
             "split-deeper": base / name / "train" / "cat" / "x.png",
             "file-beside-splits": base / f"{name}.png",
             "nested-in-class": base / "train" / "cat" / name / "x.png"}[kind]
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_bytes(image)
    with pytest.raises(ArchiveError) as e:
        parse_class_folders(as_source(root, container, tmp_path))
    message = str(e.value)
    assert "\n" not in message
    assert re.search(rf"(^|[/: ]){re.escape(name)}(/|\.png|:| )", message) or \
        (kind == "second-top-folder" and "second top-level entry" in message), message


def test_test_images_in_a_deeper_train_folder_never_reach_training(params, tmp_path):
    class_folders(tmp_path / "ds")
    shutil.copytree(tmp_path / "ds" / "test", tmp_path / "ds" / "old_runs" / "train")
    with pytest.raises(StageError, match=r"old_runs/ is outside train/ and test/|second top-level entry beside "
                                         r"old_runs/"):
        download_cifar10.main(folders(params, tmp_path / "ds"), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() and listing(tmp_path) == ["ds"]


@pytest.mark.timeout(30)  # a FIFO that is opened would block forever
@pytest.mark.parametrize("case", ["class-folder-outside", "class-folder-inside", "image-file", "fifo", "source-link"])
def test_links_and_special_files_in_a_directory_dataset(params, tmp_path, case):
    """Symlinks inside a directory dataset are refused (files and folders alike, wherever they point), as
    links in an archive are; so are FIFOs and devices. The dataset folder itself may be a link."""
    root = tmp_path / "ds"
    expected = class_folders(root)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "train" / "cat", elsewhere)
    link = {"class-folder-outside": root / "train" / "owl", "class-folder-inside": root / "train" / "owl",
            "image-file": root / "train" / "cat" / "link.png", "fifo": root / "train" / "cat" / "pipe.png"}.get(case)
    if case == "class-folder-outside":
        link.symlink_to(elsewhere, target_is_directory=True)
    elif case == "class-folder-inside":
        link.symlink_to(root / "train" / "cat", target_is_directory=True)
    elif case == "image-file":
        link.symlink_to(root / "train" / "cat" / "0000.png")
    elif case == "fifo":
        os.mkfifo(link)
    source = root
    if case == "source-link":
        source = tmp_path / "ds-link"
        source.symlink_to(root, target_is_directory=True)
        download_cifar10.main(folders(params, source), out_dir=tmp_path / "out")
        test = load_npz(tmp_path / "out" / "test.npz")
        assert np.array_equal(test["x"], expected["test"][0]) and np.array_equal(test["y"], expected["test"][1])
        download_cifar10.main(folders(params, root), out_dir=tmp_path / "out-direct")
        assert snapshot(tmp_path / "out") == snapshot(tmp_path / "out-direct")  # the link read as the folder
        return
    with pytest.raises(StageError, match=re.escape(f"{source}:{link.relative_to(root).as_posix()}: ") +
                       ("a device, FIFO or socket" if case == "fifo" else "a symbolic link")):
        download_cifar10.main(folders(params, source), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["download_cifar10", "sample_cinic10"])
def test_duplicate_members_are_refused(params, tmp_path, stage):
    if stage == "download_cifar10":
        class_folders(tmp_path / "ds")
        archive = tar_directory(tmp_path / "ds", tmp_path / "ds.tar.gz")
        name = "train/cat/0000.png"
    else:
        archive = tmp_path / "cinic.tar.gz"
        cinic10(archive, imagenet=1, cifar=0, splits=("test",))
        with tarfile.open(archive) as tar:
            name = tar.getnames()[0]
    with tarfile.open(archive) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    dup = tmp_path / "dup.tar.gz"
    with tarfile.open(dup, "w:gz") as tar:
        for member, data in members + [(name, dict(members)[name])]:
            add_bytes(tar, member, data)
    module = download_cifar10 if stage == "download_cifar10" else sample_cinic10
    p = folders(params, dup) if stage == "download_cifar10" else cinic_params(params, dup, per_class=1)
    with pytest.raises(StageError, match=re.escape(f"{dup}: member {name!r} appears twice")):
        module.main(p, out_dir=tmp_path / "out")


# Resource bounds

def tar_with_declared_size(path, name, declared, real=b"\x89PNG" + b"\0" * 508, before=()):
    """A .tar.gz whose member `name` declares `declared` bytes (a sparse member's size) but holds a few."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in before:
            add_bytes(tar, member, data)
        info = tarfile.TarInfo(name)
        info.size = declared
        buf.write(info.tobuf(tarfile.GNU_FORMAT))
        buf.write(real)
    import gzip
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


@pytest.mark.parametrize("stage", ["download_cifar10", "sample_cinic10"])
def test_member_declaring_a_gigabyte_is_refused_before_reading(params, tmp_path, stage):
    name = "train/cat/big.png" if stage == "download_cifar10" else "test/airplane/n00000001_1.png"
    archive = tar_with_declared_size(tmp_path / "bomb.tar.gz", name, 1 << 30)
    assert archive.stat().st_size < 2000
    module = download_cifar10 if stage == "download_cifar10" else sample_cinic10
    p = folders(params, archive) if stage == "download_cifar10" else cinic_params(params, archive, per_class=1)
    tracemalloc.start()
    try:
        with pytest.raises(StageError, match=re.escape(f"{archive}:{name}: 1,073,741,824 bytes, over the limit of "
                                                       f"{archives.MAX_MEMBER_BYTES:,} bytes")):
            module.main(p, out_dir=tmp_path / "out")
        assert tracemalloc.get_traced_memory()[1] < 100 << 20
    finally:
        tracemalloc.stop()


def test_huge_image_in_a_few_kilobytes_is_refused_before_decoding(params, tmp_path):
    class_folders(tmp_path / "ds")
    big = io.BytesIO()
    Image.new("1", (6000, 6000)).save(big, format="PNG")  # 36 M pixels, 108 MB as RGB
    (tmp_path / "ds" / "train" / "cat" / "huge.png").write_bytes(big.getvalue())
    assert len(big.getvalue()) < 100_000
    Image.init()  # Pillow imports its plugins on first use: not what is measured
    tracemalloc.start()
    try:
        with pytest.raises(StageError, match=r"train/cat/huge.png: image is 6000x6000 = 36,000,000 pixels, over the "
                                             r"limit of 1,048,576"):
            download_cifar10.main(folders(params, tmp_path / "ds"), out_dir=tmp_path / "out")
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


@FAST
@given(width=st.integers(1, 80), height=st.integers(1, 80))
def test_pixel_limit_is_checked_before_decoding_at_any_size(monkeypatch, width, height):
    """Below Pillow's own limit, between it and twice it (where Pillow only warns), and above: one rule."""
    monkeypatch.setattr(archives, "MAX_IMAGE_PIXELS", 1500)
    data = png_bytes(np.zeros((height, width, 3), np.uint8))
    if width * height <= 1500:
        assert decode_image(data, "x.png")[0].shape == (height, width, 3)
    else:
        with pytest.raises(ArchiveError, match=rf"x.png: image is {width}x{height} = .* pixels, over the limit"):
            decode_image(data, "x.png")


def test_download_past_size_bytes_is_cut_and_not_retried(server, tmp_path):
    data = bytes(range(256)) * 400
    url = server.serve("/a.tar.gz", data + b"more and more" * 1000)
    with pytest.raises(DownloadError, match=r"the server announces 115,400 bytes but `size_bytes` pins 102,400"):
        fetch([url], sha256(data), tmp_path / "dl", size_bytes=len(data), retries=3)
    assert len(server.log) == 1 and list((tmp_path / "dl").iterdir()) == []


def test_download_without_length_stops_at_size_bytes(server, tmp_path):
    """A server that announces no length (or a wrong one) is read only up to the pin plus one chunk."""
    data = bytes(range(256)) * 400
    url = server.serve("/a.tar.gz", data * 50)
    server.unannounced.add("/a.tar.gz")
    with pytest.raises(DownloadError, match=r"the server sent more than the 102,400 bytes pinned in `size_bytes`"):
        fetch([url], sha256(data), tmp_path / "dl", size_bytes=len(data), retries=3)
    assert list((tmp_path / "dl").iterdir()) == []


@pytest.mark.timeout(30)  # reading either to its end would never end
@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_endless_local_source_is_refused(params, tmp_path, source):
    if source == "fifo":
        source = tmp_path / "archive.tar.gz"
        os.mkfifo(source)
    with pytest.raises(StageError, match=re.escape(f"{source}: not a regular file (a device, FIFO or socket)")):
        download_cifar10.main(folders(params, source), out_dir=tmp_path / "out")
    with pytest.raises(ArchiveError, match=r"not a regular file"):
        list(archives.iter_files(source))


# Mutated image bytes: decoded, or one ArchiveError naming the file; never another exception.

PIXELS = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
# Keyed by (format, mode): a format seeded in two modes must give two seeds, not the last one only.
SEEDS = {(fmt, mode): image_bytes(PIXELS, mode, fmt)
         for fmt, mode in (("PNG", None), ("JPEG", None), ("GIF", "P"), ("BMP", None), ("TIFF", None), ("WEBP", None),
                           ("PNG", "LA"), ("TIFF", "CMYK"))}


# Pillow warns about the damaged TIFF tags it skips; what is checked is what the decode then gives.
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
@pytest.mark.parametrize("seed", sorted(SEEDS, key=str), ids=lambda s: "-".join(filter(None, s)))
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_mutated_image_bytes_decode_or_name_the_file(seed, data):
    # A seed the decoder refuses would fuzz only the refusal path.
    x, _ = decode_image(SEEDS[seed], "seed")
    assert x.shape == (8, 8, 3)
    if seed[0] in ("PNG", "BMP", "TIFF"):  # lossless: the pixels themselves come back
        assert np.array_equal(x, np.asarray(Image.fromarray(PIXELS).convert(seed[1] or "RGB").convert("RGB")))
    blob = bytearray(SEEDS[seed])
    for _ in range(data.draw(st.integers(1, 4))):
        if not blob:
            break
        how = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite-header"]))
        at = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if how == "flip":
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del blob[at:]
        elif how == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            blob[at % 32:at % 32 + 4] = data.draw(st.binary(min_size=4, max_size=4))
    try:
        x, _ = decode_image(bytes(blob), "ds:train/cat/m.img")
    except ArchiveError as e:
        assert str(e).startswith("ds:train/cat/m.img: ") and "\n" not in str(e)
        return
    assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == 3
