"""Each experiment's per-image predictions (data/predictions/<set>.npz, written by the evaluate stage), read from
DVC's cache at the experiment's commit, and what the statistics need of them: one score per image.

A model's score on an image is its correctness (1 or 0), averaged over the model's training seeds when it has
several (the accuracy of one run with a random seed, in expectation, image by image), and for CIFAR-10-C over
the image's corrupted versions (5 severities of its corruption with `corruptions.distinct`, 75 otherwise: one
image, not independent draws).
"""
import io

import numpy as np

from core import StageError
from core.io import ZIP_ERRORS

SETS = ("val", "test", "cinic10", "cifar10c")  # data/predictions/<set>.npz; cifar10c: (corruption, severity) axes


def read(data, where):
    """One predictions file's arrays from its bytes, checked: `y` and `pred` of one shape, `prob` that shape plus
    the classes, the images' digest. Nothing is unpickled."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, *ZIP_ERRORS) as e:  # ValueError: not an .npz, or pickled content
        raise StageError(f"{where}: not a readable predictions file ({type(e).__name__}: {e}); run the experiment's "
                         "evaluate stage again") from e
    missing = [k for k in ("y", "pred", "prob", "images_sha256") if k not in arrays]
    y, pred, prob, digest = (arrays.get(k) for k in ("y", "pred", "prob", "images_sha256"))
    if missing or y.ndim == 0 or y.shape != pred.shape or prob.shape[:-1] != y.shape or not y.size \
            or y.dtype.kind != "u" or pred.dtype.kind != "u" or prob.dtype.kind != "f" or digest.dtype.kind != "U" \
            or digest.ndim:
        raise StageError(f"{where}: not per-image predictions (" + (f"no {', '.join(missing)}" if missing else
                         f"y {y.dtype} {y.shape}, pred {pred.dtype} {pred.shape}, prob {prob.dtype} {prob.shape}, "
                         f"images_sha256 {digest.dtype} {digest.shape}") + "); run the experiment's evaluate stage again")
    index = arrays.get("index")
    if y.ndim == 3 and index is not None and (index.dtype.kind not in "iu" or index.shape not in (
            (y.shape[-1],), (y.shape[0], y.shape[-1])) or (index.size and index.min() < 0)):
        raise StageError(f"{where}: `index` {index.dtype} {index.shape} does not place the {y.shape[-1]} images of "
                         f"each of its {y.shape[0]} corruptions in the test split; run the experiment's evaluate "
                         "stage again")
    return arrays


def record_rev(record):
    """The Git revision dvc.api reads an exp_show record's files at: None for the workspace row."""
    return None if record.get("rev") == "workspace" else record.get("rev")


def exp_predictions(record, repo=None):
    """{set: arrays} of the experiment `record` (an exp_show record), from DVC's cache or remote at its commit;
    a set the experiment has no file for (CINIC-10 off, an experiment older than these files) is left out."""
    import dvc.api
    from dvc.exceptions import DvcException
    rev = record_rev(record)
    out = {}
    for name in SETS:
        path = f"data/predictions/{name}.npz"
        try:
            with dvc.api.open(path, repo=repo, rev=rev, mode="rb") as f:
                data = f.read()
        except (DvcException, OSError):
            continue
        out[name] = read(data, f"{path} of experiment {record.get('Experiment')}")
    return out


def scores(runs):
    """A model's per-image scores on one set from its runs' arrays (one per seed, each from read()): (digest,
    scores (seeds, images) in [0, 1]). Runs on different images (their digests differ) are refused."""
    digests = {str(r["images_sha256"]) for r in runs}
    if len(digests) > 1:
        raise StageError("the seeds of one model were evaluated on different images (data_seed or the data differ "
                         "between its experiments): they cannot be averaged")
    correct = np.stack([r["pred"] == r["y"] for r in runs]).astype(np.float64)
    if correct.ndim == 2:
        return digests.pop(), correct
    return digests.pop(), per_image(correct, runs[0].get("index"))


def per_image(correct, index):
    """CIFAR-10-C's (seeds, corruption, severity, images) right answers -> (seeds, test images): each image's
    share of its corrupted versions that were right, the images in the order they first appear in the file.
    The image, not the corrupted copy, is the unit of the intervals: its versions share its difficulty. `index`
    (corruption, images) places each row's images (each corruption its own, or the same: corruptions.distinct);
    a file without it, or with one row, has the same images under every corruption."""
    seeds, corruptions, severities, n = correct.shape
    if index is None or np.ndim(index) == 1:
        return correct.reshape(seeds, -1, n).mean(axis=1)
    places, first, unit = np.unique(np.asarray(index).reshape(-1), return_index=True, return_inverse=True)
    per_version = correct.mean(axis=2).reshape(seeds, -1)  # (seeds, corruption x image), over the severities
    counts = np.bincount(unit, minlength=len(places))
    shares = np.stack([np.bincount(unit, weights=row, minlength=len(places)) / counts for row in per_version])
    return shares[:, np.argsort(first)]
