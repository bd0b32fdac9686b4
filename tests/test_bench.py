"""The pure part of the hand-run benchmarks: the projection, the per-stage table, a lever against the exact way."""
import numpy as np
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



def test_stage_times_table_each_experiment_by_step_and_wall_time_between_creations(monkeypatch):
    """bench.stage_times: the steps each stage recorded (conditions' wall_s, train.json's phase times) as
    columns, each stage's process, their sum, and the experiment's wall time from the previous one's creation
    (the first from the run's start); failed and queued experiments are left out."""
    from bench import stage_times
    files = {
        ("a", "features"): {"wall_s": {"build": 1, "extract_train": 9, "extract_val": 1, "process": 14}},
        ("a", "train"): {"wall_s": {"process": 100}}, ("a", "metrics/train.json"): {"frozen_time_s": 5,
                                                                                       "fine_tune_time_s": 80,
                                                                                       "fine_tune_cache_time_s": 30},
        ("a", "evaluate"): {"wall_s": {"sets": 3, "cifar10c": 6, "process": 12}},
        ("a", "profile"): {"wall_s": {"latency": 2, "throughput": 1, "flops": 4, "tflite_fp32": 7, "process": 20}},
        ("b", "train"): {"wall_s": {"process": 50}}, ("b", "metrics/train.json"): {"scratch_time_s": 40},
    }

    def read_json(path, repo, rev):
        key = path if path == "metrics/train.json" else path.split("/")[-1].removesuffix(".json")
        return files.get((rev, key), {})
    monkeypatch.setattr(stage_times, "read_json", read_json)
    records = [{"Experiment": "b", "rev": "b"}, {"Experiment": "a", "rev": "a"},
               {"Experiment": "c", "rev": "c", "State": "Failed"}, {"Experiment": None, "rev": "workspace"}]
    commits = {"a": 1000.0, "b": 1600.0, "c": 2000.0}  # epoch seconds of the experiments' commits
    a, b = stage_times.rows(records, ".", 700.0, created=lambda repo, rev: commits[rev])
    assert a["model"] == "a" and a["features: extract"] == 10 and a["phase 1"] == 5 and a["phase 2 / scratch"] == 80
    assert a["phase 2: of which the view cache"] == 30 and b["phase 2: of which the view cache"] is None
    assert a["evaluate: CIFAR-10-C"] == 6 and a["profile: Keras latency + throughput"] == 3
    assert a["profile: TFLite fp16"] is None and a["stages"] == 146 and a["experiment wall"] == 300
    assert b["model"] == "b" and b["phase 2 / scratch"] == 40 and b["phase 1"] is None and b["experiment wall"] == 600
    assert stage_times.markdown([a, b]).splitlines()[0].startswith("| model | features: extract | phase 1 |")


def test_levers_pair_the_two_experiments_on_the_same_images_and_refuse_different_ones():
    """bench.levers: lever minus exact on each set both have, with the paired interval of compare.stats."""
    from bench import levers
    from compare.stats import paired
    y = np.arange(200) % 10
    exact_right, lever_right = np.arange(200) < 150, np.arange(200) < 140

    def arrays(right, digest="same"):
        pred = np.where(right, y, (y + 1) % 10).astype(np.uint8)
        return {"y": y.astype(np.uint8), "pred": pred, "prob": np.eye(10, dtype=np.float16)[pred],
                "images_sha256": np.array(digest)}
    got = levers.compare_sets({"val": arrays(exact_right), "test": arrays(exact_right)}, {"val": arrays(lever_right)},
                              ["val", "test"])
    assert list(got) == ["val"] and got["val"]["exact"] == 0.75 and got["val"]["lever"] == 0.70
    assert got["val"]["difference"] == pytest.approx(-0.05)
    want = paired(lever_right[None].astype(float), exact_right[None].astype(float))
    assert (got["val"]["ci_low"], got["val"]["ci_high"]) == (want["ci_low"], want["ci_high"])
    with pytest.raises(SystemExit, match="different images"):
        levers.compare_sets({"val": arrays(exact_right)}, {"val": arrays(lever_right, "other")}, ["val"])


def test_phase2_projection_counts_the_cache_once_per_view_and_the_top_every_epoch():
    from bench.phase2 import project
    p = project({"in_loop_ips": 100.0, "cache_ips": 200.0, "top_ips": 500.0}, train_images=1000, epochs=5, views=2)
    assert p == {"exact_s": pytest.approx(50.0), "cached_s": pytest.approx(2 * 5.0 + 5 * 2.0)}


