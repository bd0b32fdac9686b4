"""Dataset logic that needs no I/O: splits, CINIC-10 sampling, origins."""
import hashlib
import heapq
import re

import numpy as np

from core import StageError
from core.archives import ArchiveError, decode_image, iter_files

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# CINIC-10 names each image after its source: CIFAR-10 images as
# cifar10-<split>-<index>.png, ImageNet ones as n<synset>_<number>.png.
CINIC_ORIGINS = {
    "cifar10": re.compile(r"cifar10-(train|test)-\d+\.png"),
    "imagenet": re.compile(r"n\d+_\d+\.png"),
}


def split_stratified(y, fraction, seed):
    """Seeded stratified split of indices: (keep, held_out), each sorted.

    Each class gives fraction * its count, rounded half up, to `held_out`.
    """
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        held.append(rng.permutation(idx)[:int(fraction * len(idx) + 0.5)])
    held = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(y)), held)
    return keep, held


def random_subset(data, n, seed):
    """A seeded random `n` of a split's arrays, in stored order. Splits are stored
    class by class, so the first n would hold one or two classes."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(data["y"]))[:n])
    return {k: v[pick] for k, v in data.items()}


def class_counts(y, classes):
    return {c: int((y == i).sum()) for i, c in enumerate(classes)}


def cinic_origin(filename):
    for origin, pattern in CINIC_ORIGINS.items():
        if pattern.fullmatch(filename):
            return origin
    return None


def sample_key(seed, name):
    """A seeded pseudo-random key per member name, independent of archive order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


def sample_cinic(archive, per_class, origins, seed, split="test", classes=CIFAR10_CLASSES):
    """Sample `per_class` images of each class from one split of a CINIC-10 archive.

    One streaming pass, nothing extracted: each eligible member gets a seeded
    key from its name and the `per_class` smallest keys per class are kept (a
    uniform sample without replacement that does not depend on member order).
    Returns x, y, origin arrays and the sampled member names, sorted by
    (class, key).
    """
    kept = {c: [] for c in classes}  # class -> max-heap of (-key, name, bytes)
    available = {c: 0 for c in classes}
    seen_splits, tops = set(), {}
    for name, read in iter_files(archive, desc="CINIC-10 archive"):
        parts = name.rstrip("/").split("/")
        if len(parts) >= 3 and read is not None:
            seen_splits.add(parts[-3])
        if read is None or len(parts) < 3 or parts[-3] != split:
            continue
        # The split at the top or under one folder (CINIC-10/test/...), and only one such split: a copy deeper in
        # the tree (backup/old/test/...) would be sampled as if it were the test set.
        where = "/".join(parts[:-3])
        if len(parts) > 4 or where != tops.setdefault(split, where):
            raise ArchiveError(f"{archive}: {name}: a {split}/<class>/<image> member "
                               + (f"below {tops[split] or 'the top'}/ as well; one {split} split per archive"
                                  if len(parts) <= 4 else "deeper than one top-level folder")
                               + f"; CINIC-10 holds {split}/<class>/<image>, optionally under one folder: repack it")
        cls, filename = parts[-2], parts[-1]
        if cls not in kept:
            raise ArchiveError(f"{archive}: {name}: class {cls!r} is not a CIFAR-10 class ({', '.join(classes)})")
        origin = cinic_origin(filename)
        if origin is None:
            raise ArchiveError(f"{archive}: {name}: file name matches neither CINIC-10 pattern "
                               "(cifar10-<split>-<index>.png or n<synset>_<n>.png)")
        if origin not in origins:
            continue
        available[cls] += 1
        key = sample_key(seed, name)
        heap = kept[cls]
        if len(heap) < per_class:
            heapq.heappush(heap, (-key, name, read()))
        elif -heap[0][0] > key:
            heapq.heapreplace(heap, (-key, name, read()))
    if split not in seen_splits:
        raise ArchiveError(f"{archive}: no {split}/<class>/<image> members; not the CINIC-10 layout "
                           f"(splits found: {', '.join(sorted(seen_splits)) or 'none'})")
    short = {c: n for c, n in available.items() if n < per_class}
    if short:
        detail = ", ".join(f"{c}: {n}" for c, n in short.items())
        raise StageError(f"params.yaml: `cinic10.per_class` is {per_class} but the {split} split has fewer "
                         f"images of origin {'/'.join(sorted(origins))} for {detail}; lower per_class")
    rows = sorted((classes.index(c), -neg_key, name, data) for c, heap in kept.items() for neg_key, name, data in heap)
    x = np.zeros((len(rows), 32, 32, 3), np.uint8)
    for i, (*_, name, data) in enumerate(rows):
        image = decode_image(data, f"{archive}:{name}")[0]
        if image.shape != x.shape[1:]:
            raise ArchiveError(f"{archive}:{name}: image is {image.shape[1]}x{image.shape[0]}; CINIC-10 images are "
                               "32x32: not the CINIC-10 archive")
        x[i] = image
    y = np.array([label for label, *_ in rows], dtype=np.uint8)
    origin = np.array([cinic_origin(name.split("/")[-1]) for _, _, name, _ in rows], dtype="<U8")
    return x, y, origin, [name for _, _, name, _ in rows]


def balanced_subset(y, per_class, seed, key):
    """Sorted indices of a seeded `per_class` images of every class in `y`; a class with fewer
    stops with an error naming the params `key`."""
    return balanced_parts(y, per_class, 1, seed, key)[0]


def balanced_parts(y, per_class, parts, seed, key):
    """`parts` disjoint balanced subsets (sorted indices, `per_class` images of every class each), drawn from one
    seeded shuffle per class: part 0 is balanced_subset's. A class with fewer than per_class x parts images stops
    with an error naming the params `key`."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    need = per_class * parts
    if counts.min() < need:
        short = ", ".join(f"class {c}: {n}" for c, n in zip(classes, counts) if n < need)
        wanted = f"is {per_class}" if parts == 1 else f"is {per_class}, x {parts} disjoint sets = {need},"
        raise StageError(f"params.yaml: `{key}` {wanted} but the split has fewer images of {short}; lower it")
    drawn = [rng.permutation(np.flatnonzero(y == c))[:need] for c in classes]
    return [np.sort(np.concatenate([d[j * per_class:(j + 1) * per_class] for d in drawn])) for j in range(parts)]
