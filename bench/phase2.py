"""Benchmark: what bfloat16 and cached frozen layers buy the backbones' features and phase 2, side by side.

For each backbone, through the stages' own functions, on the same images in one process, alternating the ways
`--repeats` times: the features pass (core.pipeline.predict_images on the trunk), one phase-2 epoch as the
exact recipe runs it (core.training.fine_tune: the whole backbone on augmented images), and the cached recipe's
two parts (core.training.fine_tune_cached with one view: building the cache, then one epoch of the top), each in
float32 and in bfloat16 (the copy core.models.with_dtype_policy makes). Speed only: random weights and images
(a CNN's arithmetic does not depend on the pixel values); the accuracy of each lever is checked on real images
by full runs (bench/levers.py).

  python -m bench.phase2 --models resnet50v2 densenet121 --size 96 --images 1024 --repeats 3

Prints images per second (medians) and the projected phase-2 time at default params on the full training split,
and writes bench/results/phase2.json.
"""
import argparse
import statistics
import time

import numpy as np

from core import hardware, models, pipeline, training
from core.io import write_json
from core.params import load as load_params
from core.runtime import keras

POLICIES = ("float32", "mixed_bfloat16")


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


class EpochSeconds(keras.callbacks.Callback):
    """Each epoch's wall time: the second epoch's excludes the first's tracing and compilation."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def rates(name, size, n, batch, policy, fraction, augment):
    """Images per second of the features pass, a phase-2 epoch in the loop, the cache and a top-only epoch
    (the second of two epochs: the first traces and compiles)."""
    x, y = images(n)
    vx, vy = images(batch, seed=1)  # one val batch: the epochs' timing is the training's
    out = {}
    for way in ("features", "in_loop", "cached"):
        model, _ = models.build_model(models.build_trunk(name, (32, 32, 3), size, "none"), 10, 256, 0.3)
        net = model if policy == "float32" else models.with_dtype_policy(model, policy)
        if way == "features":
            trunk = type(net)(net.input, net.get_layer(models.POOL).output)
            pipeline.predict_images(trunk, x[:batch], batch)  # traced outside the timing
            start = time.perf_counter()
            pipeline.predict_images(trunk, x, batch)
            out["features_ips"] = n / (time.perf_counter() - start)
        elif way == "in_loop":
            epochs = EpochSeconds()
            training.fine_tune(net, fraction, 1e-5, pipeline.image_batches(x, y, batch, 0, augment),
                               pipeline.image_batches(vx, vy, batch), 2, 3, [epochs])
            out["in_loop_ips"] = n / epochs.seconds[-1]
        else:
            epochs = EpochSeconds()
            *_, cache_s = training.fine_tune_cached(
                net, fraction, 1e-5, (pipeline.image_batches(x, y, batch, None, augment), y),
                (pipeline.image_batches(vx, vy, batch), vy), 1, batch, 0, 1, 2, 3, [epochs])
            out["cache_ips"], out["top_ips"] = (n + batch) / cache_s, n / epochs.seconds[-1]  # cache: train + val
    return out


def project(r, train_images, epochs, views):
    """Seconds of phase 2 on the full split: the exact recipe, and the cached one with `views` views."""
    return {"exact_s": epochs * train_images / r["in_loop_ips"],
            "cached_s": views * train_images / r["cache_ips"] + epochs * train_images / r["top_ips"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2", "resnet50v2", "efficientnetb0", "densenet121"])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--out", default="bench/results/phase2.json")
    args = ap.parse_args()
    plan = hardware.configure(0)
    params = load_params("params.yaml")
    t = params["train"]
    augment = pipeline.augmenter(seed=0, **t["augment"])
    runs = {}
    for _ in range(args.repeats):
        for name in args.models:
            for policy in POLICIES:
                r = rates(name, args.size, args.images, t["batch_size"], policy, t["fine_tune"]["unfreeze_fraction"],
                          augment)
                runs.setdefault(f"{name} {policy}", []).append(r)
    table = {}
    print(f"| backbone | compute | features (img/s) | phase-2 epoch, exact (img/s) | cache (img/s per view) | "
          f"top epoch (img/s) | phase 2 projected, exact (s) | cached, {args.views} views (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for key, rs in runs.items():
        median = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        median.update(project(median, 45000, t["fine_tune"]["epochs"], args.views))
        table[key] = median
        name, policy = key.split()
        print(f"| {name} | {policy} | {median['features_ips']:.0f} | {median['in_loop_ips']:.0f} | "
              f"{median['cache_ips']:.0f} | {median['top_ips']:.0f} | {median['exact_s']:.0f} | "
              f"{median['cached_s']:.0f} |")
    write_json(args.out, {"args": vars(args), "machine": plan, "medians": table, "runs": runs})


if __name__ == "__main__":
    main()
