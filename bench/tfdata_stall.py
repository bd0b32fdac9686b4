"""Benchmark: does a fit end when its last step does?

One-epoch fits of BaseCNN on a fixed batch repeated (no input work), with
tf.data's autotuner on (TensorFlow's default) and off (core/pipeline.py),
alternated in one process. For each fit: wall time, and the time between the
last step and `fit` returning. On TensorFlow 2.21 the autotuner's thread,
which wakes 10, 20, 40, ... ms after an iterator starts, often held up the
iterator's teardown until its next wake-up: fits then ended at exactly
10 ms x (2^k - 1) after they began.

  python -m bench.tfdata_stall --fits 8
Prints a markdown table and writes bench/results/tfdata_stall.json.
"""
import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from core import hardware, models
from core.io import write_json
from core.profiling import conditions


class StepClock(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.last_step = time.perf_counter()


def timed_fit(model, ds):
    clock = StepClock()
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0, callbacks=[clock])
    end = time.perf_counter()
    return {"wall_s": end - start, "after_last_step_s": end - clock.last_step}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fits", type=int, default=8, help="fits per setting")
    ap.add_argument("--steps", type=int, default=64, help="steps per fit (batch 128)")
    ap.add_argument("--out", default="bench/results/tfdata_stall.json")
    args = ap.parse_args()
    hardware.configure(42)
    model = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 256, 0.3)[0]
    models.compile_model(model, 1e-3)
    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.integers(0, 256, (128, 32, 32, 3)).astype(np.uint8)),
             tf.constant(rng.integers(0, 10, 128).astype(np.uint8)))
    datasets = {}
    for autotune in (True, False):
        options = tf.data.Options()
        options.autotune.enabled = autotune
        datasets["on" if autotune else "off"] = tf.data.Dataset.from_tensors(batch).repeat(args.steps).with_options(options)
    model.fit(datasets["off"].take(2), epochs=1, verbose=0)  # trace outside the timing
    runs = {name: [] for name in datasets}
    for _ in range(args.fits):
        for name, ds in datasets.items():
            runs[name].append(timed_fit(model, ds))
    write_json(args.out, {"args": vars(args), "runs": runs, "conditions": conditions()})
    print("| tf.data autotuner | fits ending > 0.5 s after their last step | wall time per fit (s) | "
          "after the last step (s) |\n|---|---|---|---|")
    for name, rs in runs.items():
        late = sum(r["after_last_step_s"] > 0.5 for r in rs)
        walls = sorted(round(r["wall_s"], 2) for r in rs)
        tails = sorted(round(r["after_last_step_s"], 2) for r in rs)
        print(f"| {name} | {late} of {len(rs)} | {', '.join(map(str, walls))} | {', '.join(map(str, tails))} |")


if __name__ == "__main__":
    main()
