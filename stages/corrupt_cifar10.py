"""Stage corrupt_cifar10: CIFAR-10-C, computed locally. Seeded, class-balanced subsets of the test split under
each of the 15 benchmark corruptions at severities 1..5: data/cifar10c/<name>.npz (x uint8 (5, N, H, W, 3), y,
index: each image's position in data/cifar10/test.npz) and info.json (the parameters at each severity, the data
seed). With `corruptions.distinct` (the default) each corruption has its own images, disjoint from the others':
the images, not the corrupted copies, are what the mean's interval counts, so 15 times as many images at the
same cost make it tighter (docs/data.md). Without it every corruption has the same images. `corruptions.per_class:
0` writes only info.json, saying so."""
import numpy as np
from tqdm import tqdm

from core.corruptions import (FAMILY, MEANING, NAMES, PARAMS, SEVERITIES, SIDE_PX, corrupt, frost_textures,
                              rng_for)
from core.params import ParamError, get, spec_number
from core.reads import resolve
from core.data import balanced_parts
from core.contracts import load_images, read_dataset_info
from core.io import atomic_dir, save_npz, write_json



def names_param(params):
    """corruptions.names: `all` or a list of the 15 names, kept in the paper's order."""
    value = get(params, "corruptions.names")
    if value == "all":
        return list(NAMES)
    if not isinstance(value, list) or not value:
        raise ParamError(f"params.yaml: `corruptions.names` must be all or a list of {', '.join(NAMES)}; "
                           f"got {value!r}")
    for name in value:
        if name not in NAMES:
            raise ParamError(f"params.yaml: `corruptions.names` has {name!r}; allowed: {', '.join(NAMES)}")
    return [n for n in NAMES if n in value]


def main(params, data_dir="data/cifar10", out_dir="data/cifar10c"):
    params = resolve(params, "corrupt_cifar10")  # checked; the only params this stage sees
    per_class = spec_number(params, "corruptions.per_class")
    names = names_param(params)
    seed = spec_number(params, "data_seed")
    if per_class == 0:
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / "info.json", {"available": False, "corruptions": [],
                                           "reason": "corruptions.per_class is 0: no corrupted images were made"})
        print("CIFAR-10-C: corruptions.per_class is 0; no corrupted images")
        return
    test = load_images(f"{data_dir}/test.npz", len(read_dataset_info(data_dir)["classes"]))
    if test["x"].shape[1:3] != (SIDE_PX, SIDE_PX):
        raise ParamError(f"{data_dir}/test.npz holds {test['x'].shape[2]}x{test['x'].shape[1]} images; CIFAR-10-C's "
                         f"parameters are for {SIDE_PX}x{SIDE_PX} px: set `corruptions.per_class: 0`")
    distinct = get(params, "corruptions.distinct")  # checked true/false by resolve
    # Distinct: every corruption of the 15 has its share, by its place in NAMES, so a corruption's images do not
    # depend on which others are selected.
    parts = balanced_parts(test["y"], per_class, len(NAMES) if distinct else 1, seed, "corruptions.per_class")
    indices = {name: parts[NAMES.index(name) if distinct else 0] for name in names}
    textures = frost_textures(rng_for(seed, "frost", 0)) if "frost" in names else None

    with atomic_dir(out_dir) as tmp, tqdm(total=len(names) * len(SEVERITIES), desc="CIFAR-10-C", unit="set") as bar:
        for name, index in indices.items():
            bar.set_postfix_str(name)
            x = test["x"][index]
            out = np.empty((len(SEVERITIES), *x.shape), np.uint8)
            for s in SEVERITIES:
                out[s - 1] = corrupt(x, name, s, rng_for(seed, name, s), textures)
                bar.update()
            save_npz(tmp / f"{name}.npz", x=out, y=test["y"][index], index=index)
        images = len(np.unique(np.concatenate(list(indices.values()))))
        write_json(tmp / "info.json", {
            "available": True, "source": "test.npz of the download_cifar10 stage", "data_seed": seed, "per_class": per_class,
            "distinct": distinct, "images": images, "images_per_corruption": len(index),
            "image_shape": list(x.shape[1:]), "corruptions": names,
            "reference": "make_cifar_c.py (Hendrycks & Dietterich, ICLR 2019), CIFAR parameters",
            "parameters": {n: {"family": FAMILY[n], "meaning": MEANING[n],
                               "severity": {str(s): PARAMS[n][s - 1] for s in SEVERITIES}} for n in names},
        })
    each = "its own" if distinct else "the same"
    print(f"CIFAR-10-C: {len(names)} corruptions x {len(SEVERITIES)} severities, each of {each} {len(index):,} test "
          f"images ({images:,} in all)")


if __name__ == "__main__":
    from core.cli import run
    run(main)
