"""Stage download_cifar10: get CIFAR-10 (or a class-folder dataset) and write
data/cifar10/{train,val,test}.npz plus info.json (class names, counts)."""
from core.params import ParamError, choice, sources, spec_number
from core.reads import resolve
from core.archives import parse_cifar10_binary, parse_class_folders
from core.data import class_counts, split_stratified
from core.fetch import fetch_section
from core.io import atomic_dir, save_npz, write_json

PARSERS = {"binary": parse_cifar10_binary, "folders": parse_class_folders}


def main(params, out_dir="data/cifar10"):
    params = resolve(params, "download_cifar10")  # checked; the only params this stage sees
    fmt = choice(params, "cifar10.format", list(PARSERS))
    if not sources(params, "cifar10.urls"):
        raise ParamError("params.yaml: `cifar10.urls` is none; give the archive's URL or a local path")
    val_fraction = spec_number(params, "cifar10.val_fraction")
    train_fraction = spec_number(params, "cifar10.train_fraction")
    seed = spec_number(params, "data_seed")
    archive = fetch_section(params, "cifar10")

    splits, classes, notes = PARSERS[fmt](archive)
    x, y = splits["train"]
    train, val = split_stratified(y, val_fraction, seed)
    if train_fraction < 1:  # a labelled-data budget: val and test stay whole, so figures stay comparable
        train = train[split_stratified(y[train], train_fraction, seed)[1]]
    # A tiny class can lose every training image to val (1 image at val_fraction 0.5) or to the budget.
    left = class_counts(y[train], classes)
    empty = [f"{c} ({n} image{'s' * (n != 1)})" for c, n in class_counts(y, classes).items() if not left[c]]
    if empty:
        raise ParamError(f"params.yaml: `cifar10.val_fraction` {val_fraction} and `cifar10.train_fraction` "
                         f"{train_fraction} leave no training image of {', '.join(empty)}; add training images, "
                         "lower val_fraction or raise train_fraction")
    splits = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": splits["test"]}

    with atomic_dir(out_dir) as tmp:
        for split, (x, y) in splits.items():
            save_npz(tmp / f"{split}.npz", x=x, y=y)
        write_json(tmp / "info.json", {
            "format": fmt, "classes": classes,
            "train_fraction": train_fraction,  # the labelled budget: train repeats the kept images (train.max_repeats)
            "image_shape": list(splits["train"][0].shape[1:]),
            "counts": {split: class_counts(y, classes) for split, (_, y) in splits.items()},
            **notes,
        })
    # Where the archive came from is not written: the same verified bytes from another mirror or path make
    # the same outputs, so DVC reruns nothing downstream.
    print(f"read {archive}")
    for split, (x, _) in splits.items():
        print(f"{split}: {len(x):,} images")
    if notes.get("converted_to_rgb"):
        modes = ", ".join(f"{n} of mode {mode}" for mode, n in notes["converted_to_rgb"].items())
        print(f"converted to RGB: {modes} (grey copied to R, G and B, palettes looked up, opaque alpha dropped; "
              "listed in info.json)")


if __name__ == "__main__":
    from core.cli import run
    run(main)
