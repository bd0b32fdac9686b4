"""The comparison's figures (plots/compare/*.png, drawn by compare/report.py), each stating its conditions."""
import math

import numpy as np

from compare.table import LABELS, LIMITS, pareto_front
from core.io import atomic_path
from core.plotting import pyplot

FIGURES = (("accuracy_vs_latency.png", "Accuracy vs batch-1 latency p90, Pareto front"),
           ("accuracy_vs_size.png", "Accuracy vs size on disk, Pareto front"),
           ("generalisation_gap.png", "CIFAR-10 test vs CINIC-10 accuracy"),
           ("metrics_grid.png", "Every model on each metric"),
           ("clean_vs_corrupted.png", "Clean vs CIFAR-10-C mean corruption accuracy"))
GRID = ("val_accuracy_pct", "test_accuracy_pct", "cinic10_accuracy_pct", "corruption_accuracy_pct", "mce_pct",
        "latency_p90_ms", "throughput_ips", "size_mb", "peak_rss_mb", "params_m", "gflops_per_image", "train_time_s")
NOTE = {"color": "C3", "ha": "center", "va": "center", "fontsize": 11,  # a figure's "n/a for every model"
        "bbox": {"facecolor": "white", "edgecolor": "C3"}}
POINT_LABEL = "point-label"  # gid of a model's name beside its point: declutter() moves these apart
PAD_PX = 2.0  # least gap between a label and another label or marker, in pixels


def draw(plots_dir, table, rec, conditions):
    """Every figure into `plots_dir`, its conditions as a footer on the picture and as the PNG's Description:
    a figure copied into a slide still says what it was measured under."""
    plt = pyplot()
    ok = table[table.status == "ok"]
    drawn = (tradeoff(plt, ok, "latency_p90_ms", rec, "max_latency_ms"),
             tradeoff(plt, ok, "size_mb", rec, "max_size_mb"), gap(ok), grid(ok), corruption(plt, ok))
    for fig, (name, _) in zip(drawn, FIGURES):
        finish(fig, conditions)
        with atomic_path(plots_dir / name) as tmp:
            fig.savefig(tmp, dpi=100, format="png", metadata={"Description": f"Conditions: {conditions}"})
        plt.close(fig)


