"""Stage sample_cinic10: a seeded, class-balanced sample of the CINIC-10 test
split as an independent distribution-shift set: data/cinic10/sample.npz
(x, y, origin), manifest.csv (the archive member of every image), info.json."""
import numpy as np

from core.params import choice, sources, spec_number
from core.reads import resolve
from core.data import CIFAR10_CLASSES, CINIC_ORIGINS, class_counts, sample_cinic
from core.fetch import fetch_section
from core.io import atomic_dir, csv_text, save_npz, write_json, write_text

ORIGINS = {"imagenet": ["imagenet"], "cifar10": ["cifar10"], "all": sorted(CINIC_ORIGINS)}


def main(params, out_dir="data/cinic10"):
    params = resolve(params, "sample_cinic10")  # checked; the only params this stage sees
    urls = sources(params, "cinic10.urls")
    origin = choice(params, "cinic10.origin", list(ORIGINS))
    per_class = spec_number(params, "cinic10.per_class")
    seed = spec_number(params, "data_seed")
    if urls:
        archive = fetch_section(params, "cinic10")
        x, y, origins, members = sample_cinic(archive, per_class, ORIGINS[origin], seed)
    else:  # no shift set: downstream stages see zero images and say so
        x, y, origins, members = np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.uint8), np.zeros(0, "<U8"), []

    manifest = csv_text(["index", "member", "class", "origin"],
                        ((i, m, CIFAR10_CLASSES[c], o) for i, (m, c, o) in enumerate(zip(members, y, origins))))
    with atomic_dir(out_dir) as tmp:
        save_npz(tmp / "sample.npz", x=x, y=y, origin=origins)
        write_text(tmp / "manifest.csv", manifest)
        write_json(tmp / "info.json", {
            # Without a source, no setting of the sample is used: the same empty set whatever they say.
            "available": bool(urls), "split": "test", "origin": origin if urls else "none",
            "per_class": per_class if urls else 0,
            "classes": CIFAR10_CLASSES, "counts": class_counts(y, CIFAR10_CLASSES),
            "origin_counts": {o: int((origins == o).sum()) for o in sorted(set(origins.tolist()))},
        })
    print(f"CINIC-10 sample: {len(x):,} images" if urls else "CINIC-10: source is none; no shift set")


if __name__ == "__main__":
    from core.cli import run
    run(main)
