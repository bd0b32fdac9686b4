"""core.metrics against hand-computed cases."""
import numpy as np
import pytest

from core import metrics


def row(confidence, predicted, n=5):
    """Class probabilities whose largest is `confidence`, at `predicted`, the rest shared evenly."""
    p = np.full(n, (1 - confidence) / (n - 1))
    p[predicted] = confidence
    return p


def test_calibration_error_weights_each_bin_by_its_share():
    # 3 bins ([0, 1/3], (1/3, 2/3], (2/3, 1]); label 0 throughout, so predicting 0 is right.
    probs = np.array([row(0.3, 0), row(0.3, 1),               # bin 1: accuracy 0.5, confidence 0.3 -> 0.2
                      row(0.6, 0),                            # bin 2: accuracy 1, confidence 0.6 -> 0.4
                      row(0.9, 0), row(0.9, 0), row(0.9, 2)])  # bin 3: accuracy 2/3, confidence 0.9 -> 0.2333
    y = np.zeros(6, int)
    expected = 2 / 6 * 0.2 + 1 / 6 * 0.4 + 3 / 6 * (0.9 - 2 / 3)
    assert metrics.expected_calibration_error(y, probs, bins=3) == pytest.approx(expected)
    # The same samples in one bin average away the per-bin gaps: a different, smaller figure.
    one_bin = abs(4 / 6 - np.mean([0.3, 0.3, 0.6, 0.9, 0.9, 0.9]))
    assert metrics.expected_calibration_error(y, probs, bins=1) == pytest.approx(one_bin)
    assert one_bin < expected
