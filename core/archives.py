"""Reading datasets out of archives without extracting or unpickling anything.

Archives are streamed member by member (never extracted to disk), and every
member is checked first: an absolute or `..` name, a link or a device stops
the read, because a well-formed dataset has none and a crafted one uses them
to escape its directory. Image bytes are decoded with Pillow, arrays with
numpy; nothing from an archive is executed or unpickled.

Every read is bounded before it happens: a member's declared size against
MAX_MEMBER_BYTES, an image's pixel count (from its header) against
MAX_IMAGE_PIXELS before it is decoded. A directory dataset holds regular
files and folders only: a symlink, device, FIFO or socket in it is refused,
as the same member of an archive is.
"""
import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import unicodedata
import warnings
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from core import StageError
from core.params import MAX_IMAGE_SIZE

CIFAR10_BIN_DIR = "cifar-10-batches-bin"
CIFAR10_BIN_SPLITS = {
    "train": [f"{CIFAR10_BIN_DIR}/data_batch_{i}.bin" for i in range(1, 6)],
    "test": [f"{CIFAR10_BIN_DIR}/test_batch.bin"],
}
CIFAR10_BIN_META = f"{CIFAR10_BIN_DIR}/batches.meta.txt"
CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3  # label byte + channel-major pixels
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Modes with exactly one 8-bit RGB form: grey copied to R, G and B, a palette
# looked up, CMYK and YCbCr by Pillow's formulas, an all-opaque alpha dropped.
# Others (16-bit, float) need a scaling choice that is the user's to make.
RGB_CONVERTIBLE = {"1", "L", "P", "CMYK", "YCbCr", "LA", "PA", "RGBA"}
ZIP_MAGIC = b"PK\x03\x04"
# One file of a dataset (a CIFAR-10 batch is 30.7 MB; an image is far less).
MAX_MEMBER_BYTES = 64 << 20
# An image's width x height, checked from its header before decoding: the
# largest `image_size` (1024 x 1024). Larger images would be shrunk in-graph
# anyway; stored at full size they cost memory and disk for nothing.
MAX_IMAGE_PIXELS = MAX_IMAGE_SIZE ** 2
# All the decoded images of a class-folder dataset, held in memory and then written as uint8 arrays: 8 GiB, 40x
# CIFAR-10's 184 MB. Each file and image is bounded above; this bounds their number too.
MAX_DATASET_BYTES = 8 << 30
SPLITS = ("train", "test")


class ArchiveError(StageError):
    pass


class _ProgressReader(io.RawIOBase):
    """A file wrapper that advances a progress bar by the bytes read."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def readable(self):
        return True

    def readinto(self, b):
        n = self.f.readinto(b)
        self.bar.update(n)
        return n


def safe_name(member, archive):
    """The member's normalised name; ArchiveError if it could escape or is not plain."""
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} points outside the archive's directory; refusing it")
    if member.issym() or member.islnk():
        raise ArchiveError(f"{archive}: member {name!r} is a link; refusing it")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{archive}: member {name!r} is a device or special file; refusing it")
    return "/".join(p for p in parts if p != ".")


