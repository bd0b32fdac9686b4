"""Benchmark: how the pipeline's wall time grows with image size and with the
training-set size.

For each setting, sets the params in params.yaml (restored afterwards) and
runs every stage of dvc.yaml in order, timed by `bench.stages`.
Settings: each `--sizes` at the full training set, then each `--fractions`
(`cifar10.train_fraction`) at `--fraction-size` px. Run it in a scratch
clone whose params.yaml already points at the data (outputs are rewritten).

  python -m bench.growth --sizes 32 64 96 --fractions 0.25 0.5 --fraction-size 96 --repeats 1

Prints a markdown table and writes bench/results/growth.json.
"""
import argparse
import copy
from pathlib import Path

import yaml

from bench.stages import time_stages
from core.contracts import read_json
from core.io import write_json
from core.params import load as load_params


def with_params(params, settings):
    """A copy of params with dotted keys set: {"cifar10.train_fraction": 0.5}."""
    p = copy.deepcopy(params)
    for key, value in settings.items():
        *parents, last = key.split(".")
        section = p
        for part in parents:
            section = section[part]
        section[last] = value
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 96])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--fraction-size", type=int, default=96, help="image size (px) of the training-set runs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="bench/results/growth.json")
    args = ap.parse_args()
    stages = yaml.safe_load(open("dvc.yaml"))["stages"]
    original = Path("params.yaml").read_text()
    params = load_params("params.yaml")  # as DVC reads it (YAML 1.2)
    settings = [{"image_size": s, "cifar10.train_fraction": 1.0} for s in args.sizes]
    settings += [{"image_size": args.fraction_size, "cifar10.train_fraction": f} for f in args.fractions]
    results = []
    try:
        for setting in settings:
            Path("params.yaml").write_text(yaml.safe_dump(with_params(params, setting), sort_keys=False))
            runs, stats = time_stages(stages, list(stages), args.repeats)
            runs = {name: [r["wall_s"] for r in rs] for name, rs in runs.items()}
            median = {name: m["wall_s"] for name, m in stats.items()}
            train = read_json("metrics/train.json", "train")  # the phases' own fit times, last run
            phases = {k: train[k] for k in ("frozen_time_s", "fine_tune_time_s", "scratch_time_s") if k in train}
            results.append({"setting": setting, "runs_s": runs, "median_s": median, "total_s": sum(median.values()),
                            "train_phases_s": phases})
            print(f"{setting}: {results[-1]['total_s']:.0f} s", flush=True)
    finally:
        Path("params.yaml").write_text(original)
    write_json(args.out, {"args": vars(args), "model": params["model"], "results": results,
                          "epochs": {p: params["train"][p]["epochs"] for p in ("frozen", "fine_tune", "scratch")}})
    names = list(stages)
    print(f"\n| px | train fraction | {' | '.join(names)} | total (s) | train phases (s) |\n"
          f"|---|---|{'---|' * len(names)}---|---|")
    for r in results:
        s = r["setting"]
        cells = " | ".join(f"{r['median_s'][n]:.1f}" for n in names)
        phases = ", ".join(f"{k.removesuffix('_time_s')} {v:.0f}" for k, v in r["train_phases_s"].items())
        print(f"| {s['image_size']} | {s['cifar10.train_fraction']} | {cells} | {r['total_s']:.1f} | {phases} |")
    print(f"{params['model']}, medians of {args.repeats}")


if __name__ == "__main__":
    main()
