"""Compare the backbones' DVC experiments and recommend one under params.yaml's `compare` limits.

  python -m bench.compare [NAME ...]     # experiments of HEAD named NAME; default: the five backbones

Reads each experiment's metrics with `dvc.api.exp_show` (the figures of
`dvc exp show`) and writes reports/comparison.md (the recommendation, the
tables, the figures) and reports/comparison.csv (every column, "n/a" where not
measured), and in plots/compare/ the PNG figures and pareto.csv, declared as
DVC plots (`dvc plots show`). Prints the
recommendation and why. Re-run it after changing `compare.*`: nothing trains.
"""
import os
import sys
from pathlib import Path

from core import StageError
from core import compare as C
from core.io import atomic_path, csv_text, write_text

FIGURES = (("accuracy_vs_latency.png", "Accuracy vs batch-1 latency p90, Pareto front"),
           ("accuracy_vs_size.png", "Accuracy vs size on disk, Pareto front"),
           ("generalisation_gap.png", "CIFAR-10 test vs CINIC-10 accuracy"),
           ("metrics_grid.png", "Every model on each metric"),
           ("clean_vs_corrupted.png", "Clean vs CIFAR-10-C mean corruption accuracy"))
GRID = ("test_accuracy_pct", "cinic10_accuracy_pct", "corruption_accuracy_pct", "mce_pct", "latency_p90_ms", "throughput_ips", "size_mb", "peak_rss_mb",
        "params_m", "gflops_per_image", "train_time_s")


def exp_records(repo=None):
    """HEAD's experiments as flat records, via DVC's own `exp show`."""
    import dvc.api
    from dvc.exceptions import DvcException
    try:
        return dvc.api.exp_show(repo=repo)
    except DvcException as e:
        raise StageError(f"dvc exp show: {e}") from e


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    pyplot().close(fig)


