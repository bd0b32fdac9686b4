"""How sure a comparison of accuracies can be: a Wilson interval for one model's accuracy, and, for two models
judged on the same images, the paired bootstrap interval of their difference and the exact McNemar test.

Inputs are per-image correctness (bool arrays, one entry per image, the same images in the same order for
both models), as the per-image predictions give them; never the summary accuracies, which lose the pairing.
"""
import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054  # the normal quantile of 0.975


def wilson(correct, n, z=Z95):
    """The Wilson score interval (95 % by default) of an accuracy of `correct` right out of `n`: (low, high).
    Unlike the normal approximation it stays inside [0, 1] and is sound near 0 % and 100 %."""
    if n <= 0:
        return math.nan, math.nan
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0 and n right the bound is exactly 0 or 1 (floating point leaves a few 1e-18 over).
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == n else centre + half)


def _pair(correct_a, correct_b):
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired comparison needs one correctness per image for both models, got {a.shape} and "
                         f"{b.shape}")
    return a, b


def paired_bootstrap(correct_a, correct_b, resamples=2000, seed=0, level=0.95):
    """Accuracy of a minus accuracy of b on the same images, and its percentile interval over `resamples`
    bootstrap resamplings of the images, each image keeping both models' results (the pairing).
    Returns (difference, low, high).

    Per image the difference is +1 (only a right), -1 (only b right) or 0, so a resample of n images is a
    multinomial draw of how many of each it holds: the same distribution as drawing n indices with
    replacement, at a cost that does not grow with n."""
    a, b = _pair(correct_a, correct_b)
    n = len(a)
    if n == 0:
        return math.nan, math.nan, math.nan
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    shares = np.array([only_a, only_b, n - only_a - only_b]) / n
    counts = np.random.default_rng(seed).multinomial(n, shares, size=resamples)
    differences = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - level) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return (only_a - only_b) / n, float(low), float(high)


def mcnemar_exact(correct_a, correct_b):
    """The two-sided exact McNemar p-value: among the images exactly one model gets right (the discordant
    pairs), is each model's share 1/2? A binomial test; 1.0 when no image is discordant."""
    a, b = _pair(correct_a, correct_b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _bootstrap_means(scores, images, seed_picks):
    """Per resample, the mean score over the picked images, each seed's row weighted by how often it was
    picked: scores (seeds, n), images (resamples, n) indices, seed_picks (resamples, seeds) counts."""
    per_seed = scores[:, images].mean(axis=-1)  # (seeds, resamples)
    return np.einsum("sr,rs->r", per_seed, seed_picks / seed_picks.sum(axis=1, keepdims=True))


def bootstrap(scores_a, scores_b=None, resamples=2000, seed=0, level=0.95, chunk=100):
    """The mean score of a (minus b's, on the same images) and its percentile interval, resampling the images
    (shared by a and b: the pairing) and, for a model with several training seeds, its seeds too, so the
    interval holds both sources of noise. scores: (seeds, images), each image's correctness (or its share of
    right answers, over seeds or corrupted versions) in [0, 1]. Returns (mean or difference, low, high)."""
    a = np.atleast_2d(np.asarray(scores_a, dtype=np.float64))
    b = None if scores_b is None else np.atleast_2d(np.asarray(scores_b, dtype=np.float64))
    n = a.shape[1]
    if b is not None and b.shape[1] != n:
        raise ValueError(f"paired comparison needs the same images for both models, got {n} and {b.shape[1]}")
    if n == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        images = rng.integers(0, n, (size, n))
        value = _bootstrap_means(a, images, rng.multinomial(len(a), [1 / len(a)] * len(a), size))
        if b is not None:
            value = value - _bootstrap_means(b, images, rng.multinomial(len(b), [1 / len(b)] * len(b), size))
        values.append(value)
    tail = (1 - level) / 2
    low, high = np.quantile(np.concatenate(values), [tail, 1 - tail])
    point = a.mean() - (0 if b is None else b.mean())
    return float(point), float(low), float(high)


def accuracy_interval(scores):
    """95 % interval of a model's accuracy from its per-image scores (seeds, images): Wilson for one run scored
    right or wrong per image, else the bootstrap over images (and seeds). Returns (low, high)."""
    s = np.atleast_2d(scores)
    if len(s) == 1 and np.isin(s, (0, 1)).all():
        return wilson(int(s.sum()), s.shape[1])
    return bootstrap(s)[1:]


def paired(scores_a, scores_b, resamples=2000, seed=0):
    """Two models on the same images: {difference, ci_low, ci_high, mcnemar_p} of a minus b. One run each,
    right or wrong per image: the multinomial paired bootstrap and the exact McNemar test. Otherwise (several
    seeds, or CIFAR-10-C's shares of right answers) the bootstrap over images and seeds, and no McNemar p: it
    tests two fixed classifiers' binary outcomes on independent images, which these scores are not."""
    a, b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    if len(a) == len(b) == 1 and np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        ca, cb = a[0].astype(bool), b[0].astype(bool)
        difference, low, high = paired_bootstrap(ca, cb, resamples, seed)
        return {"difference": difference, "ci_low": low, "ci_high": high, "mcnemar_p": mcnemar_exact(ca, cb)}
    difference, low, high = bootstrap(a, b, resamples, seed)
    return {"difference": difference, "ci_low": low, "ci_high": high, "mcnemar_p": math.nan}
