"""Compare the backbones' DVC experiments and recommend one under params.yaml's `compare` limits.

  python -m compare [NAME ...]     # experiments of HEAD named NAME; default: every backbone of core.registry

Reads each experiment's params and metrics with `dvc.api.exp_show` (the figures of `dvc exp show`), and what
they were measured under from its metrics/conditions/*.json (outputs, not metrics), and writes
reports/comparison.md (the conditions, the recommendation, the tables, the figures), reports/comparison.csv
(every column, "n/a" where not measured) with reports/comparison_conditions.csv beside it (each model's
weights, image size, data and shift sets), and in plots/compare/ the PNG figures and pareto.csv, declared as
DVC plots (`dvc plots show`). Prints the recommendation and why. Re-run it after changing `compare.*`:
nothing trains.
"""
import json
import os
from pathlib import Path

import pandas as pd

from compare import labels
from compare.figures import FIGURES, draw
from compare.pairwise import INTERVAL_COLUMNS, model_scores, p_text, pairwise, pairwise_csv, with_intervals
from compare.predictions import exp_predictions, record_rev
from compare.table import (COLUMNS, CONDITIONS, MCE_BASELINE, MODELS, NA, SEED_SPREAD, SET_TEXT, comparison_table,
                           conditions_text, constraints, explain, fmt, main_table, markdown, param_keys,
                           pareto_front, recommend, runs_of, tflite_table)
from core import StageError
from core.io import write_text


SIDECARS = ("train", "profile")  # the stages whose metrics/conditions/<stage>.json the comparison reads


def exp_records(repo=None):
    """HEAD's experiments as flat records, via DVC's own `exp show`, each with its conditions sidecars."""
    import dvc.api
    from dvc.exceptions import DvcException
    try:
        return [with_conditions(record, repo) for record in dvc.api.exp_show(repo=repo)]
    except DvcException as e:
        raise StageError(f"dvc exp show: {e}") from e


def with_conditions(record, repo=None):
    """The record with the top-level values of its experiment's metrics/conditions/<stage>.json (outputs DVC
    caches, read at the experiment's commit from the cache or a remote) as `conditions.<stage>.<key>`. A
    queued or failed experiment has none: its record is returned as it is."""
    import dvc.api
    from dvc.exceptions import DvcException
    rev = record_rev(record)
    extra = {}
    for stage in SIDECARS:
        try:
            sidecar = json.loads(dvc.api.read(f"metrics/conditions/{stage}.json", repo=repo, rev=rev))
        except (DvcException, OSError, ValueError):
            continue
        if isinstance(sidecar, dict):
            extra |= {f"conditions.{stage}.{k}": v for k, v in sidecar.items() if not isinstance(v, (dict, list))}
    return record | extra


MCE_NOTE = ("CIFAR-10-C: the 15 corruptions x 5 severities of Hendrycks & Dietterich (ICLR 2019), computed locally "
            "on a class-balanced subset of the test split (stage corrupt_cifar10). The drop is from the accuracy on "
            "the same images uncorrupted. mCE is the paper's mean corruption error, each corruption's error divided "
            f"by {MCE_BASELINE}'s (the paper divides by AlexNet's): 100 is as robust as {MCE_BASELINE}, "
            "lower is better.")


STATS_NOTE = ("Intervals are 95 %. An accuracy's is Wilson's for one run judged right or wrong per image; over "
              "several training seeds, and for CIFAR-10-C (each image's share of its corrupted versions right), a "
              "percentile bootstrap over the images and the seeds. A difference's is a paired bootstrap (the same "
              "images resampled for both models, 2,000 times, seeded), with the exact McNemar test on the images "
              "only one model gets right, for one run each (n/a otherwise: it tests two fixed classifiers). "
              "Over several seeds a model's score on an image is its share of seeds that get it right, so the "
              "difference is that of the seeds' mean accuracies.")


def pairwise_table(pairs):
    return markdown(["model a", "model b", "set", "images", "a (%)", "b (%)", "a − b (points) [95 % CI]",
                     "McNemar p"],
                    [[r.model_a, r.model_b, SET_TEXT[r.set], r.n, f"{100 * r.accuracy_a:.2f}",
                      f"{100 * r.accuracy_b:.2f}", f"{100 * r.difference:.2f} [{100 * r.ci_low:.2f}, "
                      f"{100 * r.ci_high:.2f}]", p_text(r.mcnemar_p)] for r in pairs.itertuples()])


