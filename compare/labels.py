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

from compare.pairwise import model_scores, pairwise, with_intervals
from compare.table import (MCE_BASELINE, NA, SEED_SPREAD, cells, comparison_table, fmt, markdown, runs_of,
                           unseeded, with_spread)
from core import StageError
from core.params import check_number, check_section

BASELINE = MCE_BASELINE  # what each backbone's gain is measured against: the same network without transfer
ACCURACIES = list(SEED_SPREAD)  # val, test, CINIC-10, CIFAR-10-C mean
FRACTION_KEY = "cifar10.train_fraction"


def target(params):
    """compare.label_target, checked (a share of the full-data accuracy, 0.01 to 1)."""
    return check_section(params, "compare")["compare.label_target"]


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
        name = unseeded(record.get("Experiment"))
        for model in names:
            match = re.fullmatch(re.escape(model) + r"(?:-f([0-9.]+))?", name)
            if match:
                fraction = float(match.group(1)) if match.group(1) else 1.0
                if 0 < fraction <= 1:
                    found.setdefault(model, set()).add(fraction)
    return {m: sorted(found[m]) for m in names if m in found and min(found[m]) < 1}


def label_rows(records, names, read, param_keys=()):
    """One row per (model, budget) with results, named by the budget's experiment: the comparison table's
    figures of its experiments (means over their seeds), each accuracy's interval and labelled images per
    class; and their per-image scores (compare.pairwise.model_scores). (None, {}) if no model ran at a budget
    below 1. A model's budgets must differ in train_fraction (and seed) only, or the curve would mix settings."""
    curve = budgets(records, names)
    runs = {budget_name(m, f): (m, f) for m, fractions in curve.items() for f in fractions}
    if not runs:
        return None, {}
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
    table = table.rename_axis("experiment")
    table.insert(0, "model", [runs[n][0] for n in table.index])
    table["train_fraction"] = [runs[n][1] for n in table.index]  # the budget the name says, which the params hold
    table.insert(2, "images_per_class", table.pop("train_images_per_class"))
    table["best_epoch_of_run"] = [epochs_text(groups.get(n, [])) for n in table.index]
    return table.loc[ok], scores


PHASES = ("scratch", "fine_tune", "frozen")  # the last phase a recipe trains first: its early stopping shipped


def epochs_text(runs):
    """`best/run` epochs of the last phase each run trained (`12/15`: the val loss was best at epoch 12 and
    stopped improving for the patience after it), one per seed: whether a small budget had converged."""
    out = []
    for r in runs:
        for phase in PHASES:
            run, best = (r.get(key, r.get(f"metrics/train.json:{key}")) for key in (f"{phase}_epochs",
                                                                                    f"{phase}_best_epoch"))
            if isinstance(run, (int, float)) and isinstance(best, (int, float)):
                out.append(f"{best:g}/{run:g}")
                break
    return " ".join(out) or NA


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


SET_LABELS = {"val_accuracy_pct": "CIFAR-10 val", "test_accuracy_pct": "CIFAR-10 test",
              "cinic10_accuracy_pct": "CINIC-10", "corruption_accuracy_pct": "CIFAR-10-C mean"}
CSV_COLUMNS = ["model", "train_fraction", "images_per_class", "seeds", *(
    c for a in ACCURACIES for c in (a, f"{a.removesuffix('_pct')}_ci_low_pct", f"{a.removesuffix('_pct')}_ci_high_pct",
                                    f"{a.removesuffix('_pct')}_std_pp")), "train_time_s", "best_epoch_of_run",
               "experiments"]
FIGURE = "label_efficiency.png"
WEIGHTS_NONE = ("weights none (random initialisation): the backbones transfer nothing, so only basecnn's curve "
                "is meaningful; the others show what each costs in labels without its ImageNet start")


def budget_text(row):
    return f"{fmt(row.images_per_class, ',.0f')} ({row.train_fraction:g})"


