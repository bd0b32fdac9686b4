"""Every backbone through the whole chain as DVC experiments, then the comparison.

  python -m compare.benchmark [--models NAME ...] [--seeds N] [--fractions F ...] [--jobs N] [-S key=value ...]
                                                                                                 (`make benchmark`)

Queues `dvc exp run --queue -n <model> -S model=<model> [-S ...]` per model
(with `--seeds N`, N experiments per model, `<model>-seed<k>` with `-S seed=<k>`
for k = seed, seed + 1, ...: training randomness only, the images stay those
of `data_seed`; with `--fractions F ...`, each model at each labelled budget
`cifar10.train_fraction` F as `<model>-f<F>`, and at 1 as `<model>`: the
label-efficiency curve, compare/labels.py),
runs the queue one experiment at a time (`dvc exp run --run-all -j 1`: timed
figures must not share the CPU), or with `--jobs N` N at a time, each stage
sizing its threads to 1/N of the cores (BENCHMARK_WORKERS, core.hardware), and
follows its logs. Stages whose inputs did
not change between models (the data stages) are restored from DVC's run cache,
not run again. A model that fails leaves the others' results; its log
(`dvc queue logs <model>`) is shown and the command exits 1 after writing the
comparison of the rest (compare/report.py). Experiments of the same names on
this commit are replaced.
"""
import argparse
import os
import subprocess
import sys

from compare.report import exp_records
from compare.report import main as compare
from compare.labels import budget_name, check_fractions
from compare.table import MODELS, comparison_table, constraints, model_of, seed_name, unseeded
from core import WORKERS_ENV, StageError
from core.params import SEED_MAX

LOG_LINES = 40  # of a failed model's log shown here; `dvc queue logs <model>` has all of it


def dvc(*args, capture=True, env=None):
    # This interpreter's DVC, so the venv's is used however the command was started.
    return subprocess.run([sys.executable, "-m", "dvc", *args], text=True, capture_output=capture,
                          env=None if env is None else {**os.environ, **env})


def clear(names):
    """Remove earlier experiments of these models on this commit (`<model>` and `<model>-seed<k>`): `-n` refuses
    a name in use, `-f` would rerun every stage (the downloads too), and a seed left from an earlier run would
    be averaged with the new ones. Each `exp remove` drops one entry per name (an experiment and one queue
    entry), so it is repeated while entries of these models are left."""
    for _ in range(20):
        found = {r["Experiment"]: r.get("State") for r in exp_records() if model_of(r.get("Experiment"), names)}
        busy = [n for n, state in found.items() if state in ("Queued", "Running")]
        if busy:
            raise StageError(f"experiment(s) {', '.join(busy)} still queued or running (dvc queue status); "
                             "wait for them or remove them with `dvc queue kill` / `dvc queue remove`")
        if not found:
            return
        print(f"replacing this commit's earlier experiment(s): {', '.join(found)}", flush=True)
        result = dvc("exp", "remove", *found)
        if result.returncode:
            raise StageError(f"dvc exp remove {' '.join(found)}: {result.stderr.strip()}")
    raise StageError(f"could not remove the earlier experiments {', '.join(found)}; see `dvc exp show`")


def queue(name, model, overrides):
    result = dvc("exp", "run", "--queue", "-n", name, "-S", f"model={model}",
                 *(a for o in overrides for a in ("-S", o)))
    if result.returncode:
        raise StageError(f"could not queue {name}: {result.stderr.strip() or result.stdout.strip()}")