def finish(fig, conditions):
    """The conditions as a footer, the layout, then the point labels moved apart (on the final layout: where a
    label lands in pixels depends on the axes' size)."""
    fig.text(0.5, 0.005, f"Conditions: {conditions}", ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    declutter(fig)


def label_point(ax, text, xy, offset=(6, 4), **kwargs):
    """A model's name beside its point, in offset points: declutter() may move it, never the point."""
    kwargs = {"fontsize": 9, "ha": "left" if offset[0] >= 0 else "right", "va": "bottom"} | kwargs
    return ax.annotate(text, xy, textcoords="offset points", xytext=offset, gid=POINT_LABEL, **kwargs)


def marker_boxes(ax):
    """Each scatter marker's box in pixels, with its point in data coordinates (to tell a label its own)."""
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox
    boxes = []
    for collection in (c for c in ax.collections if isinstance(c, PathCollection)):
        sizes = collection.get_sizes()
        for i, xy in enumerate(collection.get_offsets()):
            r = math.sqrt(sizes[i % len(sizes)] if len(sizes) else 36) / 2 * ax.figure.dpi / 72
            (px, py), = ax.transData.transform([xy])
            boxes.append((tuple(map(float, xy)), Bbox.from_extents(px - r, py - r, px + r, py + r)))
    return boxes


def declutter(fig):
    """Moves the point labels (gid POINT_LABEL) of each axes apart, deterministically: a label past the axes'
    left or right edge goes to the other side of its point; then, from the lowest label up, a label on an
    earlier one or on another model's marker is pushed up (or down, if up leaves the axes) until clear, and
    joined to its point by a thin line. A label past the top or bottom goes below or above its point first. Labels and markers keep PAD_PX pixels between them."""
    renderer = fig.canvas.get_renderer()
    scale = 72 / fig.dpi  # pixels -> points

    def box(label):
        return label.get_window_extent(renderer)

    def hits(b, obstacles):
        return [o for o in obstacles if b.x0 < o.x1 + PAD_PX and o.x0 < b.x1 + PAD_PX and b.y0 < o.y1 + PAD_PX
                and o.y0 < b.y1 + PAD_PX]

    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL]
        if not labels:
            continue
        frame, markers = ax.get_window_extent(renderer), marker_boxes(ax)
        for label in labels:  # inside the axes: on the other side of the point if not
            b = box(label)
            if b.x1 > frame.x1 or b.x0 < frame.x0:
                dx, dy = label.xyann
                flipped = {"left": "right", "right": "left"}.get(label.get_ha(), label.get_ha())
                label.set_ha(flipped)
                label.xyann = (-dx, dy)
                if box(label).x1 > frame.x1 or box(label).x0 < frame.x0:  # wider than either side: back
                    label.set_ha({"left": "right", "right": "left"}[flipped])
                    label.xyann = (dx, dy)
            b = box(label)
            if b.y1 > frame.y1 or b.y0 < frame.y0:  # above or below the axes: the other side of the point
                dx, dy = label.xyann
                label.set_va("top" if b.y1 > frame.y1 else "bottom")
                label.xyann = (dx, -abs(dy) if b.y1 > frame.y1 else abs(dy))
        placed = []
        for label in sorted(labels, key=lambda t: (box(t).y0, box(t).x0, t.get_text())):
            obstacles = placed + [b for xy, b in markers if not all(map(math.isclose, xy, label.xy))]
            start = label.xyann
            tries = {}
            for direction in (1, -1):  # up, then down
                label.xyann = start
                for _ in range(4 * (len(obstacles) + 1)):
                    b, blocking = box(label), hits(box(label), obstacles)
                    if not blocking:
                        break
                    shift = (max(o.y1 for o in blocking) - b.y0 if direction > 0 else
                             min(o.y0 for o in blocking) - b.y1) + direction * (PAD_PX + 0.5)
                    label.xyann = (label.xyann[0], label.xyann[1] + shift * scale)
                b = box(label)
                inside = frame.y0 <= b.y0 and b.y1 <= frame.y1 and not hits(b, obstacles)
                tries[direction] = (not inside, abs(label.xyann[1] - start[1]), label.xyann)
            label.xyann = min(tries.values())[2]  # inside the axes first, then the shorter move
            placed.append(box(label))
            if label.xyann != start:  # moved off its point: a line says whose label it is
                ax.annotate("", label.xy, xytext=label.xyann, textcoords="offset points",
                            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": 3})


def mark_missing(ax, frame):
    """n/a on the bars of `frame`'s NaN (pandas draws them as 0): an unmeasured figure must not read as 0."""
    for bars, column in zip(ax.containers, frame):
        for bar in (bar for bar, missing in zip(bars, frame[column].isna()) if missing):
            ax.text(bar.get_x() + bar.get_width() / 2, 0, "n/a", ha="center", va="bottom", fontsize=8)


def interval(frame, column):
    """matplotlib's asymmetric error bars for `column` (an accuracy in %): (value - low, high - value) of each
    row's 95 % interval, 0 where it is not known; None if the column has no interval."""
    low, high = (frame.get(f"{column.removesuffix('_pct')}_ci_{end}_pct") for end in ("low", "high"))
    if low is None or high is None:
        return None
    return np.nan_to_num(np.array([frame[column] - low, high - frame[column]], dtype=float)).clip(0)


def error_bars(ax, x, frame, column):
    """The 95 % intervals of `column` drawn at positions `x`, if any is known; returns whether drawn."""
    err = interval(frame, column)
    if err is None or not err.any():
        return False
    ax.errorbar(x, frame[column], yerr=err, fmt="none", ecolor="0.3", elinewidth=1, capsize=3, zorder=2,
                label="95 % interval")
    return True


def tradeoff(plt, ok, cost, rec, limit_key):
    """Ranked accuracy against one cost: the Pareto front filled and joined, the limit dashed, the pick starred."""
    shown = ok[[cost, rec.rank_by]].dropna()
    front = pareto_front(shown, cost, rec.rank_by)
    fig, ax = plt.subplots(figsize=(7, 5.9))
    error_bars(ax, shown[cost], ok.loc[shown.index], rec.rank_by)
    for name, x, y in shown.itertuples():
        ax.scatter(x, y, s=60, zorder=3, edgecolors="C0", facecolors="C0" if name in front else "white")
        label_point(ax, name, (x, y))
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
    if len(missing := ok.index.difference(shown.index, sort=False)):  # in the legend: never over a point
        ax.plot([], [], " ", label=f"not plotted (n/a): {', '.join(missing)}")
    ax.set(xlabel=LABELS[cost], ylabel=LABELS[rec.rank_by],
           title=f"{LABELS[rec.rank_by][:-4]} vs {LABELS[cost].split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: never over a point
    return fig


def gap(ok):
    """CIFAR-10 test and CINIC-10 accuracy side by side per model, the drop written above. A set no model was
    measured on is not drawn: its note goes above the axes, over no bar, and the legend lists what is drawn."""
    accuracy = ok[["test_accuracy_pct", "cinic10_accuracy_pct"]].set_axis(["CIFAR-10 test", "CINIC-10 (shift)"], axis=1)
    drawn = accuracy.loc[:, accuracy.notna().any()]
    if drawn.empty:  # keep the models on the axis
        drawn = accuracy.iloc[:, :1]
    ax = drawn.plot.bar(width=0.8 if drawn.shape[1] > 1 else 0.5, rot=0, figsize=(8, 4.8), ylim=(0, 105), xlabel="",
                        ylabel="accuracy (%)", legend=False)
    mark_missing(ax, drawn)
    columns = {"CIFAR-10 test": "test_accuracy_pct", "CINIC-10 (shift)": "cinic10_accuracy_pct"}
    for container, name in list(zip(ax.containers, drawn)):
        error_bars(ax, [bar.get_x() + bar.get_width() / 2 for bar in container], ok, columns[name])
    # the drop goes above the taller bar and its interval
    tops = np.fmax(drawn.max(axis=1), ok.reindex(columns=["test_accuracy_ci_high_pct", "cinic10_accuracy_ci_high_pct"])
                   .max(axis=1))
    for i, (drop, top) in enumerate(zip(ok.accuracy_drop_pp, tops)):
        if not math.isnan(drop):
            ax.text(i, top + 1, f"{-drop:+.1f} pp", ha="center", fontsize=8)
    absent = [name for name in accuracy if name not in drawn or drawn[name].isna().all()]
    title = "Generalisation gap: CIFAR-10 test vs CINIC-10 accuracy"
    if absent:
        why = {"CINIC-10 (shift)": "no shift set (cinic10.urls is none?)", "CIFAR-10 test": "no test results"}
        ax.annotate("; ".join(f"{name.split(' (')[0]} accuracy is n/a for every model: {why[name]}" for name in absent),
                    (0.5, 1), xycoords="axes fraction", xytext=(0, 4), textcoords="offset points",
                    **NOTE | {"va": "bottom", "fontsize": 9})
    ax.set_title(title, pad=24 if absent else 6)
    bars = [(c, name) for c, name in zip(ax.containers, drawn) if drawn[name].notna().any()]
    if bars:
        ax.legend(*zip(*bars), fontsize=8, loc="upper right")
    return ax.figure


def corruption(plt, ok):
    """Accuracy on the CIFAR-10-C images uncorrupted (x) against the mean over the corruptions (y), one point
    per model with its drop and mCE: the farther below the diagonal, the more the corruptions cost it."""
    shown = ok.dropna(subset=["cifar10c_clean_accuracy_pct", "corruption_accuracy_pct"])
    fig, ax = plt.subplots(figsize=(7, 5.9))
    ax.plot([0, 100], [0, 100], ls="--", color="grey", lw=1, label="no drop (corrupted = clean)")
    ax.scatter(shown.cifar10c_clean_accuracy_pct, shown.corruption_accuracy_pct, s=60, zorder=3, color="C0")
    error_bars(ax, shown.cifar10c_clean_accuracy_pct, shown, "corruption_accuracy_pct")
    for name, r in shown.iterrows():
        mce = "" if math.isnan(r.mce_pct) else f", mCE {r.mce_pct:.0f}"
        label_point(ax, f"{name} (−{r.corruption_drop_pp:.1f} pp{mce})", (r.cifar10c_clean_accuracy_pct,
                    r.corruption_accuracy_pct), (6, -12), fontsize=8)  # below the diagonal, as the points are
    if shown.empty:  # above the diagonal, where no point can be
        ax.text(0.35, 0.8, "CIFAR-10-C accuracy is n/a for every model:\nno corrupted images "
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
        error_bars(ax, range(len(ok)), ok, column)
        ax.title.set_fontsize(9)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xticks(ax.get_xticks(), ax.get_xticklabels(), ha="right")
        ax.grid(axis="y", alpha=0.3)
    return axes[0, 0].figure
