"""Benchmark: is a training run bit-identical here, and how far do settings move it?

Trains BaseCNN as the train stage does (core.training.scratch_network and train_from_scratch,
seeded augmentation, op determinism) on the first `--images` training images
and prints one JSON line: sha256 of the final weights, the threads and oneDNN
settings in force, and, with `--against`, the relative L2 distance from the
weights another run saved with `--save`. Run it twice for bit-identity; vary
`taskset -c 0`, `TF_ENABLE_ONEDNN_OPTS=0` or `ONEDNN_MAX_CPU_ISA=AVX2` to see
what moves the weights (README, Reproducibility). After the data stage:

  python -m bench.determinism --save bench/results/determinism_ref.npz
  taskset -c 0 python -m bench.determinism --against bench/results/determinism_ref.npz
"""
import argparse
import hashlib
import json
import os

import numpy as np

from core import hardware, models
from core.io import load_npz
from core.params import load as load_params
from core.pipeline import augmenter, image_batches
from core.registry import REGISTRY
from core.training import scratch_network, train_from_scratch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2048, help="the first N images of data/cifar10/train.npz")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--save", help="write the final weights here (.npz)")
    ap.add_argument("--against", help="weights saved by another run with --save")
    args = ap.parse_args()
    params = load_params("params.yaml")
    t, seed = params["train"], params["seed"]
    plan = hardware.configure(seed)
    train, val = load_npz("data/cifar10/train.npz"), load_npz("data/cifar10/val.npz")
    x, y = train["x"][:args.images], train["y"][:args.images]
    augment = augmenter(seed=seed, **t["augment"])
    s = {**t["scratch"], "epochs": args.epochs}
    model = scratch_network(models.build_trunk("basecnn", x.shape[1:], 32, "none"), 10, s, plan,
                            REGISTRY["basecnn"].cpu_bfloat16, x)
    train_from_scratch(model, s, image_batches(x, y, t["batch_size"], seed, augment),
                       image_batches(val["x"][:1000], val["y"][:1000], t["batch_size"]), args.epochs)
    weights = model.get_weights()
    out = {"weights_sha256": hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()[:16],
           "images": len(y), "epochs": args.epochs, "intra_op_threads": plan["intra_op_threads"],
           **{k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}}
    if args.against:
        ref = list(load_npz(args.against).values())
        flat, ref_flat = (np.concatenate([w.ravel() for w in ws]).astype(np.float64) for ws in (weights, ref))
        out["relative_l2_from_against"] = float(np.linalg.norm(flat - ref_flat) / np.linalg.norm(ref_flat))
    if args.save:
        np.savez(args.save, *weights)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
