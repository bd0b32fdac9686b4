"""Classification and timing metrics as small pure numpy functions."""
import numpy as np


def confusion(y_true, y_pred, n_classes):
    """counts[actual, predicted]."""
    return np.bincount(y_true.astype(np.int64) * n_classes + y_pred, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def per_class(y_true, y_pred, n_classes):
    """Precision, recall and F1 per class (0 where undefined)."""
    c = confusion(y_true, y_pred, n_classes)
    tp = np.diag(c).astype(np.float64)
    predicted, actual = c.sum(axis=0), c.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def cross_entropy(y_true, probs, eps=1e-7):
    """Mean sparse categorical cross-entropy, clipped like Keras."""
    p = np.clip(probs[np.arange(len(y_true)), y_true.astype(np.int64)], eps, 1 - eps)
    return float(-np.mean(np.log(p)))


def expected_calibration_error(y_true, probs, bins=15):
    """ECE: |accuracy - confidence| per confidence bin, weighted by the bin's share of samples."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def classification_report(y_true, probs, classes):
    """Every figure the evaluate stage reports for one labelled set."""
    y_pred = probs.argmax(axis=1)
    precision, recall, f1 = per_class(y_true, y_pred, len(classes))
    return {
        "images": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": cross_entropy(y_true, probs),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f)}
                      for c, p, r, f in zip(classes, precision, recall, f1)},
    }


def percentiles_ms(samples_s, qs=(50, 90, 99)):
    """Latency percentiles in milliseconds from per-call samples in seconds."""
    samples_ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {f"p{q}": float(np.percentile(samples_ms, q)) for q in qs}
