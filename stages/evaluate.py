"""Stage evaluate: the trained model on the CIFAR-10 test split (never used for
selection), on the CINIC-10 shift sample and on the CIFAR-10-C corruptions.

Writes metrics/evaluate.json (accuracy, loss, macro F1, calibration error per
set, CINIC accuracy per origin, the drop between the sets; under `corruptions`
accuracy per corruption, per severity and per family, their mean and its drop
from clean), metrics/conditions/evaluate.json (what each figure was measured
on: image counts, or why a set is absent), data/predictions/ (every image's true and predicted class and class
probabilities, for val, test, CINIC-10 and CIFAR-10-C: the comparison's intervals and paired tests are computed
from these) and plots/evaluate/: confusion matrices as `actual,predicted` rows, per-class
precision / recall / F1, a grid of misclassified CINIC-10 images, accuracy vs
severity per corruption family and per corruption (CSV), a corruption x
severity heatmap and a
grid of test images under every corruption.
"""

import hashlib

import numpy as np

from core import robustness
from core.contracts import load_images, load_model, read_dataset_info, read_json
from core.io import atomic_dir, atomic_path, csv_text, save_npz, write_json, write_text
from core.metrics import classification_report
from core.params import ParamError
from core.plotting import pyplot
from core.stage import start
from core.pipeline import predict_images


