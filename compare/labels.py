"""How many labels each backbone needs: the label-efficiency curve.

`make benchmark FRACTIONS="0.01 0.05 0.2 1"` runs every model at each labelled budget (`cifar10.train_fraction`,
a stratified share of each class of the training split; val and test stay whole) as the experiment
`<model>-f<F>`, and at 1 as `<model>`, the experiment the rest of the comparison ranks. The train stage
trains every budget for the same optimizer steps (train.max_repeats), so the curve measures the backbone, not
the schedule. From those experiments this module makes, per model and budget, the accuracies with their
intervals, the smallest budget reaching `compare.label_target` of the model's full-data accuracy, and what
each backbone buys over basecnn at the same budget (a paired interval on the same images).
"""
import math
import re

import pandas as pd

from compare.pairwise import SET_COLUMNS, model_scores, pairwise, with_intervals
from compare.table import (MCE_BASELINE, NA, RANK_SETS, SEED_SPREAD, comparison_table, fmt, markdown, runs_of)
from core import StageError
from core.params import check_number

BASELINE = MCE_BASELINE  # what each backbone's gain is measured against: the same network without transfer
ACCURACIES = list(SEED_SPREAD)  # val, test, CINIC-10, CIFAR-10-C mean
FRACTION_KEY = "cifar10.train_fraction"


def budget_name(model, fraction):
    """The experiment of `model` at labelled budget `fraction`: `<model>-f<F>`, and `<model>` at 1."""
    return model if float(fraction) == 1 else f"{model}-f{float(fraction):g}"


def check_fractions(fractions, overrides=()):
    """--fractions checked (each a train_fraction, 0.01 to 1), sorted, each once, with 1 added: the full-data
    point is the curve's reference (label_target) and the experiment the comparison ranks."""
    if any(o.replace(" ", "").startswith(f"{FRACTION_KEY}=") for o in overrides):
        raise StageError(f"--fractions sets {FRACTION_KEY} of each experiment; drop -S {FRACTION_KEY}=...")
    return sorted({check_number(f, "--fractions", 0.01, 1.0) for f in fractions} | {1.0})


def budgets(records, names):
    """{model: its labelled budgets, ascending} among the experiment names of `records`: `<model>-f<F>` (or
    `<model>-f<F>-seed<k>`), with 1 where `<model>` (or a seed of it) ran too. Only models with a budget
    below 1."""
    found = {}
    for record in records:
        name = str(record.get("Experiment"))
        for model in names:
            match = re.fullmatch(re.escape(model) + r"(?:-f([0-9.]+))?(?:-seed\d+)?", name)
            if match:
                fraction = float(match.group(1)) if match.group(1) else 1.0
                if 0 < fraction <= 1:
                    found.setdefault(model, set()).add(fraction)
    return {m: sorted(found[m]) for m in names if m in found and min(found[m]) < 1}


def label_rows(records, names, read, param_keys=()):
    """One row per (model, budget) with results: the comparison table's figures of the budget's experiments
    (means over their seeds), each accuracy's interval, labelled images per class, and the run names. A
    model's budgets must differ in train_fraction (and seed) only, or the curve would mix settings."""
    curve = budgets(records, names)
    runs = {budget_name(m, f): (m, f) for m, fractions in curve.items() for f in fractions}
    if not runs:
        return pd.DataFrame()
    groups = runs_of(records, list(runs), param_keys)
    for model in curve:
        mixed = [k for k in param_keys if k.removeprefix("params.yaml:") not in (FRACTION_KEY, "seed")
                 and len({str(r.get(k)) for name, (m, _) in runs.items() if m == model
                          for r in groups.get(name, [])}) > 1]
        if mixed:
            raise StageError(f"the budgets of {model} differ in {', '.join(mixed)}, not only in {FRACTION_KEY}: "
                             "the curve would mix settings; run `make benchmark FRACTIONS=...` again")
    table = comparison_table(records, list(runs), groups=groups)
    ok = list(table.index[table.status == "ok"])
    scores = model_scores({name: [read(r) for r in groups[name]] for name in ok})
    table = with_intervals(table, scores)
    table.insert(0, "model", [runs[n][0] for n in table.index])
    table.insert(1, "train_fraction", [runs[n][1] for n in table.index])
    per_class = {name: pd.to_numeric(pd.Series([r.get("train_images_per_class", r.get(
        "metrics/train.json:train_images_per_class")) for r in groups.get(name, [])]), errors="coerce").mean()
        for name in table.index}
    table.insert(2, "images_per_class", pd.Series(per_class))
    return table.loc[ok], scores


def gains(table, scores):
    """Per budget and backbone, what it buys over basecnn at the same budget on each set: the difference of
    accuracies (points) with its paired 95 % interval (same images; compare.pairwise)."""
    rows = []
    for fraction, at in table.groupby("train_fraction", sort=True):
        base = at.index[at.model == BASELINE]
        if not len(base):
            continue
        for name in at.index[at.model != BASELINE]:
            pairs, _ = pairwise({k: scores[k] for k in (name, base[0])}, [name, base[0]])
            for pair in pairs.itertuples():
                rows.append({"train_fraction": fraction, "images_per_class": at.images_per_class[name],
                             "model": at.model[name], "set": pair.set, "gain_pp": 100 * pair.difference,
                             "ci_low_pp": 100 * pair.ci_low, "ci_high_pp": 100 * pair.ci_high})
    return pd.DataFrame(rows, columns=["train_fraction", "images_per_class", "model", "set", "gain_pp", "ci_low_pp",
                                       "ci_high_pp"])


def reaching(table, column, target):
    """Per model, the smallest budget whose `column` accuracy is at least `target` x its full-data one: (budget
    row name or None, the full-data accuracy); NaN accuracies reach nothing."""
    out = {}
    for model, rows in table.groupby("model", sort=False):
        rows = rows.sort_values("train_fraction")
        full = rows[column][rows.train_fraction == 1]
        if not len(full) or math.isnan(full.iloc[0]):
            out[model] = (None, math.nan)
            continue
        enough = rows.index[rows[column] >= target * full.iloc[0]]
        out[model] = (enough[0] if len(enough) else None, full.iloc[0])
    return out