def is_hidden(parts):
    """macOS and editor metadata (`.DS_Store`, `._x`, `__MACOSX/`): never part of a dataset, skipped."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def iter_files(source, desc="reading"):
    """Yield (relative name, reader) for each regular file of a tar archive or directory.

    `reader()` returns the file's bytes (at most MAX_MEMBER_BYTES); call it
    before the next item (a compressed tar is a stream). Directories yield
    (name + "/", None). Hidden entries of a directory are skipped; a member
    named twice, a link or a special file stops the read.
    """
    source = Path(source)
    if source.is_dir():
        yield from _iter_directory(source)
        return
    if not source.is_file():  # /dev/zero, a FIFO or a socket would be read forever
        raise ArchiveError(f"{source}: not a regular file (a device, FIFO or socket); point the urls at an archive "
                           "file or a directory")
    with open(source, "rb") as f:
        if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:  # tarfile would only say "invalid header"
            raise ArchiveError(f"{source}: a zip archive; only tar archives (.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2) "
                               "and directories are read: unpack it and point the urls at the directory, or repack it "
                               "as .tar.gz")
    seen = set()
    try:
        with open(source, "rb") as raw, tqdm(total=source.stat().st_size, unit="B", unit_scale=True,
                                             desc=desc) as bar:
            stream = _decompressed(io.BufferedReader(_ProgressReader(raw, bar)))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = safe_name(member, source)
                    if not name and member.isdir():  # "./", the archive's own root (`tar -C dir -czf x.tgz .`)
                        continue
                    if name in seen:
                        raise ArchiveError(f"{source}: member {name!r} appears twice; an archive names each file "
                                           "once: repack it")
                    seen.add(name)
                    if member.isdir():
                        yield name + "/", None
                    else:
                        yield name, lambda m=member, n=name: _read_member(source, tar, m, n)
            # tarfile stops at the end-of-archive block; reading on to the end makes
            # gzip / bz2 / xz check their CRC, so a flipped bit cannot pass unnoticed.
            while stream.read(1 << 20):
                pass
    except READ_ERRORS as e:
        _corrupt(source, e)


def _too_big(where, size):
    return ArchiveError(f"{where}: {size:,} bytes, over the limit of {MAX_MEMBER_BYTES:,} bytes for one file of a "
                        "dataset (core.archives.MAX_MEMBER_BYTES); remove it from the dataset")


def _read_member(source, tar, member, name):
    """A tar member's bytes, its declared size checked first (a sparse member can
    declare a gigabyte in a few bytes of archive)."""
    if member.size > MAX_MEMBER_BYTES:
        raise _too_big(f"{source}:{name}", member.size)
    return _guarded(source, lambda: tar.extractfile(member).read())  # at most member.size bytes


def _iter_directory(source):
    for root, dirs, files in os.walk(source):
        root = Path(root)
        rel_root = root.relative_to(source)
        dirs[:] = sorted(d for d in dirs if not is_hidden([d]))
        files = sorted(f for f in files if not is_hidden([f]))
        for name in dirs + files:
            _check_entry(source, root / name)
        if rel_root != Path("."):
            yield rel_root.as_posix() + "/", None
        for name in files:
            yield (rel_root / name).as_posix(), lambda p=root / name: _read_file(source, p)


def _check_entry(source, path):
    """A directory dataset holds regular files and folders, nothing else."""
    mode = os.lstat(path).st_mode
    where = f"{source}:{path.relative_to(source).as_posix()}"
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{where}: a symbolic link; links are not followed in a dataset (they could point "
                           "outside it or at another class): copy the files in (cp -rL) or point the urls at the "
                           "folder it links to")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ArchiveError(f"{where}: a device, FIFO or socket, not a file; remove it from the dataset")


def _read_file(source, path):
    where = f"{source}:{path.relative_to(source).as_posix()}"
    size = path.stat().st_size
    if size > MAX_MEMBER_BYTES:
        raise _too_big(where, size)
    with open(path, "rb") as f:
        data = f.read(size + 1)  # read(n) allocates n bytes up front: ask for what the file holds
    if len(data) > size:  # it grew while we read it
        raise ArchiveError(f"{where}: changed while it was read (still being written?); run again once it is complete")
    return data


def _decompressed(raw):
    """`raw` decompressed by the module its magic bytes name (tarfile's own
    stream mode never checks a gzip CRC: a corrupt archive would read as data)."""
    head = raw.peek(6)[:6]
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, lzma.LZMAError)


def _guarded(source, read):
    try:
        return read()
    except READ_ERRORS as e:
        _corrupt(source, e)


def _corrupt(source, e):
    raise ArchiveError(f"{source}: corrupt, cut short or not a tar archive ({type(e).__name__}: {e}); "
                       "delete it and get a fresh copy") from e


def parse_cifar10_binary(archive):
    """The official cifar-10-binary.tar.gz -> ({split: (x, y)}, class names, notes for info.json)."""
    wanted = set(sum(CIFAR10_BIN_SPLITS.values(), [CIFAR10_BIN_META]))
    blobs, seen_top = {}, set()
    for name, read in iter_files(archive, desc="cifar-10 archive"):
        seen_top.add(name.split("/")[0])
        if name in wanted:
            blobs[name] = read()
    missing = sorted(wanted - set(blobs))
    if missing:
        raise ArchiveError(f"{archive}: not the CIFAR-10 binary layout; missing {', '.join(missing)} "
                           f"(top-level entries: {', '.join(sorted(seen_top)) or 'none'})")
    meta = blobs[CIFAR10_BIN_META].decode("utf-8", "surrogateescape")
    classes = [line.strip() for line in meta.splitlines() if line.strip()]
    for cls in classes:
        check_class_name(cls, f"{archive}:{CIFAR10_BIN_META}")
    splits = {}
    for split, members in CIFAR10_BIN_SPLITS.items():
        parts = [decode_cifar10_records(blobs[m], f"{archive}:{m}", len(classes)) for m in members]
        splits[split] = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    return splits, classes, {}


def decode_cifar10_records(blob, where, n_classes):
    """CIFAR-10 binary records (label byte, then R, G, B planes of 32x32) -> (x NHWC, y)."""
    if len(blob) % CIFAR10_RECORD_BYTES:
        raise ArchiveError(f"{where}: {len(blob)} bytes is not a whole number of {CIFAR10_RECORD_BYTES}-byte records")
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    y = records[:, 0].copy()
    if y.size and y.max() >= n_classes:
        raise ArchiveError(f"{where}: label {y.max()} but only {n_classes} class names")
    x = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return x, y


def decode_image(data, where):
    """Image bytes -> (uint8 HxWx3 RGB array, the mode it was converted from or None).

    The pixel count is read from the header and checked against
    MAX_IMAGE_PIXELS before anything is decoded. Grey, palette, CMYK and
    opaque-alpha images are converted (one right answer, reported by the
    caller); transparent pixels and modes deeper than 8 bits are refused,
    since a background or a scaling would be our guess. Whatever a decoder
    raises on malformed bytes becomes one ArchiveError naming `where`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            with Image.open(io.BytesIO(data)) as im:
                return _to_rgb(im, where)
    except ArchiveError:
        raise
    except Image.DecompressionBombError as e:
        raise ArchiveError(f"{where}: {e}; over the limit of {MAX_IMAGE_PIXELS:,} pixels: resize it") from e
    except Exception as e:  # noqa: BLE001 (decoders raise ValueError, struct.error, IndexError... on bad bytes)
        raise ArchiveError(f"{where}: not a readable image ({type(e).__name__}: {' '.join(str(e).split())}); "
                           "remove it from the dataset") from e


