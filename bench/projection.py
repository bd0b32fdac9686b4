"""Benchmark: how long would the five-model benchmark take at these params?

Running every backbone through the chain at the default 96 px and 5
fine-tuning epochs takes hours on 2 cores, so this measures each backbone's
rates on a few batches of real images, through the stages' own functions,
and projects each data-proportional step to the full CIFAR-10 split sizes:

  features   images/s of the frozen backbone (train + val, once)
  frozen     seconds per head epoch on cached features of the right width
  fine-tune  images/s of a training step with the top unfrozen and
             augmentation on, plus a val pass per epoch
  evaluate   images/s of the classifier (the test split)

Stage start-up, download and profile are fixed costs, not projected: take
them from `bench.stages`, which also times a whole measured run to check the
projection against.

  python -m bench.projection --size 96 --fine-tune-epochs 5 --images 1024
Prints a markdown table and writes bench/results/projection.json.
"""
import argparse
import time

import keras
import numpy as np

from bench.input_pipeline import pipeline_ips
from core import hardware, models
from core.io import load_npz, write_json
from core.params import load as load_params
from core.pipeline import augmenter, feature_batches, image_batches
from core.profiling import conditions
from core.training import fine_tune, train_head

SPLITS = {"train": 45000, "val": 5000, "test": 10000}  # CIFAR-10 at val_fraction 0.1


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch's training steps (the validation pass excluded)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_step = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = [*getattr(self, "seconds", []), self.last_step - self.began]


def rates(name, x, y, size, params):
    """Measured rates of one backbone at `size` px on images x, labels y, through the
    train stage's own recipe (core.training); each phase's second epoch is timed
    (the first traces the step functions)."""
    t = params["train"]
    pooled = models.build_trunk(name, x.shape[1:], size, "none")
    model, head = models.build_model(pooled, 10, t["head"]["units"], t["head"]["dropout"])
    batch = t["batch_size"]
    out = {"features_ips": pipeline_ips(pooled, x, batch)}
    f = np.random.default_rng(0).normal(size=(SPLITS["train"], pooled.output_shape[-1])).astype(np.float32)
    features = feature_batches(f, np.resize(y, len(f)), batch, shuffle_seed=0)
    times = EpochTimes()
    train_head(head, t["frozen"]["learning_rate"], features, features.take(1), 2, patience=2, callbacks=[times])
    out["frozen_epoch_s"] = times.seconds[1]
    augment = augmenter(seed=0, **t["augment"])
    images = image_batches(x, y, batch, shuffle_seed=0, augment=augment)
    times = EpochTimes()
    fine_tune(model, t["fine_tune"]["unfreeze_fraction"], t["fine_tune"]["learning_rate"], images, images.take(1), 2,
              patience=2, callbacks=[times])
    out["fine_tune_ips"] = len(x) / times.seconds[1]
    out["evaluate_ips"] = pipeline_ips(model, x, batch)
    return out


def project(r, frozen_epochs, fine_tune_epochs):
    """Seconds of the data-proportional work of the features, train and evaluate stages."""
    fine_tune_epoch = SPLITS["train"] / r["fine_tune_ips"] + SPLITS["val"] / r["evaluate_ips"]
    return {"features_s": (SPLITS["train"] + SPLITS["val"]) / r["features_ips"],
            "frozen_s": frozen_epochs * r["frozen_epoch_s"],
            "fine_tune_s": fine_tune_epochs * fine_tune_epoch,
            "evaluate_s": SPLITS["test"] / r["evaluate_ips"]}


def main():
    params = load_params("params.yaml")  # as DVC reads it (YAML 1.2)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[n for n, e in models.REGISTRY.items() if e.two_phase])
    ap.add_argument("--size", type=int, default=params["image_size"])
    ap.add_argument("--frozen-epochs", type=int, default=params["train"]["frozen"]["epochs"])
    ap.add_argument("--fine-tune-epochs", type=int, default=params["train"]["fine_tune"]["epochs"])
    ap.add_argument("--images", type=int, default=1024, help="the first N images of data/cifar10/train.npz")
    ap.add_argument("--out", default="bench/results/projection.json")
    args = ap.parse_args()
    hardware.configure(42)
    data = load_npz("data/cifar10/train.npz")
    x, y = data["x"][:args.images], data["y"][:args.images]
    results = {}
    for name in args.models:
        r = rates(name, x, y, models.input_size(name, args.size), params)
        p = project(r, args.frozen_epochs, args.fine_tune_epochs)
        results[name] = {"rates": r, "projected": p, "projected_total_s": sum(p.values())}
        keras.backend.clear_session()
    write_json(args.out, {"args": vars(args), "splits": SPLITS, "results": results, "conditions": conditions()})
    print(f"| backbone | features (img/s) | fine-tune (img/s) | features (min) | frozen (min) | "
          f"fine-tune x{args.fine_tune_epochs} (min) | evaluate (min) | total (min) |\n|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p = r["projected"]
        print(f"| {name} | {r['rates']['features_ips']:.0f} | {r['rates']['fine_tune_ips']:.0f} | "
              f"{p['features_s'] / 60:.1f} | {p['frozen_s'] / 60:.1f} | {p['fine_tune_s'] / 60:.1f} | "
              f"{p['evaluate_s'] / 60:.1f} | {r['projected_total_s'] / 60:.1f} |")
    print(f"{args.size} px, rates from {len(x)} images; projected to {SPLITS}")


if __name__ == "__main__":
    main()
