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


def corruption_report(y, clean_probs, probs, families):
    """The `corruptions` section of metrics/evaluate.json.

    y: labels of the N corrupted images; clean_probs: the model's (N, classes) on the same images uncorrupted;
    probs: {corruption: [probabilities at severity 1, ..., 5]}; families: {corruption: family}.
    Accuracies are fractions; the mean corruption accuracy is the mean over every corruption and severity
    (75 at default), accuracy_drop the clean accuracy minus it, relative_drop that over the clean accuracy.
    """
    table = {name: [accuracy(y, p) for p in per_severity] for name, per_severity in probs.items()}
    grid = np.array(list(table.values()))  # (corruptions, severities)
    clean, mean = accuracy(y, clean_probs), float(grid.mean())
    by_family = {f: float(np.mean([table[n] for n in table if families[n] == f]))
                 for f in FAMILY_ORDER if any(families[n] == f for n in table)}
    return {
        "available": True,
        "images": int(len(y)),
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
    ax.set_title(f"{model_name} on CIFAR-10-C ({report['images']} images): mean {100 * report['mean_accuracy']:.1f} %, "
                 f"clean {100 * report['clean_accuracy']:.1f} %", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def example_picks(n, examples=3):
    """Positions of the grid's images: evenly spaced over the subset, which is stored class by class."""
    return np.linspace(0, n - 1, examples).astype(int)


def keep_examples(data):
    """What the picture grid needs of one corruption's file: its labels and indices, and the picked images."""
    picks = example_picks(len(data["y"]))
    return {"y": data["y"], "index": data["index"], "picks": picks, "x": data["x"][:, picks]}


def split_report(report):
    """corruption_report as (the figures for metrics/evaluate.json, what they were measured on): the
    per-severity table of every corruption stays out of the metrics file (75 columns in `dvc exp show`;
    corruption_severity.csv and the heatmap hold it), and so do the image and corruption counts."""
    facts = ("available", "images", "corruptions")
    figures = {k: v for k, v in report.items() if k not in (*facts, "table")}
    return figures, {k: report[k] for k in facts}


def write_plots(out_dir, report, info, kept, probs, test_x, test_probs, classes, model_name):
    """plots/evaluate's CIFAR-10-C files: corruption_severity.csv (a DVC plot), corruption_heatmap.png and
    corruption_examples.png. kept: {name: keep_examples(...)}; probs: {name: (5, N, classes)};
    test_x, test_probs: the whole test split's images and probabilities (the clean images sit at `index`)."""
    out_dir = Path(out_dir)
    write_text(out_dir / "corruption_severity.csv", severity_csv(report, families(info)))
    heatmap(out_dir / "corruption_heatmap.png", report, model_name)
    first = next(iter(kept.values()))
    picks, shown = first["picks"], first["index"][first["picks"]]
    predicted = {name: p[:, picks].argmax(axis=-1) for name, p in probs.items()}
    predicted["clean"] = test_probs[shown].argmax(axis=-1)
    example_grid(out_dir / "corruption_examples.png", test_x[shown], {n: k["x"] for n, k in kept.items()},
                 first["y"][picks], predicted, classes)


def example_grid(path, clean, corrupted, y, predicted, classes):
    """A PNG of a few images, clean and under every corruption at severities 1, 3 and 5, each titled with
    the model's prediction (green right, red wrong).

    clean: (k, H, W, 3); corrupted: {name: (5, k, H, W, 3)}; y: (k,); predicted: {name: (5, k), "clean": (k,)}.
    """
    plt = pyplot()
    examples = len(y)
    names = list(corrupted)
    cols = examples * len(EXAMPLE_SEVERITIES)
    fig, axes = plt.subplots(len(names) + 1, cols, figsize=(1.15 * cols + 1.3, 1.2 * (len(names) + 1)), squeeze=False)

    def tile(ax, image, label, pred):
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(classes[pred], fontsize=6.5, color="green" if pred == label else "red", pad=2)
    for k in range(examples):
        for j in range(len(EXAMPLE_SEVERITIES)):
            ax = axes[0, k * len(EXAMPLE_SEVERITIES) + j]
            if j:
                ax.axis("off")
            else:
                tile(ax, clean[k], y[k], predicted["clean"][k])
        for r, name in enumerate(names, 1):
            for j, s in enumerate(EXAMPLE_SEVERITIES):
                ax = axes[r, k * len(EXAMPLE_SEVERITIES) + j]
                tile(ax, corrupted[name][s - 1, k], y[k], predicted[name][s - 1, k])
                if r == len(names):
                    ax.set_xlabel(f"severity {s}", fontsize=6.5)
    axes[0, 0].set_ylabel("clean", fontsize=7)
    for r, name in enumerate(names, 1):
        axes[r, 0].set_ylabel(name.replace("_", "\n"), fontsize=7)
    fig.suptitle("CIFAR-10-C: each corruption at severities 1, 3, 5 (title: the model's prediction, "
                 "green right, red wrong)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the suptitle above the first titles
    fig.savefig(path, dpi=80)
    plt.close(fig)
