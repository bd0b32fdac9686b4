"""The pure parts of the hand-run benchmarks: settings and projections."""
import pytest

from bench.growth import with_params
from bench.projection import SPLITS, project


def test_with_params_sets_dotted_keys_on_a_copy():
    params = {"image_size": 96, "cifar10": {"train_fraction": 1.0, "val_fraction": 0.1}}
    got = with_params(params, {"image_size": 32, "cifar10.train_fraction": 0.25})
    assert got == {"image_size": 32, "cifar10": {"train_fraction": 0.25, "val_fraction": 0.1}}
    assert params["cifar10"]["train_fraction"] == 1.0 and params["image_size"] == 96


def test_projection_scales_rates_to_the_full_splits():
    rates = {"features_ips": 500.0, "frozen_epoch_s": 2.0, "fine_tune_ips": 100.0, "evaluate_ips": 250.0}
    p = project(rates, frozen_epochs=10, fine_tune_epochs=5)
    assert p["features_s"] == pytest.approx((SPLITS["train"] + SPLITS["val"]) / 500)
    assert p["frozen_s"] == pytest.approx(20.0)
    # each phase-2 epoch trains on train and runs the classifier over val
    assert p["fine_tune_s"] == pytest.approx(5 * (SPLITS["train"] / 100 + SPLITS["val"] / 250))
    assert p["evaluate_s"] == pytest.approx(SPLITS["test"] / 250)


def test_scratch_latency_profiles_the_three_shipped_forms(tmp_path, monkeypatch):
    """bench.scratch_latency times what the train stage ships: the flip-TTA model is the single view twice
    (same weights, plus the mirror's 32 x 32 permutation) at twice the FLOPs; the old network is the VGG one."""
    import json
    import sys

    from bench import scratch_latency
    out = tmp_path / "latency.json"
    monkeypatch.setattr(sys, "argv", ["scratch_latency", "--runs", "20", "--repeats", "1", "--out", str(out)])
    scratch_latency.main()
    rows = json.loads(out.read_text())["medians"]
    old, single, tta = rows.values()
    assert old["params"] == 323_946 and single["params"] + 32 * 32 == tta["params"]
    assert 2 * single["gflops"] <= tta["gflops"] < 2 * single["gflops"] + 0.001
    assert all(0 < r["latency_p50_ms"] <= r["latency_p90_ms"] for r in rows.values())