def section(table, gain_rows, rank_by, target):
    """The comparison's label-efficiency section (markdown lines): the table, the budget each model needs
    for `target` of its full-data accuracy on `rank_by`, and each backbone's gain over basecnn on test."""
    shown = [c for c in ACCURACIES if table[c].notna().any()]
    out = ["## Label efficiency", "",
           "Each model trained on a stratified share of each class of the training split (`cifar10.train_fraction`; "
           "val and test stay whole), every budget for the same optimizer steps (`train.max_repeats`: a small "
           "budget's images are passed over more often per epoch, so the schedule and early stopping are those "
           "of the full set). The last column is the last phase's: a best epoch before the last one run means "
           "the validation loss had stopped falling, so the budget was not cut short.", ""]
    if (table.weights == "none").any():
        out += [f"These runs used {WEIGHTS_NONE}.", ""]
    accuracy = with_spread(table, cells(table[ACCURACIES]))  # each with its interval and seed sd, as the main table
    out.append(markdown(["model", "labelled images per class (train_fraction)", "seeds",
                         *(f"{SET_LABELS[c]} (%) [95 % CI]" for c in shown), "training time (s)",
                         "best epoch / epochs run"],
                        [[row.model, budget_text(row), fmt(row.seeds, ".0f"), *accuracy.loc[name, shown],
                          fmt(row.train_time_s, ".0f"), row.best_epoch_of_run]
                         for name, row in table.sort_values(["model", "train_fraction"], kind="stable").iterrows()]))
    out += [f"The smallest budget reaching {100 * target:g} % of the model's full-data {SET_LABELS[rank_by]} "
            "accuracy (`compare.label_target`):", ""]
    for model, (name, full) in reaching(table, rank_by, target).items():
        if math.isnan(full):
            out.append(f"- {model}: no full-data run (train_fraction 1) to measure against")
        elif name is None or table.train_fraction[name] == 1:
            below = table[(table.model == model) & (table.train_fraction < 1)].sort_values("train_fraction")
            best = below.iloc[-1] if len(below) else None
            out.append(f"- {model}: only the full set ({100 * target:g} % of {full:.2f} % is {target * full:.2f} %"
                       + ("" if best is None else f"; {fmt(best.images_per_class, ',.0f')} images per class gave "
                                                  f"{fmt(best[rank_by])} %") + ")")
        else:
            row = table.loc[name]
            out.append(f"- {model}: {fmt(row.images_per_class, ',.0f')} images per class (train_fraction "
                       f"{row.train_fraction:g}), {row[rank_by]:.2f} % against {full:.2f} % on the full set")
    out.append("")
    test = gain_rows[gain_rows.set == "test"]
    if len(test):
        backbones = list(dict.fromkeys(test.model))
        by_budget = test.groupby("train_fraction", sort=True)
        out += [f"What each backbone buys over {BASELINE} at the same budget: CIFAR-10 test accuracy difference "
                "(points) [95 % paired interval, the same images]; every set's in reports/label_gains.csv.", "",
                markdown(["labelled images per class (train_fraction)", *backbones],
                         [[f"{fmt(rows.images_per_class.iloc[0], ',.0f')} ({fraction:g})", *(
                             next((f"{r.gain_pp:+.2f} [{r.ci_low_pp:+.2f}, {r.ci_high_pp:+.2f}]"
                                   for r in rows.itertuples() if r.model == b), NA) for b in backbones)]
                          for fraction, rows in by_budget])]
    return out


def label_csv(table):
    return table.reset_index(drop=True).reindex(columns=CSV_COLUMNS).round(4).to_csv(
        index=False, na_rep=NA, lineterminator="\n")


def plot_csv(table):
    """plots/labels/label_efficiency.csv, the DVC plot (template lines_by_model): one row per model and budget."""
    shown = table.dropna(subset=["images_per_class"]).sort_values(["model", "train_fraction"], kind="stable")
    return shown.reset_index(drop=True).reindex(columns=["model", "images_per_class", "train_fraction", *ACCURACIES]) \
        .round(4).to_csv(index=False, na_rep=NA, lineterminator="\n")


def draw(path, table, conditions):
    """Accuracy by labelled images per class (log scale), one line per model with its 95 % intervals, a panel
    per set measured; the conditions (and, for weights none, what the curves mean) as a footer."""
    from matplotlib.ticker import NullLocator

    from compare.figures import finish
    from core.io import atomic_path
    from core.plotting import pyplot
    plt = pyplot()
    shown = [c for c in ACCURACIES if table[c].notna().any()]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 4.8), squeeze=False)
    for ax, column in zip(axes[0], shown):
        stem = column.removesuffix("_pct")
        for i, (model, rows) in enumerate(table.groupby("model", sort=False)):
            rows = rows.dropna(subset=["images_per_class", column]).sort_values("images_per_class")
            low, high = rows[f"{stem}_ci_low_pct"], rows[f"{stem}_ci_high_pct"]
            err = (rows[column] - low).fillna(0).clip(lower=0), (high - rows[column]).fillna(0).clip(lower=0)
            ax.errorbar(rows.images_per_class, rows[column], yerr=err, marker="o", ms=4, capsize=3, lw=1.2,
                        color=f"C{i}", label=model)
        ax.set_xscale("log")
        # The budgets themselves as ticks, in plain numbers (matplotlib's log ticks are powers of 10 in mathtext).
        ticks = sorted(table.images_per_class.dropna().unique())
        ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(xlabel="labelled images per class (log scale)", ylabel="accuracy (%)", title=SET_LABELS[column])
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    note = f"{conditions}" + (f". {WEIGHTS_NONE[0].upper()}{WEIGHTS_NONE[1:]}" if (table.weights == "none").any()
                              else "")
    fig.suptitle("Accuracy by labelled images per class, 95 % intervals", fontsize=11)
    finish(fig, note)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Description": f"Conditions: {note}"})
    plt.close(fig)
