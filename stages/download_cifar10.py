"""Stage download_cifar10: get CIFAR-10 (or a class-folder dataset) and write
data/cifar10/{train,val,test}.npz plus info.json (class names, counts)."""
from core import params as P
from core.archives import parse_cifar10_binary, parse_class_folders
from core.data import class_counts, split_stratified
from core.fetch import fetch_section
from core.io import atomic_dir, save_npz, write_json

PARSERS = {"binary": parse_cifar10_binary, "folders": parse_class_folders}


def main(params, out_dir="data/cifar10"):
    fmt = P.choice(params, "cifar10.format", list(PARSERS))
    if not P.sources(params, "cifar10.urls"):
        raise P.ParamError("params.yaml: `cifar10.urls` is none; give the archive's URL or a local path")
    val_fraction = P.number(params, "cifar10.val_fraction", 0.01, 0.5)
    seed = P.number(params, "seed", integer=True)
    archive = fetch_section(params, "cifar10")

    splits, classes = PARSERS[fmt](archive)
    x, y = splits["train"]
    train, val = split_stratified(y, val_fraction, seed)
    splits = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": splits["test"]}

    with atomic_dir(out_dir) as tmp:
        for split, (x, y) in splits.items():
            save_npz(tmp / f"{split}.npz", x=x, y=y)
        write_json(tmp / "info.json", {
            "source": str(archive), "format": fmt, "classes": classes,
            "image_shape": list(splits["train"][0].shape[1:]),
            "counts": {split: class_counts(y, classes) for split, (_, y) in splits.items()},
        })
    for split, (x, _) in splits.items():
        print(f"{split}: {len(x):,} images")


if __name__ == "__main__":
    from core.cli import run
    run(main)
