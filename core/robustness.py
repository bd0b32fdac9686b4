"""Figures of a model under the CIFAR-10-C corruptions (data/cifar10c, stage corrupt_cifar10).

Pure functions from labels and predicted probabilities to the `corruptions` section of
metrics/evaluate.json, the accuracy-vs-severity CSV (a DVC plot), the corruption x severity heatmap and
the picture grid. No TensorFlow: the evaluate stage predicts, these only count.
"""
from pathlib import Path

import numpy as np

from core.contracts import read_json
from core.io import csv_text, load_npz, write_text
from core.plotting import pyplot

FAMILY_ORDER = ("noise", "blur", "weather", "digital")
EXAMPLE_SEVERITIES = (1, 3, 5)


def load_info(data_dir):
    """data/cifar10c/info.json: which corruptions were made (in order), their families, or why none were."""
    return read_json(Path(data_dir) / "info.json", "corrupt_cifar10", keys=("available", "corruptions"))


def load_sets(data_dir, info):
    """(name, {"x" (5, N, H, W, 3), "y", "index"}) per corruption, one file at a time (each is N x 15 KB)."""
    for name in info["corruptions"]:
        yield name, load_npz(Path(data_dir) / f"{name}.npz")


def families(info):
    return {name: p["family"] for name, p in info["parameters"].items()}


def unavailable(info):
    return {"available": False, "reason": info["reason"]}


def accuracy(y, probs):
    return float(np.mean(np.asarray(probs).argmax(axis=1) == y))


def corruption_report(sets, clean_y, clean_probs, families):
    """The `corruptions` section of metrics/evaluate.json.

    sets: {corruption: (labels (N,), probabilities at severity 1, ..., 5 (5, N, classes))}, N the same for every
    corruption (its own images or the same ones, corruptions.distinct); clean_y, clean_probs: every image used,
    uncorrupted (each once); families: {corruption: family}. Accuracies are fractions; the mean corruption
    accuracy is the mean over every corruption and severity (75 at default), accuracy_drop the clean accuracy
    minus it, relative_drop that over the clean accuracy.
    """
    table = {name: [accuracy(y, p) for p in per_severity] for name, (y, per_severity) in sets.items()}
    grid = np.array(list(table.values()))  # (corruptions, severities)
    clean, mean = accuracy(clean_y, clean_probs), float(grid.mean())
    by_family = {f: float(np.mean([table[n] for n in table if families[n] == f]))
                 for f in FAMILY_ORDER if any(families[n] == f for n in table)}
    return {
        "available": True,
        "images": int(len(clean_y)),
        "images_per_corruption": int(len(next(iter(sets.values()))[0])),
        "corruptions": len(table),
        "clean_accuracy": clean,
        "mean_accuracy": mean,
        "accuracy_drop": clean - mean,
        "relative_drop": (clean - mean) / clean if clean else None,
        "by_severity": {str(s): float(v) for s, v in enumerate(grid.mean(axis=0), 1)},
        "by_family": by_family,
        "by_corruption": {name: float(np.mean(accs)) for name, accs in table.items()},
        "table": {name: {str(s): a for s, a in enumerate(accs, 1)} for name, accs in table.items()},
    }


def severity_csv(report, families):
    """Accuracy against severity (0: clean) per corruption family, over all, and per corruption, one column
    each: dvc.yaml draws the families and `all`; the corruptions' columns are the heatmap's table. A family
    with no corruption selected is left empty."""
    names = list(report["table"])
    rows = [[0, *[round(report["clean_accuracy"], 4)] * (len(FAMILY_ORDER) + 1 + len(names))]]
    for s in range(1, 6):
        per_family = [[acc[str(s)] for n, acc in report["table"].items() if families[n] == f] for f in FAMILY_ORDER]
        rows.append([s, *(round(float(np.mean(v)), 4) if v else "" for v in per_family),
                     round(report["by_severity"][str(s)], 4), *(round(report["table"][n][str(s)], 4) for n in names)])
    return csv_text(["severity", *FAMILY_ORDER, "all", *names], rows)