def misclassified_grid(path, x, y, probs, classes, origins, n=24):
    """A PNG of the first `n` misclassified images: true -> predicted (confidence)."""
    plt = pyplot()
    wrong = np.flatnonzero(probs.argmax(axis=1) != y)[:n]
    cols = 6
    fig, axes = plt.subplots(max(1, -(-len(wrong) // cols)), cols, figsize=(2 * cols, 2.3 * max(1, -(-len(wrong) // cols))),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        ax.imshow(x[i], interpolation="nearest")
        p = probs[i].argmax()
        ax.set_title(f"{classes[y[i]]} → {classes[p]}\n{probs[i, p]:.0%} ({origins[i]})", fontsize=8)
    fig.suptitle("CINIC-10 sample: misclassified (true → predicted, confidence, origin)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


PLOTTED = {"test", "cinic10"}  # val is scored and its predictions kept, but it is the selection set: no plots


def images_digest(*arrays):
    """sha256 of the images' bytes: two experiments' predictions pair only if they were made on the same
    images (the same data_seed and data), which equal labels alone do not show."""
    digest = hashlib.sha256()
    for x in arrays:
        digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def prediction_arrays(y, probs, digest, **extra):
    """One set's per-image record: `y` and `pred` uint8, `prob` float16, the images' digest. `pred` is the argmax
    of the float32 probabilities, so it agrees with every accuracy in the metrics."""
    probs = np.asarray(probs)
    return {"y": np.broadcast_to(np.asarray(y, np.uint8), probs.shape[:-1]), "pred": probs.argmax(axis=-1).astype(np.uint8),
            "prob": probs.astype(np.float16), "images_sha256": np.array(digest), **extra}


def write_predictions(out_dir, sets, probs, corruptions):
    """data/predictions/<set>.npz for every scored set; cifar10c.npz holds (corruption, severity, image) arrays
    and the corruption names in that order, with `index` (corruption, image), the images' positions in the test
    split (the same row for every corruption, or each its own: corruptions.distinct)."""
    for set_name, data in sets.items():
        save_npz(out_dir / f"{set_name}.npz", **prediction_arrays(data["y"], probs[set_name], images_digest(data["x"])))
    corrupted, c_report, c_sets, c_probs, digest = corruptions
    if c_report:
        names = list(c_probs)
        y = np.stack([np.broadcast_to(c_sets[n]["y"][None], c_probs[n].shape[:-1]) for n in names])
        save_npz(out_dir / "cifar10c.npz", **prediction_arrays(
            y, np.stack([c_probs[n] for n in names]), digest, corruptions=np.array(names),
            index=np.stack([np.asarray(c_sets[n]["index"], np.int64) for n in names])))


def load_sets(data_dir, cinic_dir, classes):
    """The labelled sets to score: the validation and test splits, and the CINIC-10 sample when one was taken."""
    sets = {split: load_images(f"{data_dir}/{split}.npz", len(classes)) for split in ("val", "test")}
    cinic_info = read_json(f"{cinic_dir}/info.json", "sample_cinic10", keys=("classes",))
    cinic = load_images(f"{cinic_dir}/sample.npz", len(cinic_info["classes"]), stage="sample_cinic10",
                        keys=("x", "y", "origin"))
    if len(cinic["y"]):
        if cinic_info["classes"] != classes:
            raise ParamError(f"{cinic_dir} has CIFAR-10's classes but the dataset's are {classes}; "
                             "set `cinic10.urls: none` for a dataset of your own")
        sets["cinic10"] = cinic
    return sets


def score_sets(sets, infer, classes):
    """Each set's report, per-class and confusion CSVs, image count and probabilities, keyed by set."""
    metrics, conditions, tables, probs = {}, {}, {}, {}
    for set_name, data in sets.items():
        probs[set_name] = infer(data["x"])
        report = classification_report(data["y"], probs[set_name], classes)
        tables[set_name] = {
            "per_class": csv_text(["class", "accuracy", "precision", "f1"], (
                (c, f["recall"], f["precision"], f["f1"]) for c, f in report.pop("per_class").items())),
            "confusion": csv_text(["actual", "predicted"], (
                (classes[a], classes[p]) for a, p in zip(data["y"], probs[set_name].argmax(axis=1))))}
        conditions[set_name] = {"available": True, "images": report.pop("images")}
        metrics[set_name] = report
    if "cinic10" in sets:
        cinic = sets["cinic10"]
        correct = probs["cinic10"].argmax(axis=1) == cinic["y"]
        origins = sorted(set(cinic["origin"].tolist()))
        if len(origins) > 1:
            metrics["cinic10"]["accuracy_by_origin"] = {o: float(correct[cinic["origin"] == o].mean())
                                                        for o in origins}
        metrics["accuracy_drop"] = metrics["test"]["accuracy"] - metrics["cinic10"]["accuracy"]
    else:
        conditions["cinic10"] = {"available": False, "reason": "cinic10.urls is none: no shift set was sampled"}
    return metrics, conditions, tables, probs


def score_corruptions(cifar10c_dir, infer, test):
    """CIFAR-10-C through the same prediction call: (info, report or None, per corruption {`y`: labels, `index`:
    the images' places in the test split, `examples`: the grid's (keep_examples)}, per corruption probabilities,
    digest of every corrupted image). `test`: the test split's labels `y` and probabilities `probs` (the clean
    figures, on the same images)."""
    corrupted = robustness.load_info(cifar10c_dir)
    if not corrupted["available"]:
        return corrupted, None, {}, {}, None
    c_probs, c_sets, digest = {}, {}, hashlib.sha256()
    for c_name, data in robustness.load_sets(cifar10c_dir, corrupted):
        x = data["x"]  # (severity 1..5, N, H, W, 3): one predict call per file, not per severity
        c_probs[c_name] = infer(x.reshape(-1, *x.shape[2:])).reshape(*x.shape[:2], -1)
        c_sets[c_name] = {"y": data["y"], "index": data["index"], "examples": robustness.keep_examples(data)}
        digest.update(images_digest(x).encode())
    used = np.unique(np.concatenate([d["index"] for d in c_sets.values()]))  # each image once
    report = robustness.corruption_report({n: (c_sets[n]["y"], c_probs[n]) for n in c_probs}, test["y"][used],
                                          test["probs"][used], robustness.families(corrupted))
    return corrupted, report, c_sets, c_probs, digest.hexdigest()


def write_plots(out_dir, sets, tables, probs, classes, corruptions, name):
    """The plot files, into `out_dir` (the temporary directory that replaces plots/evaluate with the metrics)."""
    corrupted, c_report, c_sets, c_probs, _ = corruptions
    for set_name in PLOTTED & sets.keys():
        # One folder per kind of plot: dvc.yaml declares the folders, so an absent set (CINIC-10 off) is no warning.
        write_text(out_dir / "confusion" / f"{set_name}.csv", tables[set_name]["confusion"])
        write_text(out_dir / "per_class" / f"{set_name}.csv", tables[set_name]["per_class"])  # class accuracy = recall
    if "cinic10" in sets:
        cinic = sets["cinic10"]
        misclassified_grid(out_dir / "cinic10_misclassified.png", cinic["x"], cinic["y"], probs["cinic10"], classes,
                           cinic["origin"])
    if c_report:
        examples = {n: d["examples"] for n, d in c_sets.items()}
        robustness.write_plots(out_dir, c_report, corrupted, examples, c_probs, sets["test"]["x"], probs["test"],
                               classes, name)


def main(params, data_dir="data/cifar10", cinic_dir="data/cinic10", model_path="models/model.keras",
         metrics_path="metrics/evaluate.json", conditions_path="metrics/conditions/evaluate.json",
         plots_dir="plots/evaluate", cifar10c_dir="data/cifar10c", predictions_dir="data/predictions"):
    job = start(params, "evaluate")  # threads sized to this machine's usable cores
    name, batch_size = job.name, job.checked["evaluate.batch_size"]
    classes = read_dataset_info(data_dir)["classes"]
    model = load_model(model_path)
    sets = load_sets(data_dir, cinic_dir, classes)

    def infer(x):  # the one prediction call: val, test, CINIC-10 and every corrupted array (raw images)
        return predict_images(model, x, batch_size)

    with job.timed("sets"):  # val, test and CINIC-10
        metrics, conditions, tables, probs = score_sets(sets, infer, classes)
    conditions = {"model": name, **conditions}
    with job.timed("cifar10c"):
        corruptions = score_corruptions(cifar10c_dir, infer, {"y": sets["test"]["y"], "probs": probs["test"]})
    corrupted, c_report = corruptions[:2]
    if c_report:
        metrics["corruptions"], conditions["corruptions"] = robustness.split_report(c_report)
    else:
        conditions["corruptions"] = robustness.unavailable(corrupted)

    # Predictions, plots, metrics and conditions replace the previous ones together, once all are written: a run
    # that fails leaves the previous set, consistent.
    with atomic_dir(predictions_dir) as predictions_tmp, atomic_dir(plots_dir) as plots_tmp, \
            atomic_path(metrics_path) as metrics_tmp, atomic_path(conditions_path) as conditions_tmp:
        with job.timed("write"):
            write_predictions(predictions_tmp, sets, probs, corruptions)
            write_plots(plots_tmp, sets, tables, probs, classes, corruptions, name)
        conditions["wall_s"] = job.timings()
        write_json(metrics_tmp, metrics)
        write_json(conditions_tmp, conditions)
    summary = {s: round(m["accuracy"], 4) for s, m in metrics.items() if isinstance(m, dict) and "accuracy" in m}
    print(f"{name}: accuracy {summary}")
    if c_report:
        print(f"{name}: CIFAR-10-C mean corruption accuracy {c_report['mean_accuracy']:.4f} over "
              f"{c_report['corruptions']} corruptions x 5 severities, clean {c_report['clean_accuracy']:.4f} on the "
              f"same {c_report['images']} images")


if __name__ == "__main__":
    from core.cli import run
    run(main)
