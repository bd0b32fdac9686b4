"""Benchmark: what one BaseCNN training epoch costs, by compute precision and
augmentation, to find where the from-scratch baseline's time goes.

Fits one epoch on the first `--images` training images through the train
stage's own pipeline (core/pipeline.py), for float32 and mixed_bfloat16
(bfloat16 compute, float32 weights: fast on CPUs with AMX or AVX512-BF16),
each with rotation + zoom (the default until issue 17), flip + translate (the
default since), and no augmentation; settings alternated, `--repeats` times.
(Its `translate` is bilinear; the pipeline's shifts by whole pixels.)

  python -m bench.scratch_epoch --images 8192 --repeats 3
Prints a markdown table of medians and writes bench/results/scratch_epoch.json.
"""
import argparse
import statistics
import time

import keras

from core import hardware, models, pipeline
from core.training import compile_from_scratch
from core.io import load_npz, write_json
from core.params import load as load_params
from core.profiling import conditions

AUGMENT = {
    "rotation + zoom (default)": lambda seed: pipeline.augmenter(True, 0.03, 0.1, seed),
    "flip + translate": lambda seed: keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed)]),
    "none": lambda seed: None,
}


def epoch_seconds(policy, augment, x, y, batch, scratch):
    keras.mixed_precision.set_global_policy(policy)
    model = models.build_model(models.build_trunk("basecnn", x.shape[1:], 32, "none"), 10, 256, 0.3)[0]
    ds = pipeline.image_batches(x, y, batch, shuffle_seed=42, augment=augment)
    # The train stage's optimizer and schedule (params.yaml's train.scratch).
    compile_from_scratch(model, {**scratch, "epochs": 1}, len(ds))
    model.fit(ds.take(2), epochs=1, verbose=0)  # trace outside the timing
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8192, help="the first N images of data/cifar10/train.npz")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/scratch_epoch.json")
    args = ap.parse_args()
    hardware.configure(42)
    scratch = load_params("params.yaml")["train"]["scratch"]
    data = load_npz("data/cifar10/train.npz")
    x, y = data["x"][:args.images], data["y"][:args.images]
    runs = {(p, a): [] for p in ("float32", "mixed_bfloat16") for a in AUGMENT}
    for _ in range(args.repeats):
        for policy, aug in runs:
            runs[policy, aug].append(epoch_seconds(policy, AUGMENT[aug](42), x, y, args.batch, scratch))
    keras.mixed_precision.set_global_policy("float32")
    median = {k: statistics.median(v) for k, v in runs.items()}
    write_json(args.out, {"args": vars(args), "conditions": conditions(),
                          "runs_s": [{"policy": p, "augment": a, "seconds": v} for (p, a), v in runs.items()]})
    base = median["float32", "rotation + zoom (default)"]
    print(f"| compute | augmentation | epoch on {len(x):,} images (s, median of {args.repeats}) | vs default |\n"
          "|---|---|---|---|")
    for (policy, aug), s in median.items():
        print(f"| {policy} | {aug} | {s:.2f} | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