def heatmap(path, report, model_name):
    """A corruption x severity PNG of accuracy (%), a clean column first, each cell written."""
    plt = pyplot()
    names = list(report["table"])
    grid = 100 * np.array([[report["clean_accuracy"], *report["table"][n].values()] for n in names])
    fig, ax = plt.subplots(figsize=(6.5, 0.38 * len(names) + 1.6))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
    ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_xlabel("severity")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(f"{model_name} on CIFAR-10-C ({report['images_per_corruption']} images each): mean {100 * report['mean_accuracy']:.1f} %, "
                 f"clean {100 * report['clean_accuracy']:.1f} %", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def example_picks(n, examples=3):
    """Positions of the grid's images: evenly spaced over a corruption's images, which are sorted by their
    place in the test split."""
    return np.linspace(0, n - 1, examples).astype(int)


def keep_examples(data):
    """What the picture grid needs of one corruption's file: the picked images, their labels and places in the
    test split (kept instead of the whole file, which evaluate reads one at a time)."""
    picks = example_picks(len(data["y"]))
    return {"y": data["y"][picks], "index": data["index"][picks], "picks": picks, "x": data["x"][:, picks]}


def split_report(report):
    """corruption_report as (the figures for metrics/evaluate.json, what they were measured on): the
    per-severity table of every corruption stays out of the metrics file (75 columns in `dvc exp show`;
    corruption_severity.csv and the heatmap hold it), and so do the image and corruption counts."""
    facts = ("available", "images", "images_per_corruption", "corruptions")
    figures = {k: v for k, v in report.items() if k not in (*facts, "table")}
    return figures, {k: report[k] for k in facts}


def write_plots(out_dir, report, info, kept, probs, test_x, test_probs, classes, model_name):
    """plots/evaluate's CIFAR-10-C files: corruption_severity.csv (a DVC plot), corruption_heatmap.png and
    corruption_examples.png. kept: {name: keep_examples(...)}; probs: {name: (5, N, classes)};
    test_x, test_probs: the whole test split's images and probabilities (the clean images sit at `index`)."""
    out_dir = Path(out_dir)
    write_text(out_dir / "corruption_severity.csv", severity_csv(report, families(info)))
    heatmap(out_dir / "corruption_heatmap.png", report, model_name)
    rows = {name: {"clean": test_x[k["index"]], "corrupted": k["x"], "y": k["y"],
                   "clean_pred": test_probs[k["index"]].argmax(axis=-1),
                   "pred": probs[name][:, k["picks"]].argmax(axis=-1)} for name, k in kept.items()}
    example_grid(out_dir / "corruption_examples.png", rows, classes)


def example_grid(path, rows, classes):
    """A PNG with a row per corruption: a few of its images, each clean and at severities 1, 3 and 5, titled
    with the model's prediction (green right, red wrong).

    rows: {name: {"clean": (k, H, W, 3), "corrupted": (5, k, H, W, 3), "y": (k,), "clean_pred": (k,),
    "pred": (5, k)}}.
    """
    plt = pyplot()
    names = list(rows)
    examples = len(rows[names[0]]["y"])
    shown = ("clean", *EXAMPLE_SEVERITIES)
    cols = examples * len(shown)
    fig, axes = plt.subplots(len(names), cols, figsize=(1.15 * cols + 1.3, 1.2 * len(names) + 0.3), squeeze=False)
    for r, name in enumerate(names):
        row = rows[name]
        for k in range(examples):
            for j, what in enumerate(shown):
                ax = axes[r, k * len(shown) + j]
                image, pred = ((row["clean"][k], row["clean_pred"][k]) if what == "clean" else
                               (row["corrupted"][what - 1, k], row["pred"][what - 1, k]))
                ax.imshow(image, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(classes[pred], fontsize=6.5, color="green" if pred == row["y"][k] else "red", pad=2)
                if r == len(names) - 1:
                    ax.set_xlabel(what if what == "clean" else f"severity {what}", fontsize=6.5)
        axes[r, 0].set_ylabel(name.replace("_", "\n"), fontsize=7)
    fig.suptitle("CIFAR-10-C: images of each corruption, clean and at severities 1, 3, 5 (title: the model's "
                 "prediction, green right, red wrong)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the suptitle above the first titles
    fig.savefig(path, dpi=80)
    plt.close(fig)
