"""The comparison's figures (plots/compare/*.png, drawn by bench/compare.py), each stating its conditions."""
import math

from bench.comparison import LABELS, LIMITS, pareto_front
from core.io import atomic_path

FIGURES = (("accuracy_vs_latency.png", "Accuracy vs batch-1 latency p90, Pareto front"),
           ("accuracy_vs_size.png", "Accuracy vs size on disk, Pareto front"),
           ("generalisation_gap.png", "CIFAR-10 test vs CINIC-10 accuracy"),
           ("metrics_grid.png", "Every model on each metric"),
           ("clean_vs_corrupted.png", "Clean vs CIFAR-10-C mean corruption accuracy"))
GRID = ("val_accuracy_pct", "test_accuracy_pct", "cinic10_accuracy_pct", "corruption_accuracy_pct", "mce_pct",
        "latency_p90_ms", "throughput_ips", "size_mb", "peak_rss_mb", "params_m", "gflops_per_image", "train_time_s")
NOTE = {"color": "C3", "ha": "center", "va": "center", "fontsize": 11,  # a figure's "n/a for every model"
        "bbox": {"facecolor": "white", "edgecolor": "C3"}}


def draw(plots_dir, table, rec, conditions):
    """Every figure into `plots_dir`, its conditions as a footer on the picture and as the PNG's Description:
    a figure copied into a slide still says what it was measured under."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = table[table.status == "ok"]
    drawn = (tradeoff(plt, ok, "latency_p90_ms", rec, "max_latency_ms"),
             tradeoff(plt, ok, "size_mb", rec, "max_size_mb"), gap(ok), grid(ok), corruption(plt, ok))
    for fig, (name, _) in zip(drawn, FIGURES):
        fig.text(0.5, 0.005, f"Conditions: {conditions}", ha="center", va="bottom", fontsize=7, wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        with atomic_path(plots_dir / name) as tmp:
            fig.savefig(tmp, dpi=100, format="png", metadata={"Description": f"Conditions: {conditions}"})
        plt.close(fig)


def mark_missing(ax, frame):
    """n/a on the bars of `frame`'s NaN (pandas draws them as 0): an unmeasured figure must not read as 0."""
    for bars, column in zip(ax.containers, frame):
        for bar in (bar for bar, missing in zip(bars, frame[column].isna()) if missing):
            ax.text(bar.get_x() + bar.get_width() / 2, 0, "n/a", ha="center", va="bottom", fontsize=8)


def tradeoff(plt, ok, cost, rec, limit_key):
    """Ranked accuracy against one cost: the Pareto front filled and joined, the limit dashed, the pick starred."""
    shown = ok[[cost, rec.rank_by]].dropna()
    front = pareto_front(shown, cost, rec.rank_by)
    fig, ax = plt.subplots(figsize=(7, 5.9))
    for name, x, y in shown.itertuples():
        ax.scatter(x, y, s=60, zorder=3, edgecolors="C0", facecolors="C0" if name in front else "white")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    steps = shown.loc[front].sort_values(cost)
    ax.step(steps[cost], steps[rec.rank_by], where="post", lw=1,
            label="Pareto front (filled): no other model is both cheaper and more accurate")
    if rec.model in shown.index:
        ax.scatter(*shown.loc[rec.model], s=250, marker="*", color="C1", zorder=4, label=f"recommended: {rec.model}")
    if rec.limits[limit_key] is not None:
        ax.axvline(rec.limits[limit_key], ls="--", color="C3",
                   label=f"compare.{limit_key}: {rec.limits[limit_key]:g} {LIMITS[limit_key][2]}")
    if len(shown) and shown[cost].max() > 20 * shown[cost].min() > 0:
        ax.set_xscale("log")  # the backbones' costs span orders of magnitude
    if len(missing := ok.index.difference(shown.index, sort=False)):
        ax.text(0.01, 0.01, f"not plotted (n/a): {', '.join(missing)}", transform=ax.transAxes, fontsize=8)
    ax.set(xlabel=LABELS[cost], ylabel=LABELS[rec.rank_by],
           title=f"{LABELS[rec.rank_by][:-4]} vs {LABELS[cost].split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: never over a point
    return fig


def gap(ok):
    """CIFAR-10 test and CINIC-10 accuracy side by side per model, the drop written above."""
    accuracy = ok[["test_accuracy_pct", "cinic10_accuracy_pct"]].set_axis(["CIFAR-10 test", "CINIC-10 (shift)"], axis=1)
    ax = accuracy.plot.bar(width=0.8, rot=0, figsize=(8, 4.8), ylim=(0, 105), xlabel="", ylabel="accuracy (%)",
                           title="Generalisation gap: CIFAR-10 test vs CINIC-10 accuracy")
    mark_missing(ax, accuracy)
    for i, (drop, top) in enumerate(zip(ok.accuracy_drop_pp, accuracy.max(axis=1))):
        if not math.isnan(drop):
            ax.text(i, top + 1, f"{-drop:+.1f} pp", ha="center", fontsize=8)
    if ok.cinic10_accuracy_pct.isna().all():
        ax.text(0.5, 0.5, "CINIC-10 accuracy is n/a for every model:\nno shift set (cinic10.urls is none?)",
                transform=ax.transAxes, **NOTE)
    ax.legend(fontsize=8)
    return ax.figure


def corruption(plt, ok):
    """Accuracy on the CIFAR-10-C images uncorrupted (x) against the mean over the corruptions (y), one point
    per model with its drop and mCE: the farther below the diagonal, the more the corruptions cost it."""
    shown = ok.dropna(subset=["cifar10c_clean_accuracy_pct", "corruption_accuracy_pct"])
    fig, ax = plt.subplots(figsize=(7, 5.9))
    ax.plot([0, 100], [0, 100], ls="--", color="grey", lw=1, label="no drop (corrupted = clean)")
    ax.scatter(shown.cifar10c_clean_accuracy_pct, shown.corruption_accuracy_pct, s=60, zorder=3, color="C0")
    for name, r in shown.iterrows():
        mce = "" if math.isnan(r.mce_pct) else f", mCE {r.mce_pct:.0f}"
        ax.annotate(f"{name} (−{r.corruption_drop_pp:.1f} pp{mce})", (r.cifar10c_clean_accuracy_pct,
                    r.corruption_accuracy_pct), textcoords="offset points", xytext=(-6, -12), fontsize=8,
                    ha="right")  # right: clear of the edge
    if shown.empty:
        ax.text(0.5, 0.5, "CIFAR-10-C accuracy is n/a for every model:\nno corrupted images "
                "(corruptions.per_class is 0?)", transform=ax.transAxes, **NOTE)
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="accuracy on the CIFAR-10-C images uncorrupted (%)",
           ylabel=LABELS["corruption_accuracy_pct"],
           title="Clean vs corrupted: CIFAR-10-C, 15 corruptions x 5 severities")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def grid(ok):
    """One bar panel per metric, bars from zero, unit in each panel's title."""
    axes = ok[list(GRID)].plot.bar(subplots=True, layout=(-(-len(GRID) // 3), 3), figsize=(12.6, 13.1), rot=30,
                                   sharex=False, legend=False, color="C0", xlabel="", title=[LABELS[c] for c in GRID])
    for ax, column in zip(axes.ravel(), GRID):
        mark_missing(ax, ok[[column]])
        ax.title.set_fontsize(9)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xticks(ax.get_xticks(), ax.get_xticklabels(), ha="right")
        ax.grid(axis="y", alpha=0.3)
    return axes[0, 0].figure
