"""Benchmark: wall time and peak memory (RSS) of each pipeline stage.

Runs each stage's `cmd` from dvc.yaml in this directory with the current
params.yaml, `--repeats` times, one stage after another as DVC would, and
takes the peak RSS of the stage's process tree from the kernel (`wait4`), so
nothing is sampled and nothing is missed. Outputs are rewritten in place
exactly as `dvc repro --force` would, but dvc.lock is not touched: run it in
a scratch clone (or run `dvc commit` afterwards).

  python -m bench.stages --repeats 3 [--stages download_cifar10 train ...]

Prints a markdown table of medians and writes bench/results/stages.json.
"""
import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from core.io import write_json
from core.params import load as load_params


def run_stage(cmd):
    """(wall seconds, peak RSS in MB) of one run of a stage command; exits if the stage fails."""
    argv = shlex.split(cmd)
    if argv[0] == "python":
        argv[0] = sys.executable  # this venv's interpreter, as `make` puts it first on PATH
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would block the stage
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            sys.exit(f"{cmd} failed:\n{log.read()[-2000:]}")
    return seconds, usage.ru_maxrss * 1024 / 1e6  # Linux reports KiB


def time_stages(stages, names, repeats):
    """Each named stage's command run `repeats` times in order: (runs, medians), each
    per stage a list of / one {"wall_s", "peak_rss_mb"}."""
    runs = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:  # in pipeline order, so each stage reads what the previous one wrote
            seconds, rss_mb = run_stage(stages[name]["cmd"])
            runs[name].append({"wall_s": seconds, "peak_rss_mb": rss_mb})
            print(f"{name}: {seconds:.1f} s, peak RSS {rss_mb:.0f} MB", flush=True)
    median = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    return runs, median


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", nargs="+", help="default: every stage of dvc.yaml, in its order")
    ap.add_argument("--out", default="bench/results/stages.json")
    args = ap.parse_args()
    stages = yaml.safe_load(open("dvc.yaml"))["stages"]
    names = args.stages or list(stages)
    params = load_params("params.yaml")  # as DVC reads it (YAML 1.2)
    runs, median = time_stages(stages, names, args.repeats)
    conditions = {"cpu": platform.processor() or platform.machine(), "usable_cores": len(os.sched_getaffinity(0)),
                  "python": platform.python_version(), "repeats": args.repeats,
                  "params": {k: params[k] for k in ("model", "image_size", "weights")},
                  "epochs": {p: params["train"][p]["epochs"] for p in ("frozen", "fine_tune", "scratch")}}
    write_json(args.out, {"median": median, "runs": runs, "conditions": conditions})
    print(f"\n| stage | wall time (s, median of {args.repeats}) | peak RSS (MB, median) |\n|---|---|---|")
    for name, m in median.items():
        print(f"| {name} | {m['wall_s']:.1f} | {m['peak_rss_mb']:.0f} |")
    print(f"| total | {sum(m['wall_s'] for m in median.values()):.1f} | "
          f"{max(m['peak_rss_mb'] for m in median.values()):.0f} (max) |")
    print(conditions)


if __name__ == "__main__":
    main()