def _to_rgb(im, where):
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ArchiveError(f"{where}: image is {width}x{height} = {width * height:,} pixels, over the limit of "
                           f"{MAX_IMAGE_PIXELS:,} (core.archives.MAX_IMAGE_PIXELS, the largest image_size squared); "
                           "resize it")
    mode = im.mode
    if mode == "RGB":
        return _pixels(im, width, height), None
    if mode not in RGB_CONVERTIBLE:
        raise ArchiveError(f"{where}: image mode is {mode}, which has no single 8-bit RGB form (e.g. "
                           "16-bit or float); save it as 8-bit RGB with the scaling you want")
    if im.has_transparency_data and im.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        raise ArchiveError(f"{where}: image mode is {mode} with transparent pixels; flatten it onto the "
                           "background you want and save it as RGB (e.g. PIL's Image.alpha_composite)")
    return _pixels(im.convert("RGB"), width, height), mode


def _pixels(im, width, height):
    x = np.asarray(im, dtype=np.uint8)
    if x.shape != (height, width, 3):  # a decoder that disagrees with its own header
        raise ValueError(f"decoded to shape {x.shape}, header says {width}x{height}")
    return x


class _Layout:
    """The accepted layouts of a class-folder dataset, decided entry by entry:
    `train/<class>/<image>` and `test/<class>/<image>` at the top, or the same
    under exactly one top-level folder. Anything else (a second top-level
    folder, train/ or test/ deeper in the tree, a file outside a class folder)
    is refused with its path, never merged or skipped."""

    def __init__(self, source):
        self.source, self.top = source, None  # top: "" (no top-level folder) or its name

    def relative(self, name, is_dir):
        """`name`'s parts below the dataset root: [] (the top folder itself), [split], [split, class] or
        [split, class, file]."""
        parts = name.rstrip("/").split("/")
        if self.top is None:  # the first entry decides
            if parts[0] not in SPLITS and not (is_dir or len(parts) > 1):
                raise self._outside(name)
            self.top = "" if parts[0] in SPLITS else parts[0]
        if self.top and parts[0] != self.top:
            raise ArchiveError(f"{self.source}: {name}: a second top-level entry beside {self.top}/; expected "
                               "train/<class>/* and test/<class>/* and nothing else, optionally under one top-level "
                               "folder: move one of them out")
        rest = parts[1:] if self.top else parts
        if rest and rest[0] not in SPLITS:
            raise self._outside(name)
        if len(rest) > (2 if is_dir else 3) or (not is_dir and len(rest) != 3):
            split = rest[0] if rest else "train"
            raise ArchiveError(f"{self.source}: {name} is not at {split}/<class>/<image>; "
                               "expected train/<class>/*.png|jpg and test/<class>/*, one folder per class")
        return rest

    def _outside(self, name):
        under = f" (under {self.top}/)" if self.top else ""
        return ArchiveError(f"{self.source}: {name} is outside train/ and test/{under}; expected train/<class>/* and "
                            "test/<class>/* and nothing else, optionally under one top-level folder: move it out of "
                            "the dataset")