def machines_text(ok):
    """Where the costs were measured, read from each experiment's conditions: one line when every model shares
    a machine, else each model's (experiments pulled from several machines), whose costs then compare only
    within a machine."""
    known = ok[ok.cpu.map(lambda c: isinstance(c, str) and c not in ("None", "!"))]
    if known.empty:
        return []
    machine = known.apply(lambda r: f"{r.cpu}, {fmt(r.usable_cores, '.0f')} usable core(s), TensorFlow "
                                    f"{r.tensorflow}", axis=1)
    if machine.nunique() == 1:
        return [f"Costs measured on {machine.iloc[0]}; sizes in MB of 10^6 bytes.", ""]
    return ["Costs measured on different machines, so latency, throughput, memory and training time compare only "
            "between models of the same machine: " + "; ".join(
                f"{m} on {machine[m]}" + (f", {known.date_utc[m]}" if isinstance(known.date_utc[m], str) else "")
                for m in machine.index) + ". Sizes in MB of 10^6 bytes.", ""]


def report_markdown(table, rec, figure_links, pairs, unpaired, label_section=()):
    """reports/comparison.md: the conditions and the recommendation first, then the tables (the label-efficiency
    section's lines, if any, last) and the figures."""
    ok = table[table.status == "ok"]
    out = ["# Backbone comparison", "", f"Conditions: {conditions_text(table)}.", ""]
    out += machines_text(ok)
    shared = ok.queue_workers[ok.queue_workers > 1]
    if len(shared):
        out += [f"Timed figures of {', '.join(shared.index)} were measured while {fmt(shared.max(), '.0f')} "
                "experiments ran at once (make benchmark JOBS=N): they shared the CPU, so their latency, "
                "throughput and training time are slower than on an idle host and compare only with each other. "
                "JOBS=1 times each model alone.", ""]
    if (ok.weights == "none").any():
        out += ["These runs used `weights: none` (random initialisation): backbone accuracies measure cost, "
                "not transfer quality.", ""]
    if (ok.seeds > 1).any():
        out += ["Models with several training seeds (same images, `data_seed`): each figure is the mean over "
                "the seeds, sd their standard deviation.", ""]
    out += ["## Recommendation", "", "```", explain(rec), "```", "",
            "## Accuracy and cost", "", main_table(table), MCE_NOTE, "",
            "## Paired comparisons", "", pairwise_table(pairs) if len(pairs) else
            "No pair of models has per-image predictions on the same images (data/predictions).", "",
            *(f"Not paired: {why}." for why in unpaired), STATS_NOTE, "",
            "## TFLite exports", "", tflite_table(table)]
    failed = table.status[table.status != "ok"]
    if len(failed):
        out += ["## Without results", "", *(f"- {m}: {s}; " + (
            f"its log: {', '.join(f'`dvc queue logs {e}`' for e in table.experiments[m].split(', '))}"
            if s == "failed" else "see `dvc queue status`") for m, s in failed.items()), ""]
    return "\n".join(out + [*label_section, "## Figures", "", *(f"![{title}]({link})" for link, title in figure_links)]) + "\n"


def pareto_csv(table, rec):
    """Model, costs and the ranked accuracy, drawn by `dvc plots show` (dvc.yaml declares it as a scatter).
    Only models with both figures: vega cannot place "n/a"."""
    shown = table[(table.status == "ok") & table.latency_p90_ms.notna() & table[rec.rank_by].notna()]
    front = pareto_front(shown, "latency_p90_ms", rec.rank_by)
    return pd.DataFrame({"latency_p90_ms": shown.latency_p90_ms.round(4), "size_mb": shown.size_mb,
                         "accuracy_pct": shown[rec.rank_by].round(4),
                         "accuracy_measure": rec.rank_by.removesuffix("_accuracy_pct"),
                         "on_latency_front": shown.index.isin(front)}).to_csv(na_rep=NA, lineterminator="\n")


