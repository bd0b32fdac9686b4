"""Reading datasets out of archives without extracting or unpickling anything.

Archives are streamed member by member (never extracted to disk), and every
member is checked first: an absolute or `..` name, a link or a device stops
the read, because a well-formed dataset has none and a crafted one uses them
to escape its directory. Image bytes are decoded with Pillow, arrays with
numpy; nothing from an archive is executed or unpickled.
"""
import bz2
import gzip
import io
import lzma
import os
import tarfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from core import StageError

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


def iter_files(source, desc="reading"):
    """Yield (relative name, reader) for each regular file of a tar archive or directory.

    `reader()` returns the file's bytes; call it before the next item (a
    compressed tar is a stream). Directories yield (name + "/", None).
    """
    source = Path(source)
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs.sort()
            rel_root = Path(root).relative_to(source)
            if rel_root != Path("."):
                yield rel_root.as_posix() + "/", None
            for name in sorted(files):
                path = Path(root) / name
                yield (rel_root / name).as_posix(), path.read_bytes
        return
    with open(source, "rb") as f:
        if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:  # tarfile would only say "invalid header"
            raise ArchiveError(f"{source}: a zip archive; only tar archives (.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2) "
                               "and directories are read: unpack it and point the urls at the directory, or repack it "
                               "as .tar.gz")
    try:
        with open(source, "rb") as raw, tqdm(total=source.stat().st_size, unit="B", unit_scale=True,
                                             desc=desc) as bar:
            stream = _decompressed(io.BufferedReader(_ProgressReader(raw, bar)))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = safe_name(member, source)
                    if member.isdir():
                        yield name + "/", None
                    else:
                        yield name, lambda m=member: _guarded(source, lambda: tar.extractfile(m).read())
            # tarfile stops at the end-of-archive block; reading on to the end makes
            # gzip / bz2 / xz check their CRC, so a flipped bit cannot pass unnoticed.
            while stream.read(1 << 20):
                pass
    except READ_ERRORS as e:
        _corrupt(source, e)


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
    classes = [line.strip() for line in blobs[CIFAR10_BIN_META].decode().splitlines() if line.strip()]
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

    Grey, palette, CMYK and opaque-alpha images are converted (one right
    answer, reported by the caller); transparent pixels and modes deeper than
    8 bits are refused, since a background or a scaling would be our guess.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            if mode == "RGB":
                return np.asarray(im, dtype=np.uint8), None
            if mode not in RGB_CONVERTIBLE:
                raise ArchiveError(f"{where}: image mode is {mode}, which has no single 8-bit RGB form (e.g. "
                                   "16-bit or float); save it as 8-bit RGB with the scaling you want")
            if im.has_transparency_data and im.convert("RGBA").getchannel("A").getextrema()[0] < 255:
                raise ArchiveError(f"{where}: image mode is {mode} with transparent pixels; flatten it onto the "
                                   "background you want and save it as RGB (e.g. PIL's Image.alpha_composite)")
            return np.asarray(im.convert("RGB"), dtype=np.uint8), mode
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ArchiveError(f"{where}: not a readable image ({e}); remove it from the dataset") from e


def parse_class_folders(source):
    """A class-folder dataset (train/<class>/*, test/<class>/*), as a directory or tar.

    Returns ({"train": (x, y), "test": (x, y)}, class names sorted by name,
    notes for info.json). Images must be of one size and convertible to RGB
    (see decode_image); every class in test must exist in train.
    """
    images = {"train": {}, "test": {}}  # split -> class -> [array]
    first_shape, converted = None, Counter()
    files = tqdm(iter_files(source, desc="dataset"), unit=" files", desc="decoding images", leave=False) \
        if Path(source).is_dir() else iter_files(source, desc="dataset")
    for name, read in files:
        parts = name.rstrip("/").split("/")
        hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
        in_split = [i for i, p in enumerate(parts) if p in images]
        if hidden or not in_split:
            continue
        i = in_split[-1]
        split, rest = parts[i], parts[i + 1:]
        if read is None:  # a directory: register empty classes so they are reported
            if len(rest) == 1:
                images[split].setdefault(rest[0], [])
            continue
        if len(rest) != 2:
            raise ArchiveError(f"{source}: {name} is not at {split}/<class>/<image>; "
                               "expected train/<class>/*.png|jpg and test/<class>/*")
        cls, filename = rest
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
    splits, classes = _stack_class_folders(images, source)
    return splits, classes, {"converted_to_rgb": dict(sorted(converted.items()))} if converted else {}


def _stack_class_folders(images, source):
    for split in images:
        if not images[split]:
            raise ArchiveError(f"{source}: no {split}/<class>/ folders found; expected train/<class>/* and "
                               "test/<class>/*")
        for cls, imgs in images[split].items():
            if not imgs:
                raise ArchiveError(f"{source}: class folder {split}/{cls} has no images")
    classes = sorted(images["train"])
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