def parse_class_folders(source):
    """A class-folder dataset (train/<class>/*, test/<class>/*), as a directory or tar.

    Returns ({"train": (x, y), "test": (x, y)}, class names sorted by name,
    notes for info.json). The layout is _Layout's; images must be of one size
    and convertible to RGB (see decode_image); every class in test must exist
    in train.
    """
    images = {split: {} for split in SPLITS}  # split -> class -> [array]
    first_shape, converted, layout, decoded = None, Counter(), _Layout(source), 0
    files = tqdm(iter_files(source, desc="dataset"), unit=" files", desc="decoding images", leave=False) \
        if Path(source).is_dir() else iter_files(source, desc="dataset")
    for name, read in files:
        if is_hidden(name.rstrip("/").split("/")):
            continue
        rest = layout.relative(name, read is None)
        if read is None:  # a directory: register empty classes so they are reported
            if len(rest) == 2:
                images[rest[0]].setdefault(rest[1], [])
            continue
        split, cls, filename = rest
        where = f"{source}:{name}"
        if Path(filename).suffix.lower() not in IMAGE_SUFFIXES:
            raise ArchiveError(f"{where}: not an image file (allowed: {', '.join(sorted(IMAGE_SUFFIXES))}); "
                               "remove it from the dataset")
        image, mode = decode_image(read(), where)
        if mode:
            converted[mode] += 1
        if first_shape is None:
            first_shape = (image.shape, where)
        elif image.shape != first_shape[0]:
            # Not resized for the user: crop, pad or stretch changes what the models learn.
            raise ArchiveError(f"{where}: image is {image.shape[1]}x{image.shape[0]} but "
                               f"{first_shape[1]} is {first_shape[0][1]}x{first_shape[0][0]}; "
                               "resize all images to one size (crop, pad or stretch as suits your data)")
        images[split].setdefault(cls, []).append(image)
        decoded += image.nbytes
        if decoded > MAX_DATASET_BYTES:
            raise ArchiveError(f"{source}: the images decoded up to {name} hold {decoded:,} bytes, over the limit "
                               f"of {MAX_DATASET_BYTES:,} for one dataset; use a subset, or smaller images")
    splits, classes = _stack_class_folders(images, source)
    return splits, classes, {"converted_to_rgb": dict(sorted(converted.items()))} if converted else {}


def check_class_name(name, source):
    """A class name goes into JSON, CSV, Markdown and figure titles, all written as UTF-8: refuse a name that is
    not text (bytes from another file system's encoding, which Python carries as lone surrogates) or holds a
    control character (a tab or newline would split a CSV row or a title)."""
    bad = [c for c in name if unicodedata.category(c) in ("Cs", "Cc")]
    if bad:
        shown = name.encode("utf-8", "surrogateescape")
        what = "not valid UTF-8" if unicodedata.category(bad[0]) == "Cs" else "holds a control character"
        raise ArchiveError(f"{source}: class name {shown!r} {what}; rename the folder with plain text")


def _stack_class_folders(images, source):
    for split in images:
        if not images[split]:
            raise ArchiveError(f"{source}: no {split}/<class>/ folders found; expected train/<class>/* and "
                               "test/<class>/*")
        for cls, imgs in images[split].items():
            if not imgs:
                raise ArchiveError(f"{source}: class folder {split}/{cls} has no images")
    classes = sorted(images["train"])
    for cls in sorted(set(classes) | set(images["test"])):
        check_class_name(cls, source)
    if not 2 <= len(classes) <= 256:  # labels are stored as uint8
        raise ArchiveError(f"{source}: {len(classes)} class folders under train/; a classifier needs 2 to 256")
    unknown = sorted(set(images["test"]) - set(classes))
    if unknown:
        raise ArchiveError(f"{source}: test classes {', '.join(unknown)} have no train/ folder; "
                           "every test class needs training images")
    splits = {}
    for split, by_class in images.items():
        names = [c for c in classes if c in by_class]
        x = np.stack([img for c in names for img in by_class[c]])
        y = np.concatenate([np.full(len(by_class[c]), classes.index(c), dtype=np.uint8) for c in names])
        splits[split] = (x, y)
    return splits, classes