def training_seeds(params, overrides, n):
    """The `seed` of each of a model's n experiments: the one in effect (an `-S seed=` override, else
    params.yaml's), then the next ones; each as an override, with its experiment's name suffix."""
    if n == 1:
        return [("", [])]
    base = next((o.split("=", 1)[1] for o in reversed(overrides) if o.replace(" ", "").startswith("seed=")),
                params.get("seed"))
    try:
        base = int(float(base))
    except (TypeError, ValueError):
        raise StageError(f"--seeds needs an integer seed to count from, got seed {base!r}") from None
    if not 0 <= base <= SEED_MAX - n + 1:
        raise StageError(f"--seeds {n} from seed {base} leaves the seed range 0 to {SEED_MAX}")
    return [(k, [f"seed={k}"]) for k in range(base, base + n)]


def experiments(names, overrides, seeds, fractions=None):
    """[(experiment name, model, its -S settings)] in queue order: per model, per labelled budget (`fractions`:
    `<model>-f<F>`, `<model>` at 1; None: one, at params' train_fraction), per training seed (training_seeds:
    `-seed<k>` when there are several)."""
    budgets = [(1, [])] if fractions is None else [
        (f, [f"cifar10.train_fraction={float(f)!r}"]) for f in check_fractions(fractions, overrides)]
    return [(seed_name(budget_name(model, f), seed) if extra else budget_name(model, f), model,
             [*overrides, *budget, *extra]) for model in names for f, budget in budgets for seed, extra in seeds]


def log_tail(name):
    text = dvc("queue", "logs", name).stdout.replace("\r", "\n")  # progress bars redraw with \r
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-LOG_LINES:])


def main(params, names=MODELS, overrides=(), seeds=1, jobs=1, fractions=None):
    """`fractions`: the labelled budgets (cifar10.train_fraction) each model runs at, 1 always among them; None
    runs each model once, at params' train_fraction."""
    constraints(params)  # a bad compare.* stops here, before any training
    for flag, value in (("--seeds", seeds), ("--jobs", jobs)):
        if value < 1:
            raise StageError(f"{flag} must be 1 or more, got {value}")
    runs = experiments(names, overrides, training_seeds(params, list(overrides), seeds), fractions)
    groups = list(dict.fromkeys(unseeded(run) for run, _, _ in runs))  # a model at a budget, its seeds together
    clear(groups)
    for run, model, settings in runs:
        queue(run, model, settings)
    # Exits 0 even when an experiment failed: those are found below.
    # The queue workers inherit this environment, and so do the stages they run.
    if dvc("exp", "run", "--run-all", "-j", str(jobs), capture=False, env={WORKERS_ENV: str(jobs)}).returncode:
        raise StageError("dvc exp run --run-all failed (see above); `dvc queue status` shows what ran")
    records = exp_records()
    status = comparison_table(records, groups).status
    failed = list(status.index[status != "ok"])
    shown = set()
    for record in records:
        name = record.get("Experiment")
        if model_of(name, failed) and record.get("State") != "Success" and name not in shown:
            shown.add(name)
            print(f"\n=== {name} failed; last lines of `dvc queue logs {name}`:\n{log_tail(name)}\n", file=sys.stderr)
    if len(failed) < len(groups):
        compare(params, records, names)
    if failed:
        raise StageError(f"{len(failed)} of {len(groups)} failed: {', '.join(failed)} (logs above)")


if __name__ == "__main__":
    from core.cli import run
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, metavar="NAME")
    ap.add_argument("--seeds", type=int, default=1, metavar="N",
                    help="training seeds per model (experiments <model>-seed<k>; the images stay data_seed's)")
    ap.add_argument("--fractions", type=float, nargs="+", metavar="F",
                    help="labelled budgets (cifar10.train_fraction, 0.01 to 1; 1 is always run): each model at each, "
                         "<model>-f<F>, and the label-efficiency curve in the comparison")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="experiments run at once (DVC queue workers), each on 1/N of the cores; timed figures then "
                         "share the CPU")
    ap.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="key=value",
                    help="passed to every `dvc exp run` (as `dvc exp run -S`)")
    args = ap.parse_args()
    run(lambda params: main(params, tuple(args.models), args.overrides, args.seeds, args.jobs, args.fractions))
