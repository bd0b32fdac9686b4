"""Benchmark report: where each experiment's time went, per stage and per step, from what the stages recorded.

Every model stage writes the wall time of its steps and of its whole process (imports included) under `wall_s`
in metrics/conditions/<stage>.json (core.stage.Start.timed); train.json holds each phase's time. This reads them
from the experiments of a repo (after `make benchmark`, say) through DVC, and adds each experiment's wall time
as DVC saw it: from the previous experiment's creation to its own (the first from `--start`, the epoch second
the run began, so it carries the data stages), the stages' processes and what DVC did between them (the commit times DVC gives experiments).

  python -m bench.stage_times --repo /path/to/clone --start 1733390000 [--names basecnn mobilenetv2 ...]

Prints a markdown table (seconds) and writes bench/results/stage_times.json.
"""
import argparse
import json
import subprocess

from core.io import write_json

STAGES = ("features", "train", "evaluate", "profile")
# (column, stage, wall_s step or a metrics/train.json key): the steps the table splits each stage into.
COLUMNS = (
    ("features: extract", "features", ("extract_train", "extract_val")),
    ("phase 1", "train", "frozen_time_s"),
    ("phase 2 / scratch", "train", ("fine_tune_time_s", "scratch_time_s")),
    ("phase 2: of which the view cache", "train", "fine_tune_cache_time_s"),
    ("evaluate: val, test", "evaluate", "sets"),
    ("evaluate: CIFAR-10-C", "evaluate", "cifar10c"),
    ("profile: Keras latency + throughput", "profile", ("latency", "throughput")),
    ("profile: FLOPs", "profile", "flops"),
    ("profile: TFLite fp32", "profile", "tflite_fp32"),
    ("profile: TFLite fp16", "profile", "tflite_fp16"),
    ("profile: TFLite int8", "profile", "tflite_int8"),
)


def read_json(path, repo, rev):
    import dvc.api
    from dvc.exceptions import DvcException
    try:
        return json.loads(dvc.api.read(path, repo=repo, rev=rev))
    except (DvcException, OSError, ValueError):
        return {}


def experiment_times(repo, rev):
    """{stage: {step: seconds}} of one experiment, and its train metrics."""
    steps = {stage: read_json(f"metrics/conditions/{stage}.json", repo, rev).get("wall_s", {}) for stage in STAGES}
    return steps, read_json("metrics/train.json", repo, rev)


def seconds(steps, train, stage, keys):
    keys = (keys,) if isinstance(keys, str) else keys
    source = train if stage == "train" else steps[stage]
    found = [source[k] for k in keys if k in source]
    return round(sum(found), 1) if found else None


def commit_time(repo, rev):
    """The epoch second an experiment's commit was made (`dvc exp show` gives only a clock time)."""
    return float(subprocess.run(["git", "log", "-1", "--format=%ct", rev], cwd=repo, capture_output=True, text=True,
                                check=True).stdout)


def rows(records, repo, start, names=None, created=commit_time):
    """One row per experiment (oldest first): its columns, each stage's whole process, and its wall time."""
    done = sorted((r for r in records if r.get("Experiment") and r.get("State", "Success") == "Success"
                   and (names is None or r["Experiment"] in names)), key=lambda r: created(repo, r["rev"]))
    out, previous = [], start
    for record in done:
        steps, train = experiment_times(repo, record["rev"])
        created_s = created(repo, record["rev"])
        row = {"model": record["Experiment"], **{c: seconds(steps, train, s, k) for c, s, k in COLUMNS},
               **{f"{s} process": steps[s].get("process") for s in STAGES}}
        row["stages"] = round(sum(steps[s].get("process", 0) for s in STAGES), 1)
        row["experiment wall"] = round(created_s - previous, 1) if previous is not None else None
        previous = created_s
        out.append(row)
    return out


def markdown(table):
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=".")
    ap.add_argument("--start", type=float, help="epoch seconds the benchmark began (date +%%s)")
    ap.add_argument("--names", nargs="+", help="experiments to table (default: every successful one)")
    ap.add_argument("--out", default="bench/results/stage_times.json")
    args = ap.parse_args()
    import dvc.api
    table = rows(dvc.api.exp_show(repo=args.repo), args.repo, args.start, args.names)
    print(markdown(table))
    write_json(args.out, {"repo": args.repo, "start": args.start, "rows": table})


if __name__ == "__main__":
    main()
