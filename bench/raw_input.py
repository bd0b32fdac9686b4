"""Benchmark: what taking raw images costs at batch 1 (resize + preprocessing inside the model).

Since the saved model takes the dataset's raw uint8 images, profile's
latency includes resizing them to `image_size` and the family's
preprocessing. Before, the model took images already resized and
preprocessed (in tf.data), so its latency left that work out. This builds
both forms of each model around the same layers and weights (random
initialisation: timing does not depend on the values) and times them
alternately in one process, as the profile stage does (compiled call, one
fixed input, warm-up excluded), medians over repeats:

  before  float32 (1, S, S, 3), already resized and preprocessed -> backbone -> pool -> head
  after   uint8 (1, 32, 32, 3) -> resize -> preprocess -> backbone -> pool -> head (models/model.keras)

  python -m bench.raw_input --size 96 --repeats 3
Prints a markdown table and writes bench/results/raw_input.json.
"""
import argparse
import statistics

import keras

from core import hardware, models
from core.io import write_json
from core.profiling import conditions, latency


def both_forms(name, size):
    """(before, after): the same backbone and head, fed preprocessed float images or raw uint8 ones."""
    after, _ = models.build_model(models.build_trunk(name, (32, 32, 3), size, "none"), 10, 256, 0.3)
    side = models.input_size(name, size)
    x = keras.Input((side, side, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(after.get_layer(models.BACKBONE)(x, training=False))
    return keras.Model(x, after.get_layer("head")(pooled)), after


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(models.REGISTRY))
    parser.add_argument("--size", type=int, default=96, help="image_size (px); basecnn always runs at 32")
    parser.add_argument("--runs", type=int, default=200, help="batch-1 calls timed per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/raw_input.json")
    args = parser.parse_args()
    hardware.configure(0)
    results = {}
    for name in args.models:
        forms = dict(zip(("before", "after"), both_forms(name, args.size)))
        runs = {form: [] for form in forms}
        for _ in range(args.repeats):
            for form, model in forms.items():
                runs[form].append(latency(model, args.runs, args.warmup)[0])
        results[name] = {form: {k: statistics.median(r[k] for r in runs[form]) for k in runs[form][0]}
                         for form in forms}
        results[name]["after_over_before_p50"] = (results[name]["after"]["latency_p50_ms"]
                                                  / results[name]["before"]["latency_p50_ms"])
    print("| model | px | before p50 (ms) | after p50 (ms) | before p90 (ms) | after p90 (ms) | after / before p50 |\n"
          "|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {models.input_size(name, args.size)} | {r['before']['latency_p50_ms']:.2f} | "
              f"{r['after']['latency_p50_ms']:.2f} | {r['before']['latency_p90_ms']:.2f} | "
              f"{r['after']['latency_p90_ms']:.2f} | {r['after_over_before_p50']:.2f} |")
    write_json(args.out, {"args": vars(args), "conditions": conditions(), "results": results})


if __name__ == "__main__":
    main()
