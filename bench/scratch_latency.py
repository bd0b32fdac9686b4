"""Benchmark: what basecnn's shipped model costs at batch 1, before and after issue 17, side by side.

Three float32 models with random weights (latency does not depend on their values), as the train stage ships
them (core.models.for_deployment): the VGG-style network before issue 17 (bench.scratch_recipes.old_trunk, its
256-unit head), the residual network alone, and the residual network with flip test-time augmentation (what
`train.scratch.flip_tta: true` ships). Each is timed by the profile stage's own function
(core.profiling.latency: compiled calls, one fixed uint8 image), alternated `--repeats` times.

  python -m bench.scratch_latency --runs 200 --repeats 3
Prints a markdown table of medians and writes bench/results/scratch_latency.json.
"""
import argparse
import statistics

from bench.scratch_recipes import old_trunk
from core import hardware, models
from core.io import write_json
from core.profiling import conditions, flops_per_image, latency


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/scratch_latency.json")
    args = ap.parse_args()
    hardware.configure(42)
    new = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 0, 0.0)[0]
    shipped = {
        "VGG-style (before issue 17)": models.for_deployment(models.build_model(old_trunk(), 10, 256, 0.3)[0]),
        "residual, single view": models.for_deployment(new),
        "residual, flip TTA (shipped)": models.for_deployment(new, flip_tta=True),
    }
    runs = {name: [] for name in shipped}
    for _ in range(args.repeats):
        for name, model in shipped.items():
            runs[name].append(latency(model, args.runs, warmup=10)[0])
    rows = {name: {"params": m.count_params(), "gflops": flops_per_image(m) / 1e9,
                   **{k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}}
            for name, m in shipped.items()}
    write_json(args.out, {"args": vars(args), "runs": runs, "medians": rows, "conditions": conditions()})
    print(f"| model | params | GFLOPs per image | batch-1 p50 (ms) | p90 (ms) | (medians of {args.repeats} x "
          f"{args.runs} calls)\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['params']:,} | {r['gflops']:.3f} | {r['latency_p50_ms']:.2f} | {r['latency_p90_ms']:.2f} |")


if __name__ == "__main__":
    main()