def test_scratch_recipes_parse_as_yaml_overrides_with_the_bench_knobs():
    """bench.scratch: NAME:key=value,... with values read as YAML (DVC's reading), widths as a/b/c."""
    from bench.scratch import parse_recipe
    assert parse_recipe("now") == ("now", {})
    name, overrides = parse_recipe("before:net=resnet9,decay_all=true,learning_rate=3e-3,widths=24/48/96/192")
    assert name == "before" and overrides == {"net": "resnet9", "decay_all": True, "learning_rate": 0.003,
                                              "widths": [24, 48, 96, 192]}
    with pytest.raises(SystemExit, match="not key=value"):
        parse_recipe("x:epochs")


def test_scratch_subset_keeps_the_same_seeded_share_of_every_class():
    """bench.scratch.subset: fraction x the rarest class's count of each class, the same images for the same seed
    (in the data's order), others for another; the whole set at 1."""
    from bench.scratch import subset
    y = np.repeat(np.arange(4), [40, 40, 40, 50])
    data = {"x": np.arange(len(y)) * 10, "y": y}
    part = subset(data, 0.25, 7)
    assert np.bincount(part["y"]).tolist() == [10, 10, 10, 10]
    assert np.all(np.diff(part["x"]) > 0) and np.all(part["x"] // 10 < len(y))
    assert np.array_equal(part["y"], y[part["x"] // 10])  # images stay with their labels
    assert np.array_equal(subset(data, 0.25, 7)["x"], part["x"])
    assert not np.array_equal(subset(data, 0.25, 8)["x"], part["x"])
    assert subset(data, 1.0, 7) is data


def test_scratch_identity_init_passes_each_convs_first_channels_through():
    """bench.scratch's dirac knob: every 3x3 conv of basecnn starts with its first min(in, out) filters passing
    their input channel through, the rest of its filters as they were."""
    import numpy as np

    from bench.scratch import identity_init
    from core import models
    from core.runtime import keras, tf
    model = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 0, 0.0)[0]
    convs = [layer for layer in model.get_layer(models.BACKBONE).layers
             if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    before = [layer.kernel.numpy() for layer in convs]
    identity_init(model)
    assert len(convs) == 6
    rng = np.random.default_rng(0)
    for layer, old in zip(convs, before):
        kernel = layer.kernel.numpy()
        n = min(kernel.shape[2:])
        x = rng.normal(size=(1, 5, 5, kernel.shape[2])).astype("float32")
        y = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
        np.testing.assert_allclose(y[..., :n], x[..., :n], atol=1e-6)
        np.testing.assert_array_equal(kernel[..., n:], old[..., n:])


def test_scratch_ramped_lookahead_averages_every_weight_with_a_rising_decay():
    """bench.scratch's ramp knob: every 5th step each weight, BatchNorm's moving statistics included, becomes
    decay x its average + (1 - decay) x itself, decay = 0.95^5 x (share of steps done)^3."""
    import numpy as np

    from bench.scratch import RampedLookahead
    from core.runtime import keras
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    lookahead = RampedLookahead(total_steps=10)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    start = [w.numpy() for w in model.weights]
    for step in range(1, 11):
        for w in model.weights:
            w.assign(w.numpy() + 1.0)  # a "training step"
        lookahead.on_train_batch_end(step - 1)
        if step == 4:
            np.testing.assert_allclose(model.weights[-1].numpy(), start[-1] + 4.0)  # no average before step 5
    d5, d10 = 0.95 ** 5 * 0.5 ** 3, 0.95 ** 5
    for w, w0 in zip(model.weights, start):
        at5 = d5 * w0 + (1 - d5) * (w0 + 5.0)
        np.testing.assert_allclose(w.numpy(), d10 * at5 + (1 - d10) * (at5 + 5.0), rtol=1e-6)


def test_scratch_alternating_flip_mirrors_each_image_in_every_other_epoch():
    """bench.scratch's alternate knob: each epoch holds every image once, and an image mirrored in one epoch is
    not in the next (and is again in the one after), a seeded half of them mirrored in the first."""
    import numpy as np

    from bench.scratch import alternating_flip_batches
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    ds = alternating_flip_batches(x, np.arange(10), 4, seed=3, augment=None)
    assert int(ds.cardinality()) == 3
    mirrored = []
    for _ in range(3):
        seen = {int(i): image for xb, yb in ds for image, i in zip(xb.numpy(), yb.numpy())}
        assert sorted(seen) == list(range(10))
        for i, image in seen.items():
            assert np.array_equal(image, x[i]) or np.array_equal(image, x[i][:, ::-1])
        mirrored.append(np.array([not np.array_equal(seen[i], x[i]) for i in range(10)]))
    assert 0 < mirrored[0].sum() < 10
    assert np.array_equal(mirrored[1], ~mirrored[0]) and np.array_equal(mirrored[2], mirrored[0])
