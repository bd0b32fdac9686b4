"""Benchmark report: a lever against the exact way, two experiments of one repo run side by side.

A lever that changes arithmetic (bfloat16, cached frozen layers, ...) is kept only if the accuracy it gives
stays within the 95 % paired interval of the exact way's on the same images. This reads both experiments'
per-image predictions (data/predictions, as the comparison does), pairs them on each set both have, and prints
the difference with its paired bootstrap interval and McNemar p, beside the training times each recorded.

  python -m bench.levers --repo /path/to/clone --exact densenet121-exact --lever densenet121-bf16 [--sets val test]
"""
import argparse
import json

from compare.predictions import exp_predictions, scores
from compare.stats import paired
from core.io import write_json

TIMES = ("features_extract_s", "frozen_time_s", "fine_tune_time_s", "fine_tune_cache_time_s", "scratch_time_s")


def train_times(repo, rev):
    """The training figures an experiment recorded (metrics/train.json), with the features stage's extraction
    time (metrics/conditions/features.json)."""
    import dvc.api
    train = json.loads(dvc.api.read("metrics/train.json", repo=repo, rev=rev))
    steps = json.loads(dvc.api.read("metrics/conditions/features.json", repo=repo, rev=rev)).get("wall_s", {})
    extract = [steps[k] for k in ("extract_train", "extract_val") if k in steps]
    return {**train, **({"features_extract_s": round(sum(extract), 2)} if extract else {})}


def compare_sets(exact, lever, sets):
    """{set: paired figures of lever minus exact} on every set of `sets` both have, on the same images."""
    out = {}
    for name in sets:
        if name in exact and name in lever:
            (d_exact, s_exact), (d_lever, s_lever) = scores([exact[name]]), scores([lever[name]])
            if d_exact != d_lever:
                raise SystemExit(f"{name}: the two experiments were evaluated on different images")
            out[name] = {"exact": float(s_exact.mean()), "lever": float(s_lever.mean()), **paired(s_lever, s_exact)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=".")
    ap.add_argument("--exact", required=True, help="the exact way's experiment")
    ap.add_argument("--lever", required=True, help="the lever's experiment")
    ap.add_argument("--sets", nargs="+", default=["val", "test"])
    ap.add_argument("--out", default="bench/results/levers.json")
    args = ap.parse_args()
    import dvc.api
    revs = {r["Experiment"]: r["rev"] for r in dvc.api.exp_show(repo=args.repo) if r.get("Experiment")}
    exact, lever = (exp_predictions({"rev": revs[n], "Experiment": n}, args.repo) for n in (args.exact, args.lever))
    figures = compare_sets(exact, lever, args.sets)
    times = {n: train_times(args.repo, revs[n]) for n in (args.exact, args.lever)}
    for name, f in figures.items():
        print(f"{name}: exact {100 * f['exact']:.2f} %, lever {100 * f['lever']:.2f} %, lever - exact "
              f"{100 * f['difference']:+.2f} points [{100 * f['ci_low']:+.2f}, {100 * f['ci_high']:+.2f}], "
              f"McNemar p {f['mcnemar_p']:.3g}; within the interval: {f['ci_low'] <= 0 <= f['ci_high']}")
    for key in TIMES:
        if any(key in t for t in times.values()):
            print(f"{key}: " + ", ".join(f"{n} {t.get(key)}" for n, t in times.items()))
    write_json(args.out, {"repo": args.repo, "exact": args.exact, "lever": args.lever, "sets": figures,
                          "times": times})


if __name__ == "__main__":
    main()
