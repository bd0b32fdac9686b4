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
