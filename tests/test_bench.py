"""The pure part of the hand-run benchmarks: the projection."""
import pytest

from bench.projection import SPLITS, project


def test_projection_scales_rates_to_the_full_splits():
    rates = {"features_ips": 500.0, "frozen_epoch_s": 2.0, "fine_tune_ips": 100.0, "evaluate_ips": 250.0}
    p = project(rates, frozen_epochs=10, fine_tune_epochs=5)
    assert p["features_s"] == pytest.approx((SPLITS["train"] + SPLITS["val"]) / 500)
    assert p["frozen_s"] == pytest.approx(20.0)
    # each phase-2 epoch trains on train and runs the classifier over val
    assert p["fine_tune_s"] == pytest.approx(5 * (SPLITS["train"] / 100 + SPLITS["val"] / 250))
    assert p["evaluate_s"] == pytest.approx(SPLITS["test"] / 250)

