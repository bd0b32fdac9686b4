"""compare.stats against hand-computed cases, and the bootstrap against the normal approximation it should
meet on many images."""
import math

import numpy as np
import pytest

from compare.stats import accuracy_interval, bootstrap, mcnemar_exact, paired, paired_bootstrap, wilson


def correctness(only_a, only_b, both, neither):
    """Per-image correctness of two models with the given counts of each kind of image, shuffled (seeded)."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    order = np.random.default_rng(0).permutation(len(a))
    return np.array(a)[order], np.array(b)[order]


def test_identical_predictions_differ_by_nothing_with_p_1():
    a, b = correctness(0, 0, 850, 150)
    assert paired_bootstrap(a, b) == (0.0, 0.0, 0.0)
    assert mcnemar_exact(a, b) == 1.0


def test_mcnemar_of_a_known_table_of_discordant_pairs():
    """10 images only a gets right, 2 only b: twice P(X >= 10) for X ~ Binomial(12, 1/2), by hand
    2 * (C(12,10) + C(12,11) + C(12,12)) / 2**12 = 2 * 79 / 4096; the concordant images do not count."""
    a, b = correctness(10, 2, 80, 8)
    assert mcnemar_exact(a, b) == pytest.approx(2 * 79 / 4096, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(2 * 79 / 4096, rel=1e-12)  # two-sided
    assert mcnemar_exact(*correctness(10, 2, 5000, 8)) == pytest.approx(2 * 79 / 4096, rel=1e-12)


def test_wilson_interval_by_hand_and_at_the_edges():
    # 85 of 100 at z = 1.96: centre (0.85 + 1.96^2/200) / (1 + 1.96^2/100) = 0.83705, half-width
    # 1.96 * sqrt(0.85 * 0.15 / 100 + 1.96^2 / 40000) / 1.038415 = 0.06989.
    low, high = wilson(85, 100, z=1.96)
    assert (low, high) == (pytest.approx(0.76716, abs=1e-5), pytest.approx(0.90694, abs=1e-5))
    assert wilson(0, 50)[0] == 0.0 and 0 < wilson(0, 50)[1] < 0.1
    assert wilson(50, 50)[1] == 1.0 and 0.9 < wilson(50, 50)[0] < 1
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_paired_bootstrap_meets_the_normal_approximation_on_many_images():
    """On 10,000 images with 300 and 200 discordant, the difference is 0.01 and its interval the normal
    one, 0.01 +- 1.96 * sqrt((0.03 + 0.02 - 0.01^2) / 10000), to within the bootstrap's own noise."""
    a, b = correctness(300, 200, 8000, 1500)
    difference, low, high = paired_bootstrap(a, b, resamples=20000, seed=1)
    half = 1.96 * math.sqrt((0.03 + 0.02 - 0.01 ** 2) / 10000)
    assert difference == pytest.approx(0.01)
    assert low == pytest.approx(0.01 - half, abs=3e-4) and high == pytest.approx(0.01 + half, abs=3e-4)


def test_paired_bootstrap_is_seeded_and_keeps_the_pairing():
    a, b = correctness(30, 10, 400, 60)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    difference, low, high = paired_bootstrap(a, b)
    assert difference == pytest.approx(20 / 500) and low < difference < high
    # The same accuracies unpaired (b's results shuffled across images) give a wider interval: the pairing
    # is what makes the paired one narrow.
    unpaired = np.random.default_rng(5).permutation(b)
    _, low_u, high_u = paired_bootstrap(a, unpaired)
    assert high_u - low_u > high - low
    with pytest.raises(ValueError, match="one correctness per image"):
        paired_bootstrap(a, b[:-1])


def test_the_general_bootstrap_meets_the_multinomial_one_on_one_run_each():
    """On right-or-wrong scores of one run each, resampling image indices gives the interval the multinomial
    draw of the discordant counts gives (the same distribution), to within the bootstrap's noise."""
    a, b = correctness(300, 200, 8000, 1500)
    general = bootstrap(a[None].astype(float), b[None].astype(float), resamples=4000, seed=2)
    multinomial = paired_bootstrap(a, b, resamples=4000, seed=2)
    assert general[0] == pytest.approx(0.01) and multinomial[0] == pytest.approx(0.01)
    assert general[1:] == pytest.approx(multinomial[1:], abs=1.5e-3)


def test_seeds_that_disagree_widen_the_interval_of_the_mean():
    """Three seeds at 70, 80 and 90 % on the same 2,000 images: the mean is 80 %, and its interval, which
    resamples the seeds too, is far wider than one run's Wilson interval at 80 %."""
    rng = np.random.default_rng(0)
    scores = np.stack([rng.permutation(np.arange(2000) < 2000 * p) for p in (0.7, 0.8, 0.9)]).astype(float)
    low, high = accuracy_interval(scores)
    w_low, w_high = wilson(1600, 2000)
    assert low < 0.8 < high and high - low > 3 * (w_high - w_low)
    assert accuracy_interval(scores[1:2]) == wilson(1600, 2000)  # one run, right or wrong: Wilson's
    assert np.isnan(paired(scores, scores[:1])["mcnemar_p"])  # several seeds: no McNemar