SPREAD_COLUMNS = [f"{c.removesuffix('_pct')}_std_pp" for c in SEED_SPREAD]


def comparison_csv(table):
    """Every column, one row per model, with each accuracy's 95 % interval and seed spread; missing figures are
    "n/a" (pandas reads them as NaN)."""
    return table.reindex(columns=["status", *COLUMNS, *INTERVAL_COLUMNS, *SPREAD_COLUMNS]).round(4).to_csv(
        na_rep=NA, lineterminator="\n")


def label_efficiency(params, records, names, read, rank_by, out, plots, target):
    """The label-efficiency curve (compare/labels.py) if any model ran at a budget below 1: reports/
    label_efficiency.csv and label_gains.csv, its figure and DVC plot in `plots`; returns comparison.md's
    section (no lines without budgets)."""
    table, scores = labels.label_rows(records, names, read, param_keys(params))
    if table is None or table.empty:
        return []
    gains = labels.gains(table, scores)
    conditions = conditions_text(table, budgets=True)
    labels.draw(plots / labels.FIGURE, table, conditions)
    write_text(plots / "label_efficiency.csv", labels.plot_csv(table))
    write_text(out / "label_efficiency.csv", labels.label_csv(table))
    write_text(out / "label_gains.csv", gains.round(4).to_csv(index=False, na_rep=NA, lineterminator="\n"))
    print(f"wrote the label-efficiency curve of {len(set(table.model))} model(s) at {table.train_fraction.nunique()} "
          f"budget(s): {out}/label_efficiency.csv, label_gains.csv, {plots}/{labels.FIGURE}")
    link = os.path.relpath(plots / labels.FIGURE, out)
    return [*labels.section(table, gains, rank_by, target),
            f"![Accuracy by labelled images per class]({link})", ""]


def main(params, records, names=MODELS, out_dir="reports", plots_dir="plots/compare", read=exp_predictions,
         labels_dir=None):
    """The table of exp_show `records` (a model's training seeds averaged), each accuracy's interval and the
    paired comparisons from the experiments' per-image predictions (`read`: record -> {set: arrays}), the
    recommendation under params' `compare` settings, and the reports: tables in `out_dir`, figures in
    `plots_dir` (declared as DVC plots in dvc.yaml); with labelled budgets (make benchmark FRACTIONS=...), the
    label-efficiency curve in `labels_dir` (default: plots_dir's sibling `labels`)."""
    limits = constraints(params)  # checked before anything is written
    label_target = labels.target(params)
    runs = runs_of(records, names, param_keys(params))
    rows = comparison_table(records, names, groups=runs)
    if not (rows.status == "ok").any():
        raise StageError(f"no experiment named {', '.join(names)} has results at HEAD (see `dvc exp show`); "
                         "run `make benchmark` first")
    scores = model_scores({m: [read(r) for r in runs[m]] for m in rows.index[rows.status == "ok"]})
    rows = with_intervals(rows, scores)
    pairs, unpaired = pairwise(scores, names)
    rec = recommend(rows, limits, pairs)
    out, plots = Path(out_dir), Path(plots_dir)
    draw(plots, rows, rec, conditions_text(rows))
    write_text(plots / "pareto.csv", pareto_csv(rows, rec))
    write_text(out / "comparison.csv", comparison_csv(rows))
    write_text(out / "pairwise.csv", pairwise_csv(pairs))
    write_text(out / "comparison_conditions.csv", rows[["status", *CONDITIONS, "seeds", "seed", "experiments",
                                                        "cinic10", "cifar10c"]].to_csv(na_rep=NA, lineterminator="\n"))
    links = [(os.path.relpath(plots / name, out), title) for name, title in FIGURES]
    label_section = label_efficiency(params, records, names, read, rec.rank_by, out,
                                     Path(labels_dir) if labels_dir else plots.parent / "labels", label_target)
    write_text(out / "comparison.md", report_markdown(rows, rec, links, pairs, unpaired, label_section))
    print(explain(rec))
    print(f"\nwrote {out}/comparison.md, comparison.csv, pairwise.csv and comparison_conditions.csv, "
          f"{plots}/pareto.csv and {len(FIGURES)} figures")
    return rec