def tradeoff_figure(path, rows, x, y, rec, limit_key):
    """Accuracy against one cost: the Pareto front filled and joined, the limit dashed, the pick starred."""
    plt = pyplot()
    ok = [(r["model"], r[x], r[y]) for r in rows if r["status"] == "ok"]
    shown = [p for p in ok if p[1] is not None and p[2] is not None]
    front = C.pareto_front(shown)
    fig, ax = plt.subplots(figsize=(7, 5.6))
    for name, cost, acc in shown:
        ax.scatter(cost, acc, s=60, zorder=3, edgecolors="C0", facecolors="C0" if name in front else "white")
        ax.annotate(name, (cost, acc), textcoords="offset points", xytext=(6, 4), fontsize=9)
    steps = sorted((p for p in shown if p[0] in front), key=lambda p: p[1])
    ax.step([p[1] for p in steps], [p[2] for p in steps], where="post", lw=1,
            label="Pareto front (filled): no other model is both cheaper and more accurate")
    for name, cost, acc in shown:
        if name == rec.model:
            ax.scatter(cost, acc, s=250, marker="*", color="C1", zorder=4, label=f"recommended: {name}")
    limit = rec.limits[limit_key]
    if limit is not None:
        ax.axvline(limit, ls="--", color="C3", label=f"compare.{limit_key}: {limit:g} {C.LIMITS[limit_key][2]}")
    if shown and max(p[1] for p in shown) > 20 * min(p[1] for p in shown) > 0:
        ax.set_xscale("log")  # the backbones' costs span orders of magnitude
    missing = [p[0] for p in ok if p not in shown]
    if missing:
        ax.text(0.01, 0.01, f"not plotted (n/a): {', '.join(missing)}", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel(C.BY_NAME[x].label)
    ax.set_ylabel(C.BY_NAME[y].label)
    ax.set_title(f"{C.BY_NAME[y].label.replace(' (%)', '')} vs {C.BY_NAME[x].label.split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: never over a point
    fig.tight_layout()
    save(fig, path)


def gap_figure(path, rows):
    """CIFAR-10 test and CINIC-10 accuracy side by side per model, the drop written above."""
    plt = pyplot()
    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = range(len(ok))
    for offset, column, label in ((-0.2, "test_accuracy_pct", "CIFAR-10 test"), (0.2, "cinic10_accuracy_pct",
                                                                                   "CINIC-10 (shift)")):
        values = [r[column] for r in ok]
        ax.bar([i + offset for i in xs], [float("nan") if v is None else v for v in values], width=0.4, label=label)
        for i, v in zip(xs, values):
            if v is None:
                ax.text(i + offset, 1, "n/a", ha="center", fontsize=8)
    for i, r in zip(xs, ok):
        if r["accuracy_drop_pp"] is not None:
            top = max(r["test_accuracy_pct"] or 0, r["cinic10_accuracy_pct"] or 0)
            ax.text(i, top + 1, f"{-r['accuracy_drop_pp']:+.1f} pp", ha="center", fontsize=8)
    if all(r["cinic10_accuracy_pct"] is None for r in ok):
        ax.text(0.5, 0.5, "CINIC-10 accuracy is n/a for every model:\nno shift set (cinic10.urls is none?)",
                transform=ax.transAxes, ha="center", va="center", fontsize=11, color="C3",
                bbox={"facecolor": "white", "edgecolor": "C3"})
    ax.set_xticks(list(xs), [r["model"] for r in ok])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Generalisation gap: CIFAR-10 test vs CINIC-10 accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def corruption_figure(path, rows):
    """Accuracy on the CIFAR-10-C images uncorrupted (x) against the mean over the corruptions (y), one point
    per model with its drop and mCE: the farther below the diagonal, the more the corruptions cost it."""
    plt = pyplot()
    shown = [r for r in rows if r["status"] == "ok" and r["cifar10c_clean_accuracy_pct"] is not None
             and r["corruption_accuracy_pct"] is not None]
    fig, ax = plt.subplots(figsize=(7, 5.6))
    ax.plot([0, 100], [0, 100], ls="--", color="grey", lw=1, label="no drop (corrupted = clean)")
    for r in shown:
        ax.scatter(r["cifar10c_clean_accuracy_pct"], r["corruption_accuracy_pct"], s=60, zorder=3, color="C0")
        mce = "" if r["mce_pct"] is None else f", mCE {r['mce_pct']:.0f}"
        ax.annotate(f"{r['model']} (−{r['corruption_drop_pp']:.1f} pp{mce})",
                    (r["cifar10c_clean_accuracy_pct"], r["corruption_accuracy_pct"]),
                    textcoords="offset points", xytext=(-6, -12), fontsize=8, ha="right")  # right: clear of the edge
    if not shown:
        ax.text(0.5, 0.5, "CIFAR-10-C accuracy is n/a for every model:\nno corrupted images "
                "(corruptions.per_class is 0?)", transform=ax.transAxes, ha="center", va="center", fontsize=11,
                color="C3", bbox={"facecolor": "white", "edgecolor": "C3"})
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("accuracy on the CIFAR-10-C images uncorrupted (%)")
    ax.set_ylabel(C.BY_NAME["corruption_accuracy_pct"].label)
    ax.set_title("Clean vs corrupted: CIFAR-10-C, 15 corruptions x 5 severities")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    save(fig, path)


def grid_figure(path, rows):
    """One bar panel per metric, bars from zero, unit in each panel's title."""
    plt = pyplot()
    ok = [r for r in rows if r["status"] == "ok"]
    cols = 3
    fig, axes = plt.subplots(-(-len(GRID) // cols), cols, figsize=(4.2 * cols, 3.2 * -(-len(GRID) // cols)),
                             squeeze=False)
    for ax in axes.ravel()[len(GRID):]:
        ax.axis("off")
    for ax, column in zip(axes.ravel(), GRID):
        values = [r[column] for r in ok]
        ax.bar(range(len(ok)), [float("nan") if v is None else v for v in values], color="C0")
        for i, v in enumerate(values):
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(ok)), [r["model"] for r in ok], rotation=30, ha="right", fontsize=8)
        ax.set_title(C.BY_NAME[column].label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save(fig, path)


def pareto_csv(rows, rec):
    """Model, costs and the ranked accuracy, drawn by `dvc plots show` (dvc.yaml declares it as a scatter). Only models with both figures: vega cannot place "n/a"."""
    shown = [r for r in rows if r["status"] == "ok" and r["latency_p90_ms"] is not None and r[rec.rank_by] is not None]
    front = C.pareto_front([(r["model"], r["latency_p90_ms"], r[rec.rank_by]) for r in shown])
    return csv_text(["model", "latency_p90_ms", "size_mb", "accuracy_pct", "accuracy_measure", "on_latency_front"],
                    ([r["model"], round(r["latency_p90_ms"], 4), C.NA if r["size_mb"] is None else r["size_mb"],
                      round(r[rec.rank_by], 4), rec.rank_by.replace("_accuracy_pct", ""), r["model"] in front]
                     for r in shown))


def main(params, records, names=C.MODELS, out_dir="reports", plots_dir="plots/compare"):
    """Rows from exp_show `records`, the recommendation under params' `compare` limits, and the reports:
    tables in `out_dir`, figures in `plots_dir` (declared as DVC plots in dvc.yaml)."""
    limits = C.constraints(params)  # checked before anything is written
    rows = C.rows(records, names)
    if not any(r["status"] == "ok" for r in rows):
        raise StageError(f"no experiment named {', '.join(names)} has results at HEAD (see `dvc exp show`); "
                         "run `make benchmark` first")
    rec = C.recommend(rows, limits)
    out, figs = Path(out_dir), Path(plots_dir)
    tradeoff_figure(figs / FIGURES[0][0], rows, "latency_p90_ms", rec.rank_by, rec, "max_latency_ms")
    tradeoff_figure(figs / FIGURES[1][0], rows, "size_mb", rec.rank_by, rec, "max_size_mb")
    gap_figure(figs / FIGURES[2][0], rows)
    grid_figure(figs / FIGURES[3][0], rows)
    corruption_figure(figs / FIGURES[4][0], rows)
    write_text(figs / "pareto.csv", pareto_csv(rows, rec))
    write_text(out / "comparison.csv", C.comparison_csv(rows))
    linked = [(os.path.relpath(figs / name, out), title) for name, title in FIGURES]  # links from the report
    write_text(out / "comparison.md", C.report_markdown(rows, rec, C.conditions(records, names), linked))
    print(C.explain(rec))
    print(f"\nwrote {out}/comparison.md and comparison.csv, {figs}/pareto.csv and {len(FIGURES)} figures")
    return rec


if __name__ == "__main__":
    from core.cli import run
    run(lambda params: main(params, exp_records(), tuple(sys.argv[1:]) or C.MODELS))
