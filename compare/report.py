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

from compare.figures import FIGURES, draw
from compare.table import (COLUMNS, CONDITIONS, MCE_BASELINE, MODELS, NA, comparison_table, conditions_text,
                           constraints, explain, fmt, main_table, pareto_front, recommend, tflite_table)
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
    rev = None if record.get("rev") == "workspace" else record.get("rev")
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


def report_markdown(table, rec, figure_links):
    """reports/comparison.md: the conditions and the recommendation first, then the tables and the figures."""
    ok = table[table.status == "ok"]
    out = ["# Backbone comparison", "", f"Conditions: {conditions_text(table)}.", ""]
    cpu = ok.cpu.iloc[0]
    if isinstance(cpu, str) and cpu not in ("None", "!"):
        out += [f"Costs measured on {cpu}, {fmt(ok.usable_cores.iloc[0], '.0f')} usable core(s), "
                f"TensorFlow {ok.tensorflow.iloc[0]}; sizes in MB of 10^6 bytes.", ""]
    if (ok.weights == "none").any():
        out += ["These runs used `weights: none` (random initialisation): backbone accuracies measure cost, "
                "not transfer quality.", ""]
    out += ["## Recommendation", "", "```", explain(rec), "```", "",
            "## Accuracy and cost", "", main_table(table), MCE_NOTE, "", "## TFLite exports", "", tflite_table(table)]
    failed = table.status[table.status != "ok"]
    if len(failed):
        out += ["## Without results", "", *(f"- {m}: {s}; " + (f"its log: `dvc queue logs {m}`" if s == "failed" else
                                                            "see `dvc queue status`") for m, s in failed.items()), ""]
    return "\n".join(out + ["## Figures", "", *(f"![{title}]({link})" for link, title in figure_links)]) + "\n"


def pareto_csv(table, rec):
    """Model, costs and the ranked accuracy, drawn by `dvc plots show` (dvc.yaml declares it as a scatter).
    Only models with both figures: vega cannot place "n/a"."""
    shown = table[(table.status == "ok") & table.latency_p90_ms.notna() & table[rec.rank_by].notna()]
    front = pareto_front(shown, "latency_p90_ms", rec.rank_by)
    return pd.DataFrame({"latency_p90_ms": shown.latency_p90_ms.round(4), "size_mb": shown.size_mb,
                         "accuracy_pct": shown[rec.rank_by].round(4),
                         "accuracy_measure": rec.rank_by.removesuffix("_accuracy_pct"),
                         "on_latency_front": shown.index.isin(front)}).to_csv(na_rep=NA, lineterminator="\n")


def comparison_csv(table):
    """Every column, one row per model; missing figures are "n/a" (pandas reads them as NaN)."""
    return table[["status", *COLUMNS]].round(4).to_csv(na_rep=NA, lineterminator="\n")


def main(params, records, names=MODELS, out_dir="reports", plots_dir="plots/compare"):
    """The table of exp_show `records`, the recommendation under params' `compare` limits, and the reports:
    tables in `out_dir`, figures in `plots_dir` (declared as DVC plots in dvc.yaml)."""
    limits = constraints(params)  # checked before anything is written
    rows = comparison_table(records, names)
    if not (rows.status == "ok").any():
        raise StageError(f"no experiment named {', '.join(names)} has results at HEAD (see `dvc exp show`); "
                         "run `make benchmark` first")
    rec = recommend(rows, limits)
    out, plots = Path(out_dir), Path(plots_dir)
    draw(plots, rows, rec, conditions_text(rows))
    write_text(plots / "pareto.csv", pareto_csv(rows, rec))
    write_text(out / "comparison.csv", comparison_csv(rows))
    write_text(out / "comparison_conditions.csv", rows[["status", *CONDITIONS, "cinic10", "cifar10c"]].to_csv(
        na_rep=NA, lineterminator="\n"))
    links = [(os.path.relpath(plots / name, out), title) for name, title in FIGURES]
    write_text(out / "comparison.md", report_markdown(rows, rec, links))
    print(explain(rec))
    print(f"\nwrote {out}/comparison.md, comparison.csv and comparison_conditions.csv, {plots}/pareto.csv and "
          f"{len(FIGURES)} figures")
    return rec

