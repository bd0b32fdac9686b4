"""Benchmark: the frozen phase both ways on the same data and head.

  cached   run the frozen backbone over train and val once, train the head on the features
  in-loop  train the same head with the frozen backbone run on every step (the seed's way)

Run by hand (not a test), after the data stage:
  python -m bench.frozen_phase --model resnet50v2 --size 32 --train 5000 --val 1000 --epochs 10 --repeats 3
Prints a markdown table of medians and writes bench/results/frozen_phase.json.
"""
import argparse
import json
import statistics
import time

import keras

from core import hardware, models
from core.data import random_subset
from core.io import load_npz, write_json
from core.profiling import conditions
from core.pipeline import feature_batches, image_batches
from core.pipeline import predict_images
from core.training import fit, train_head


def run_once(args, train, val, cached):
    keras.utils.set_random_seed(args.seed)
    trunk = models.build_trunk(args.model, train["x"].shape[1:], args.size, "none")
    model, head = models.build_model(trunk, 10, args.units, args.dropout)
    start = time.perf_counter()
    if cached:
        ftrain = predict_images(trunk, train["x"], args.batch)
        fval = predict_images(trunk, val["x"], args.batch)
        extract_s = time.perf_counter() - start
        train_head(head, args.lr, feature_batches(ftrain, train["y"], args.batch, args.seed),
                   feature_batches(fval, val["y"], args.batch), args.epochs, patience=args.epochs)
    else:  # the seed's way, which the train stage does not do: the whole model fitted with its backbone frozen
        extract_s = 0.0
        models.compile_model(model, args.lr)
        fit(model, image_batches(train["x"], train["y"], args.batch, args.seed),
            image_batches(val["x"], val["y"], args.batch), args.epochs, patience=args.epochs)
    total_s = time.perf_counter() - start
    models.compile_model(model, args.lr)  # for evaluate only (cached: the head was trained on its own)
    _, val_accuracy = model.evaluate(image_batches(val["x"], val["y"], args.batch), verbose=0)
    return {"total_s": total_s, "extract_s": extract_s, "val_accuracy": val_accuracy}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--train", type=int, default=5000, help="training images (a seeded random N of data/cifar10/train.npz)")
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="bench/results/frozen_phase.json")
    args = ap.parse_args()
    plan = hardware.configure(args.seed)
    train, val = (random_subset(load_npz(f"data/cifar10/{s}.npz"), n, args.seed) for s, n in (("train", args.train),
                                                                                      ("val", args.val)))
    runs = {"cached": [], "in_loop": []}
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        for way in runs:
            runs[way].append(run_once(args, train, val, cached=way == "cached"))
    med = {way: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for way, rs in runs.items()}
    result = {"args": vars(args), "runs": runs, "median": med,
              "speedup": med["in_loop"]["total_s"] / med["cached"]["total_s"],
              "conditions": {**conditions(), "hardware_plan": plan, "weights": "none (random init)"}}
    write_json(args.out, result)
    print(f"| way | wall time (s, median of {args.repeats}) | of which feature extraction (s) | val accuracy |")
    print("|---|---|---|---|")
    for way, m in med.items():
        print(f"| {way} | {m['total_s']:.1f} | {m['extract_s']:.1f} | {m['val_accuracy']:.4f} |")
    print(f"\nspeedup (in-loop / cached): {result['speedup']:.1f}x  "
          f"({args.model}, {args.size} px, {args.train} train + {args.val} val images, {args.epochs} epochs)")
    print(json.dumps(result["conditions"]))


if __name__ == "__main__":
    main()
