"""Benchmark: the ceiling of these cores for the arithmetic training is made of, a large matrix multiply.

A `--size` square matmul under the stages' thread plan (core.hardware), in float32 and in bfloat16, timed
`--repeats` times after one untimed call (tracing; core.profiling.time_calls); 2 size^3 FLOPs each. The training figures of
docs/performance.md read against it: a stage's FLOPs per second over this is how much of the machine it uses.

  python -m bench.gemm_peak [--size 4096] [--repeats 5]

Prints and writes bench/results/gemm_peak.json (medians and every run).
"""
import argparse
import statistics

from core import hardware
from core.io import write_json
from core.profiling import conditions, time_calls
from core.runtime import tf


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/results/gemm_peak.json")
    args = ap.parse_args()
    plan = hardware.configure(42)
    x = tf.random.stateless_normal((args.size, args.size), seed=(0, 0))
    result = {}
    # Reduced to one element so that fetching the result costs nothing beside the product it forces.
    multiply = tf.function(lambda ab: tf.reduce_sum(tf.cast(tf.matmul(*ab)[:1, :1], tf.float32)))
    for dtype in (tf.float32, tf.bfloat16):
        ab = (tf.cast(x, dtype), tf.cast(tf.transpose(x), dtype))
        times = time_calls(multiply, ab, args.repeats, warmup=1, desc=dtype.name)
        median = statistics.median(times)
        result[dtype.name] = {"gflop_per_s": round(2 * args.size ** 3 / median / 1e9, 1), "median_s": round(median, 4),
                              "runs_s": [round(t, 4) for t in times]}
        print(f"{dtype.name}: {result[dtype.name]['gflop_per_s']} GFLOP/s (median of {args.repeats})", flush=True)
    write_json(args.out, {"args": vars(args), "machine": plan, "conditions": conditions(), "matmul": result})


if __name__ == "__main__":
    main()
