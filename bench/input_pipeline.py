"""Benchmark: does the input pipeline keep the backbone busy?

For each backbone at one image size, side by side in one process:

  limit     the compiled network on one in-memory float tensor of the right
            shape: forward throughput with no input work at all (measured
            for the pooled backbone and for the full classifier)
  features  what the features stage does: uint8 CIFAR images -> tf.data
            batches -> the trunk's predict (it resizes and preprocesses inside)
  evaluate  what the evaluate stage does: the same pipeline, full classifier

and the ratio pipeline / limit (goal: at least 0.9). Random initial weights:
throughput does not depend on the weights' values.

  python -m bench.input_pipeline --size 96 --images 2048 --repeats 3
Prints a markdown table of medians and writes bench/results/input_pipeline.json.
"""
import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from core import hardware, models
from core.io import load_npz, write_json
from core.profiling import compiled_call, conditions, fixed_input
from core.pipeline import predict_images


def limit_ips(model, batch, n_images):
    """Images per second of the compiled model on one fixed tensor, `n_images` in batches of `batch`."""
    fn = compiled_call(model)
    x = tf.constant(fixed_input(model, batch))
    np.asarray(fn(x))  # trace and compile outside the timing
    steps = max(1, n_images // batch)
    start = time.perf_counter()
    for _ in range(steps):
        np.asarray(fn(x))
    return steps * batch / (time.perf_counter() - start)


def pipeline_ips(model, x, batch):
    predict_images(model, x[:batch], batch)  # trace outside the timing
    start = time.perf_counter()
    predict_images(model, x, batch)
    return len(x) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[n for n, e in models.REGISTRY.items() if e.two_phase])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--images", type=int, default=2048, help="the first N images of data/cifar10/train.npz")
    ap.add_argument("--batch", type=int, default=128, help="as params.yaml's features.batch_size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/input_pipeline.json")
    args = ap.parse_args()
    hardware.configure(42)
    x = load_npz("data/cifar10/train.npz")["x"][:args.images]  # any images: throughput does not depend on labels
    results = {}
    for name in args.models:
        size = models.input_size(name, args.size)
        pooled = models.build_trunk(name, x.shape[1:], size, "none")
        model, _ = models.build_model(pooled, 10, 256, 0.3)
        runs = {"limit": [], "features": [], "limit_classifier": [], "evaluate": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            runs["limit"].append(limit_ips(pooled, args.batch, len(x)))
            runs["features"].append(pipeline_ips(pooled, x, args.batch))
            runs["limit_classifier"].append(limit_ips(model, args.batch, len(x)))
            runs["evaluate"].append(pipeline_ips(model, x, args.batch))
        med = {k: statistics.median(v) for k, v in runs.items()}
        results[name] = {"size": size, "runs_ips": runs, "median_ips": med,
                         "features_of_limit": med["features"] / med["limit"],
                         "evaluate_of_limit": med["evaluate"] / med["limit_classifier"]}
    write_json(args.out, {"args": vars(args), "results": results, "conditions": conditions()})
    print("| backbone | px | limit (img/s) | features (img/s) | ratio | evaluate (img/s) | ratio |\n"
          "|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["median_ips"]
        print(f"| {name} | {r['size']} | {m['limit']:.0f} | {m['features']:.0f} | {r['features_of_limit']:.2f} | "
              f"{m['evaluate']:.0f} | {r['evaluate_of_limit']:.2f} |")
    print(f"medians of {args.repeats} runs, {len(x)} images, batch {args.batch}")


if __name__ == "__main__":
    main()
