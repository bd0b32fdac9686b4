"""Tiny datasets in the original archive layouts, built on the fly."""
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from core.data import CIFAR10_CLASSES


def add_bytes(tar, name, data, **info):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    for key, value in info.items():
        setattr(member, key, value)
    tar.addfile(member, io.BytesIO(data))


def png_bytes(pixels, mode=None):
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def random_images(rng, n, size=32):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def cifar10_records(x, y):
    """The CIFAR-10 binary format: per image, 1 label byte then the R, G, B planes."""
    return b"".join(bytes([label]) + img[:, :, 0].tobytes() + img[:, :, 1].tobytes() + img[:, :, 2].tobytes()
                    for img, label in zip(x, y))


def cifar10_binary(path, per_batch=20, n_test=20, seed=0, skip=(), extra=()):
    """Write a cifar-10-binary.tar.gz in the official layout; return what it holds.

    `skip` leaves members out (wrong layout); `extra` adds (name, bytes) members.
    """
    rng = np.random.default_rng(seed)
    # Cycle the labels so every class appears in every batch.
    batches = [(random_images(rng, per_batch), ((np.arange(per_batch) + i) % 10).astype(np.uint8)) for i in range(5)]
    test = (random_images(rng, n_test), (np.arange(n_test) % 10).astype(np.uint8))
    root = "cifar-10-batches-bin"
    members = {f"{root}/data_batch_{i + 1}.bin": cifar10_records(*b) for i, b in enumerate(batches)}
    members[f"{root}/test_batch.bin"] = cifar10_records(*test)
    members[f"{root}/batches.meta.txt"] = ("\n".join(CIFAR10_CLASSES) + "\n\n").encode()
    members[f"{root}/readme.html"] = b"<html></html>"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            if name not in skip:
                add_bytes(tar, name, data)
        for name, data in extra:
            add_bytes(tar, name, data)
    train_x = np.concatenate([x for x, _ in batches])
    train_y = np.concatenate([y for _, y in batches])
    return {"train": (train_x, train_y), "test": test}


def cinic_name(origin, k):
    return f"n{2000000 + k:08d}_{k}.png" if origin == "imagenet" else f"cifar10-train-{k}.png"


def cinic10(path, imagenet=6, cifar=3, splits=("train", "valid", "test"), order_seed=None, classes=CIFAR10_CLASSES):
    """Write a CINIC-10.tar.gz (split/class/name.png). Each image is filled with a
    value that identifies it; returns {member name: pixels}.

    `order_seed` shuffles the member order (the sample must not depend on it).
    """
    images, k = {}, 0
    for split in splits:
        for cls in classes:
            for origin, n in (("imagenet", imagenet), ("cifar10", cifar)):
                for _ in range(n):
                    pixels = np.full((32, 32, 3), (k * 7) % 256, np.uint8)
                    pixels[0, 0] = [k % 256, k // 256 % 256, len(images) % 251]
                    images[f"{split}/{cls}/{cinic_name(origin, k)}"] = pixels
                    k += 1
    names = list(images)
    if order_seed is not None:
        names = list(np.random.default_rng(order_seed).permutation(names))
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            add_bytes(tar, name, png_bytes(images[name]))
    return images


def class_folders(root, classes=("cat", "dog", "frog"), per_class=(6, 2), size=32, seed=0):
    """Write train/<class>/*.png and test/<class>/*.png under `root`; return the arrays
    in (split, class order, file name order)."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n in zip(("train", "test"), per_class):
        xs, ys = [], []
        for label, cls in enumerate(sorted(classes)):
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(random_images(rng, n, size)):
                Image.fromarray(img).save(folder / f"{i:04d}.png")
                xs.append(img)
                ys.append(label)
        expected[split] = (np.stack(xs), np.array(ys, np.uint8))
    return expected


def tar_directory(root, path):
    """Pack a directory's contents (not the directory itself) into a .tar.gz."""
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(Path(root).iterdir()):
            tar.add(item, arcname=item.name)
    return path


def with_extra_member(src, dst, name, data=b"", **info):
    """Copy the tar.gz `src` to `dst` with one more member (any type: `type=tarfile.SYMTYPE`, ...)."""
    with tarfile.open(src, "r:gz") as tar_in, tarfile.open(dst, "w:gz") as tar_out:
        for member in tar_in:
            tar_out.addfile(member, tar_in.extractfile(member) if member.isfile() else None)
        add_bytes(tar_out, name, data, **info)
    return dst


class _OpensFile:
    """Unpickling an instance calls open(path, "w"): the file's existence proves a pickle was loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def booby_trap(sentinel):
    """An object whose pickle creates `sentinel` when unpickled (and does nothing else)."""
    return _OpensFile(sentinel)


def booby_trapped_pickle(sentinel):
    import pickle
    return pickle.dumps(booby_trap(sentinel))


def cifar10_python(path, sentinel):
    """A tar.gz in the layout of CIFAR-10's *python* (pickle) release, every member a booby-trapped pickle."""
    trap = booby_trapped_pickle(sentinel)
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            add_bytes(tar, f"cifar-10-batches-py/{name}", trap)
    return path


def image_bytes(pixels, mode=None, fmt="PNG"):
    buf = io.BytesIO()
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(buf, format=fmt)
    return buf.getvalue()


def tiny_model():
    """A small compiled Keras model with fixed weights, the same in every process: each layer, the model and
    the optimizer are named (Keras numbers unnamed ones per process). Its layers share a dtype policy of
    its own, an object that config.json names by its memory address."""
    from core.runtime import keras
    policy = keras.DTypePolicy("float32")
    model = keras.Sequential([keras.Input((4,), name="x"),
                              keras.layers.Dense(3, activation="relu", dtype=policy, name="hidden"),
                              keras.layers.BatchNormalization(dtype=policy, name="norm"),
                              keras.layers.Dense(2, dtype=policy, name="out")], name="tiny")
    # Positive values: BatchNorm's moving variance among them.
    model.set_weights([np.linspace(0.1, 1, int(np.prod(w.shape)), dtype="float32").reshape(w.shape)
                       for w in model.weights])
    model.compile(keras.optimizers.SGD(name="sgd"), "mse")
    return model
