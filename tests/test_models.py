"""The registry and the two-phase recipe, on tiny random data at 32 px."""
import re

import keras
import numpy as np
import pytest

from core import StageError, hardware, models, pipeline, training
from conftest import ROOT
from core.params import load
from core.pipeline import predict_images
from core.training import fit


def batches(ds):
    """A dataset's batches joined back into arrays, one per element of its tuples."""
    return [np.concatenate(parts) for parts in zip(*[[t.numpy() for t in batch] for batch in ds])]


def tiny(n=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(StageError, match="`model` is 'vgg16'; allowed: basecnn, mobilenetv2, resnet50v2, "
                                         "efficientnetb0, densenet121"):
        models.entry("vgg16")


def test_input_size_constraints():
    assert models.input_size("basecnn", 96) == 32  # fixed
    assert models.input_size("mobilenetv2", 64) == 64
    with pytest.raises(StageError, match="`image_size` is 16; densenet121 needs at least 32 px"):
        models.input_size("densenet121", 16)


def test_each_entry_has_its_own_preprocessing():
    x = np.full((1, 2, 2, 3), 255.0, np.float32)
    got = {name: np.asarray(e.preprocess(x.copy())).ravel()[0] for name, e in models.REGISTRY.items()}
    assert got["mobilenetv2"] == got["resnet50v2"] == pytest.approx(1.0)  # [-1, 1]
    assert got["efficientnetb0"] == pytest.approx(255.0)  # the model normalises inside
    assert got["densenet121"] == pytest.approx((1 - 0.485) / 0.229)  # ImageNet mean/std, "torch" mode
    assert got["basecnn"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_preprocessing_layer_computes_the_entrys_preprocess_input(name):
    """The layer inside the saved model is the family's own preprocess_input, to float rounding."""
    e = models.REGISTRY[name]
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    expected = np.asarray(e.preprocess(x.copy()))
    layer = models.preprocessing_layer(e.preprocess)
    got = x if layer is None else keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (layer is None) == (name == "efficientnetb0")  # EfficientNet normalises inside its own graph


def test_preprocessing_that_is_not_per_channel_affine_is_refused():
    bgr = lambda x: x[..., ::-1] - 100.0  # noqa: E731  "caffe" mode's channel swap
    with pytest.raises(ValueError, match="not a per-channel affine map"):
        models.preprocessing_layer(bgr)
    with pytest.raises(ValueError, match="not a per-channel affine map"):
        models.preprocessing_layer(np.sqrt)


def test_image_batches_keep_their_labels_follow_the_seed_and_come_back_as_rounded_uint8():
    """What `pipeline.image_batches` promises the recipe: images stay with their labels; one shuffle seed gives
    one order, so phase 1 on cached features sees the examples in the order the in-loop path would;
    augmented images are rounded and clipped back to uint8, what the model takes."""
    x, _ = tiny(8)
    y = np.arange(8, dtype=np.uint8)  # one label per image: a label says which image it came with
    got_x, got_y = batches(pipeline.image_batches(x, y, 4))
    np.testing.assert_array_equal(got_x, x)
    assert got_y.tolist() == y.tolist()
    got_x, order = batches(pipeline.image_batches(x, y, 4, shuffle_seed=1))
    assert sorted(order.tolist()) == y.tolist() and order.tolist() != y.tolist()  # shuffled, nothing lost
    np.testing.assert_array_equal(got_x, x[order])
    cached = pipeline.feature_batches(np.arange(8, dtype=np.float32)[:, None], y, 4, shuffle_seed=1)  # row i holds i
    features, feature_order = batches(cached)
    assert feature_order.tolist() == order.tolist() and features[:, 0].tolist() == order.tolist()

    # An augmentation that adds 0.6 (or takes it away): rounded, not truncated; clipped to 0..255.
    x[0, 0, 0] = [0, 255, 128]
    for shift, expected in ((0.6, np.minimum(x.astype(int) + 1, 255)), (-0.6, np.maximum(x.astype(int) - 1, 0))):
        got_x, _ = batches(pipeline.image_batches(x, y, 4, augment=lambda xb, training, s=shift: xb + s))
        assert got_x.dtype == np.uint8
        np.testing.assert_array_equal(got_x, expected)
    got_x, _ = batches(pipeline.image_batches(x, y, 4, augment=pipeline.augmenter(True, 0.1, 0.1, seed=0)))
    assert got_x.dtype == np.uint8 and got_x.shape == x.shape and not np.array_equal(got_x, x)
    # A shift alone (pad-and-crop): each image is its original moved by whole pixels, borders reflected.
    shifted, _ = batches(pipeline.image_batches(x, y, 4, augment=pipeline.augmenter(False, 0.0, 0.0, 0, 0.125)))
    assert shifted.dtype == np.uint8 and shifted.shape == x.shape and not np.array_equal(shifted, x)
    for image, original in zip(shifted, x):
        centre = image[8:24, 8:24]
        assert any(np.array_equal(centre, original[8 + dy:24 + dy, 8 + dx:24 + dx])
                   for dy in range(-4, 5) for dx in range(-4, 5))


def test_repeated_batches_pass_over_every_image_once_per_repeat_each_pass_shuffled_afresh():
    """A labelled budget's epoch (train.max_repeats): `repeats` passes, each a permutation of the images (so
    every image is seen equally often), the passes in different orders, no short batch between them."""
    x, _ = tiny(10)
    y = np.arange(10, dtype=np.uint8)
    for ds in (pipeline.image_batches(x, y, 4, shuffle_seed=3, repeats=3),
               pipeline.feature_batches(np.arange(10, dtype=np.float32)[:, None], y, 4, shuffle_seed=3, repeats=3)):
        assert int(ds.cardinality()) == 8  # ceil(30 / 4): one epoch of a set three times the size
        sizes = [len(b[1]) for b in ds]
        assert sizes == [4] * 7 + [2]
        _, order = batches(ds)
        passes = order.reshape(3, 10)
        assert all(sorted(p.tolist()) == y.tolist() for p in passes)
        assert len({tuple(p) for p in passes}) == 3


@pytest.mark.parametrize("fraction, cap, repeats", [(1.0, 100, 1), (0.5, 100, 2), (0.3, 100, 3), (0.2, 100, 5),
                                                    (0.05, 100, 20), (0.01, 100, 100), (0.01, 20, 20),
                                                    (0.013, 100, 77), (0.9, 100, 1), (0.05, 1, 1)])
def test_a_labelled_budget_repeats_its_images_up_to_the_cap(fraction, cap, repeats):
    assert training.epoch_repeats(fraction, cap) == repeats


def test_pipelines_run_without_the_tf_data_autotuner():
    # Its teardown stall made fits and predicts end on 10 ms x 2^k ticks (docs/performance.md).
    x, y = tiny(8)
    for ds in (pipeline.image_batches(x, y, 4, augment=pipeline.augmenter(True, 0.0, 0.0, 0)),
               pipeline.feature_batches(np.zeros((8, 5), np.float32), y, 4, shuffle_seed=1)):
        assert ds.options().autotune.enabled is False
        assert [len(b[0]) for b in ds] == [4, 4]


@pytest.mark.slow
def test_trunk_takes_raw_images_and_resizes_only_when_needed():
    names = lambda m: [layer.name for layer in m.layers]  # noqa: E731
    assert names(models.build_trunk("resnet50v2", (32, 32, 3), 64, "none")) == [
        "image", "resize", "preprocess", "backbone", "pool"]
    assert names(models.build_trunk("efficientnetb0", (32, 32, 3), 32, "none")) == ["image", "backbone", "pool"]
    trunk = models.build_trunk("basecnn", (48, 40, 3), 96, "none")  # basecnn always runs at 32 px
    assert trunk.input.dtype == "uint8" and tuple(trunk.input.shape) == (None, 48, 40, 3)
    assert trunk.get_layer("resize").output.shape[1:3] == (32, 32)


def test_basecnn_whitening_layer_whitens_the_patches_of_the_images_it_was_fit_on():
    """fit_whitening: the first layer's 24 outputs on those images' 2x2 patches have mean 0 and, half of them,
    a diagonal covariance near the identity (the other half are their negatives); the layer stays out of training; the same
    images give the same weights, and a model without the layer is left alone."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # correlated channels and neighbours, as in real images
    base = rng.integers(0, 200, (64, 8, 8, 1))
    x = np.clip(np.repeat(np.repeat(base, 4, axis=1), 4, axis=2) + rng.integers(0, 50, (64, 32, 32, 3)), 0, 255)
    x = x.astype(np.uint8)
    model, _ = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 0, 0.0)
    models.fit_whitening(model, x)
    whiten = model.get_layer("backbone").get_layer("whiten")
    assert not whiten.trainable and not whiten.trainable_weights
    probe = keras.Model(model.get_layer("backbone").input, whiten.output)
    out = probe.predict(x.astype("float32") / 255, verbose=0).reshape(-1, 24).astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-3)
    cov = np.cov(out[:, :12], rowvar=False)  # each direction at variance λ / (λ + eps): near 1 but the faintest
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=0.02)
    assert np.all((np.diag(cov) > 0.8) & (np.diag(cov) < 1.02))  # the faintest here: pixel noise, λ ≈ 6 eps
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-4)
    again, _ = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 0, 0.0)
    models.fit_whitening(again, x.copy())
    assert all(np.array_equal(a, b) for a, b in zip(whiten.get_weights(),
                                                    again.get_layer("backbone").get_layer("whiten").get_weights()))
    inputs = keras.Input((32, 32, 3))
    other = keras.Sequential([inputs, keras.layers.Conv2D(2, 3, name="conv")], name="backbone")
    other = keras.Model(inputs, other(inputs))
    before = other.get_weights()
    models.fit_whitening(other, x)
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))


def unfrozen(name, fraction, rate):
    """`name`'s model at 32 px from random weights, head only trainable, then through models.unfreeze: the top
    `fraction` of the backbone's layers opened, BatchNorm and the layers below kept frozen, recompiled at `rate`.
    Returns (model, top layers, BatchNorm layers)."""
    keras.utils.set_random_seed(0)
    model, head = models.build_model(models.build_trunk(name, (32, 32, 3), 32, "none"), 10, 16, 0.0)
    backbone = model.get_layer("backbone")
    assert not backbone.trainable
    assert {w.path for w in model.trainable_weights} == {w.path for w in head.trainable_weights}

    n = models.unfreeze(model, fraction, rate)
    top = backbone.layers[-round(fraction * len(backbone.layers)):]
    bn = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert n == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top) > 0
    assert all(not layer.trainable for layer in bn)
    assert all(not layer.trainable for layer in backbone.layers[:-len(top)])
    assert float(model.optimizer.learning_rate) == pytest.approx(rate)
    return model, top, bn


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, e in models.REGISTRY.items() if e.two_phase])
def test_every_backbone_opens_layers_for_phase_2_at_the_smallest_size(name):
    """Phase 2 (models.unfreeze, then fit) is the same code for every entry; what differs is the backbone it
    opens: at params.yaml's unfreeze_fraction, each entry's top holds layers to train (not only BatchNorm),
    and the model runs at 32 px. (tests/test_train.py runs phase 2 through the train stage on MobileNetV2.)"""
    fraction = load(ROOT / "params.yaml")["train"]["fine_tune"]["unfreeze_fraction"]
    model, _, _ = unfrozen(name, fraction, 1e-5)
    probs = keras.ops.convert_to_numpy(model(tiny(2)[0]))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_unfreeze_opens_the_top_and_keeps_batchnorm_frozen():
    model, top, bn = unfrozen("mobilenetv2", 0.25, 1e-5)
    backbone = model.get_layer("backbone")

    # One training step: the unfrozen top conv moves; frozen layers and BatchNorm statistics do not.
    conv_top = next(layer for layer in reversed(top) if isinstance(layer, keras.layers.Conv2D))
    conv_low = next(layer for layer in backbone.layers[:-len(top)] if isinstance(layer, keras.layers.Conv2D))
    before = {id(v): keras.ops.convert_to_numpy(v).copy() for layer in (conv_top, conv_low, *bn)
              for v in layer.weights}
    x, y = tiny(8)
    model.fit(pipeline.image_batches(x, y, 8), epochs=1, verbose=0, shuffle=False)  # a dataset shuffles itself
    changed = lambda layer: any(not np.array_equal(before[id(v)], keras.ops.convert_to_numpy(v))  # noqa: E731
                                for v in layer.weights)
    assert changed(conv_top)
    assert not changed(conv_low)
    assert not any(changed(layer) for layer in bn)


@pytest.mark.slow
def test_cached_features_give_the_same_head_as_the_in_loop_path():
    """Phase 1 on cached features == phase 1 with the frozen backbone run every step.

    ResNet50V2 because its random-init features are not degenerate (MobileNetV2's
    and EfficientNetB0's vanish to ~1e-7 without ImageNet weights)."""
    x, y = tiny(48)
    heads = []
    for cached in (True, False):
        keras.utils.set_random_seed(3)
        trunk = models.build_trunk("resnet50v2", (32, 32, 3), 32, "none")
        model, head = models.build_model(trunk, 10, 16, 0.2)
        initial = [keras.ops.convert_to_numpy(w).copy() for w in head.weights]
        if cached:
            f = predict_images(trunk, x, 16)
            assert np.abs(f).mean() > 1e-3
            models.compile_model(head, 1e-2)
            fit(head, pipeline.feature_batches(f, y, 8, shuffle_seed=5), pipeline.feature_batches(f, y, 8), 2, 5)
        else:
            models.compile_model(model, 1e-2)
            fit(model, pipeline.image_batches(x, y, 8, shuffle_seed=5), pipeline.image_batches(x, y, 8), 2, 5)
        heads.append([keras.ops.convert_to_numpy(w) for w in head.weights])
    for a, b in zip(*heads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not all(np.allclose(a, c) for a, c in zip(heads[0], initial))  # training did move the head


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, e in models.REGISTRY.items() if e.two_phase])
def test_every_backbone_splits_below_its_first_trainable_layer_into_an_exact_bottom_and_top(name):
    """split_at_trainable: the frozen bottom and the top together compute the model exactly, the top holds every
    trainable weight (the same variables, so training it trains the model) and the bottom none. EfficientNetB0's
    frontier is two tensors (a skip connection crosses it); with nothing unfrozen it is the backbone's output."""
    x = tiny(4)[0]
    fractions = [load(ROOT / "params.yaml")["train"]["fine_tune"]["unfreeze_fraction"]]
    for fraction in fractions + ([0.0] if name == "mobilenetv2" else []):  # nothing unfrozen: the same code for all
        keras.utils.set_random_seed(0)
        model, _ = models.build_model(models.build_trunk(name, (32, 32, 3), 32, "none"), 10, 16, 0.0)
        models.unfreeze(model, fraction, 1e-5)
        bottom, top = models.split_at_trainable(model)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(top(bottom(x))), keras.ops.convert_to_numpy(model(x)),
                                   rtol=1e-6, atol=1e-7)
        assert [id(v) for v in top.trainable_weights] == [id(v) for v in model.trainable_weights]
        assert not bottom.trainable_weights
        if not fraction:
            assert [t.shape for t in bottom.outputs] == [model.get_layer("backbone").output.shape]
        else:  # the cheapest cut to cache: one tensor, but for EfficientNetB0's skip connection
            assert len(bottom.outputs) == (2 if name == "efficientnetb0" else 1), bottom.outputs


@pytest.mark.slow
def test_cached_phase_2_with_one_plain_view_trains_as_the_in_loop_phase_2(tmp_path):
    """fine_tune_cached with one view and no augmentation sees what fine_tune sees (the same images in the same
    shuffled order, the same steps): it must end with the same weights. ResNet50V2: its random-init features
    are not degenerate. The cache is on disk, as the stage holds it, and its files are gone afterwards."""
    x, y = tiny(48)
    vx, vy = tiny(16, seed=1)
    trained = []
    for cached in (True, False):
        keras.utils.set_random_seed(3)
        model, _ = models.build_model(models.build_trunk("resnet50v2", (32, 32, 3), 32, "none"), 10, 16, 0.0)
        before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
        if cached:
            h, _, best, _, cache_s = training.fine_tune_cached(
                model, 0.25, 1e-3, (pipeline.image_batches(x, y, 8), y), (pipeline.image_batches(vx, vy, 8), vy),
                1, 8, 5, 1, 2, 5, cache_dir=tmp_path)
            assert cache_s > 0 and not list(tmp_path.iterdir())
        else:
            h, _, best, _ = training.fine_tune(model, 0.25, 1e-3, pipeline.image_batches(x, y, 8, shuffle_seed=5),
                                               pipeline.image_batches(vx, vy, 8), 2, 5)
        trained.append(([keras.ops.convert_to_numpy(w) for w in model.weights], h["val_loss"]))
    (cached_w, cached_loss), (loop_w, loop_loss) = trained
    np.testing.assert_allclose(cached_loss, loop_loss, rtol=1e-4)
    for a, b in zip(cached_w, loop_w):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(cached_w, before))  # training did move the model


def test_frozen_outputs_hold_one_array_per_view_and_view_batches_pass_each_image_once_in_a_drawn_view(tmp_path):
    """Each pass over an augmenting pipeline is a new view; without augmentation the views are equal; held in
    files, the same arrays. A pass of view_batches holds every image once, in one of its views, and the same seed
    gives the same batches."""
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    scaled = keras.layers.Rescaling(1.0)(inputs)
    bottom = keras.Model(inputs, [keras.layers.GlobalAveragePooling2D()(scaled), keras.layers.Flatten()(scaled)])
    x, y = tiny(20)
    def flip():
        return pipeline.augmenter(flip=True, rotation=0.0, zoom=0.0, seed=1, translate=0.125)
    plain = pipeline.frozen_outputs(bottom, pipeline.image_batches(x, y, 8), 20, views=2)
    augmented = pipeline.frozen_outputs(bottom, pipeline.image_batches(x, y, 8, augment=flip()), 20, views=3)
    assert [a.shape for a in augmented] == [(3, 20, 3), (3, 20, 32 * 32 * 3)]
    np.testing.assert_array_equal(plain[1][0], x.reshape(20, -1))
    np.testing.assert_array_equal(plain[1][0], plain[1][1])
    assert not np.array_equal(augmented[1][0], augmented[1][1])

    on_disk = pipeline.frozen_outputs(bottom, pipeline.image_batches(x, y, 8, augment=flip()), 20, 3, tmp_path)
    assert [type(a) for a in on_disk] == [np.memmap] * 2 and len(list(tmp_path.iterdir())) == 2
    for a, b in zip(on_disk, augmented):  # a fresh augmenter with the same seed draws the same views
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)

    def passes(seed):
        out = []
        for (pooled, flat), labels in pipeline.view_batches(augmented, y, 6, shuffle_seed=seed, repeats=2):
            out += [(int(label), f.tobytes()) for label, f in zip(labels.numpy(), flat.numpy())]
        return out
    seen = passes(7)
    assert len(seen) == 40 and passes(7) == seen and passes(8) != seen
    # Every row is one of its image's views, and each image comes twice (two passes).
    views = {augmented[1][v, i].tobytes(): i for v in range(3) for i in range(20)}
    assert sorted(views[f] for _, f in seen) == sorted(list(range(20)) * 2)
    assert all(label == y[views[f]] for label, f in seen)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # Keras lists every layer of the wrong file
def test_weights_file_is_loaded_and_a_wrong_one_is_refused(tmp_path):
    keras.utils.set_random_seed(1)
    source = models.build_backbone("mobilenetv2", 32, "none")
    source.save_weights(tmp_path / "mnv2.weights.h5")
    loaded = models.build_backbone("mobilenetv2", 32, str(tmp_path / "mnv2.weights.h5"))
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(StageError, match="`weights` file .*mnv2.weights.h5 does not fit efficientnetb0"):
        models.build_backbone("efficientnetb0", 32, str(tmp_path / "mnv2.weights.h5"))
    with pytest.raises(StageError, match="`weights` is 'imagenet21k'; allowed: imagenet, none"):
        models.build_backbone("efficientnetb0", 32, "imagenet21k")


def test_imagenet_weights_offline_fail_at_once_with_the_fix(no_imagenet_weights):
    with pytest.raises(StageError, match=r"could not get ImageNet weights for resnet50v2 .*set `weights: none`"):
        models.build_backbone("resnet50v2", 32, "imagenet")
    requested = [path for path, _ in no_imagenet_weights.server.log]
    assert requested == ["/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"]


PRETRAINED = [name for name, e in models.REGISTRY.items() if e.two_phase]


def stored_weights(path, layer_name):
    """{variable path: values} of one layer in a weights file of Keras' legacy HDF5 layout (the published files')."""
    import h5py
    with h5py.File(path, "r") as f:
        group = f[layer_name]
        return {(n.decode() if isinstance(n, bytes) else n): group[n][()] for n in group.attrs["weight_names"]}


@pytest.mark.slow  # builds each real backbone twice
@pytest.mark.parametrize("name", PRETRAINED)
def test_a_directory_of_keras_weights_files_gives_each_backbone_the_file_keras_would_download(
        standin_dir, tmp_path, monkeypatch, name):
    """`weights: <directory>` (a copy of ~/.keras/models, here the stand-ins of every backbone): the file Keras
    would download for the model, by Keras' own name, is the one loaded; a relative path is read against the
    project's root (DVC_ROOT, as DVC sets it; the current directory is elsewhere); a directory without that file
    is refused in one line naming it."""
    from standin_weights import OFFICIAL_NAMES
    expected = standin_dir / OFFICIAL_NAMES[name].format(rows=96)
    monkeypatch.setenv("DVC_ROOT", str(standin_dir.parent))
    monkeypatch.chdir(tmp_path)
    backbone, used = models.backbone_and_weights_file(name, 96, standin_dir.name)
    assert used == str(expected)
    compared = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # seeded random statistics in every stand-in
            mine = {w.path: keras.ops.convert_to_numpy(w) for w in layer.weights}
            theirs = stored_weights(expected, layer.name)
            assert mine.keys() == theirs.keys()
            compared += all(np.array_equal(mine[k], theirs[k]) for k in mine)
    assert compared > 0 and compared == sum(isinstance(la, keras.layers.BatchNormalization) for la in backbone.layers)
    (tmp_path / "empty").mkdir()
    said = re.escape(f"`weights` directory {tmp_path / 'empty'} has no {expected.name}, the file Keras downloads "
                     f"for {name} at 96 px: copy it there from ~/.keras/models/")
    with pytest.raises(StageError, match=said) as refused:
        models.build_backbone(name, 96, str(tmp_path / "empty"))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("gpus, devices, strategy, mixed, threads", [
    ([], None, "default", False, 2),
    (["GPU:0"], None, "default", True, 0),
    (["GPU:0", "GPU:1"], None, "mirrored", True, 0),
    ([], 2, "mirrored", False, 2),  # a CPU split into 2 logical devices (tests/test_mirrored.py trains so)
    (["GPU:0"], 2, "mirrored", True, 0),  # a GPU split in two
])
def test_hardware_plan(gpus, devices, strategy, mixed, threads):
    """MirroredStrategy on several devices of the kind training uses only: several GPUs, or a device a process
    split itself (tf.config.set_logical_device_configuration)."""
    p = hardware.plan(gpus, cores=2, devices=devices)
    assert (p["strategy"], p["mixed_precision"], p["intra_op_threads"]) == (strategy, mixed, threads)


@pytest.mark.parametrize("gpus, native, setting, pays, policy", [
    ([], True, "auto", True, "mixed_bfloat16"),      # AVX512-BF16 / AMX CPU
    ([], False, "auto", True, "float32"),            # a CPU that would emulate bfloat16
    ([], True, "auto", False, "float32"),            # a model bfloat16 slows on the CPU (depthwise convolutions)
    (["GPU:0"], True, "auto", True, "mixed_float16"),  # the GPU's own mixed precision, whatever the CPU
    (["GPU:0"], True, "auto", False, "mixed_float16"),
    ([], True, "float32", True, "float32"),          # asked for: taken as is
    ([], False, "mixed_bfloat16", False, "mixed_bfloat16"),
])
def test_compute_precision_follows_the_setting_the_machine_and_the_model(gpus, native, setting, pays, policy):
    assert hardware.compute_policy(setting, hardware.plan(gpus, 2, native_bfloat16=native), pays) == policy


@pytest.mark.parametrize("setting, copied", [("float32", False), ("mixed_bfloat16", True)])
def test_in_policy_copies_only_for_another_policy_than_the_plans(setting, copied):
    """The model itself where it already computes in the policy asked for; else a copy in that policy with the
    same weights, which copy_weights brings back unchanged."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    net, policy = models.in_policy(model, setting, hardware.plan([], 2, native_bfloat16=True))
    assert policy == setting and (net is not model) == copied
    assert {layer.dtype_policy.name for layer in net.layers} == {setting}
    before = [w.copy() for w in model.get_weights()]
    net.set_weights([w + 1 for w in net.get_weights()])
    models.copy_weights(net, model)
    assert all(np.array_equal(a + 1, b) for a, b in zip(before, model.get_weights()))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert hardware.BFLOAT16_FLAGS[0] in hardware.cpu_flags(info) and "sse2" in hardware.cpu_flags(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert not hardware.cpu_flags(info) & set(hardware.BFLOAT16_FLAGS)
    assert hardware.cpu_flags(tmp_path / "absent") == set()  # macOS, Windows: float32


def test_a_bfloat16_trained_model_ships_computing_in_float32():
    """The from-scratch recipe trains a bfloat16 copy of the trunk (core.models.with_dtype_policy); the
    shipped model (for_deployment) is the same network computing in float32, weights unchanged."""
    keras.utils.set_random_seed(0)
    trunk = models.build_trunk("basecnn", (32, 32, 3), 32, "none")
    fast = models.with_dtype_policy(trunk, "mixed_bfloat16")
    inner = [layer for layer in fast.get_layer(models.BACKBONE).layers if layer.weights]
    assert inner and all(layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32" for layer in inner)
    assert fast.input.dtype == "uint8"
    model, _ = models.build_model(fast, 10, 16, 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (32, 32, 32, 3)).astype(np.uint8), np.arange(32) % 10
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    shipped = models.for_deployment(model)
    every = [layer for part in (shipped, shipped.get_layer(models.BACKBONE)) for layer in part.layers]
    assert {layer.compute_dtype for layer in every if layer.weights} == {"float32"}
    for mine, theirs in zip(model.weights, shipped.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # bfloat16 keeps 8 bits of mantissa: the two networks agree to a few parts in a thousand (0.2 % seen). The
    # tolerance is relative: these probabilities all lie near 0.1, where any absolute one over ~0.01 would pass
    # a model that outputs a flat 0.1 (up to 12 % off here).
    np.testing.assert_allclose(shipped.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0.01, atol=0)
    assert shipped.predict(x, verbose=0).dtype == np.float32


def test_strategy_follows_the_plan():
    import tensorflow as tf
    assert hardware.strategy(hardware.plan([], 2)) is tf.distribute.get_strategy()  # one device: TF's default
    assert hardware.strategy(hardware.plan(["GPU:0"], 0)) is tf.distribute.get_strategy()
    assert type(hardware.strategy(hardware.plan(["GPU:0", "GPU:1"], 0))) is tf.distribute.MirroredStrategy


@pytest.mark.parametrize("name, size", [("basecnn", 32), pytest.param("mobilenetv2", 96, marks=pytest.mark.slow)])
def test_flip_tta_averages_each_image_and_its_mirror_in_one_safe_model(tmp_path, name, size):
    """Either recipe's network (a backbone: resized inside the model, the mirror taken on the raw image)."""
    keras.utils.set_random_seed(0)
    model, _ = models.build_model(models.build_trunk(name, (32, 32, 3), size, "none"), 10, 16, 0.0)
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    mirrored = np.ascontiguousarray(x[:, :, ::-1])
    want = (model.predict(x, verbose=0) + model.predict(mirrored, verbose=0)) / 2
    shipped = models.for_deployment(model, flip_tta=True)
    shipped.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)  # built-in layers only
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, atol=1e-6)
    np.testing.assert_allclose(loaded.predict(mirrored, verbose=0), want, atol=1e-6)  # symmetric by construction
    assert loaded.get_layer(models.BACKBONE) is not None and loaded.input.dtype == "uint8"
    assert loaded.count_params() == model.count_params() + 32 * 32  # both passes share the weights


@pytest.fixture
def gpu_policy():
    """The global dtype policy core.hardware.configure sets on a GPU, set here on CPU; restored after."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(before)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_the_shipped_model_computes_in_float32_under_a_gpus_global_policy(gpu_policy, flip_tta):
    """On a GPU the global policy is mixed_float16: the layers for_deployment and with_flip_tta build must not
    take it, or the shipped model outputs float16 probabilities. The conditions record what the model computes
    in (its backbone's policy), not the global policy."""
    keras.utils.set_random_seed(0)
    model, _ = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 16, 0.0)
    assert models.backbone_policy(model) == "mixed_float16"  # what training computes in on a GPU
    shipped = models.for_deployment(model, flip_tta=flip_tta)
    every = [layer for part in (shipped, shipped.get_layer(models.BACKBONE)) for layer in part.layers]
    computing = [layer for layer in every if not isinstance(layer, (keras.Model, keras.layers.InputLayer))]
    assert {layer.compute_dtype for layer in computing} == {"float32"}
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    got = shipped.predict(x, verbose=0)
    assert shipped.output.dtype == "float32" and got.dtype == np.float32
    assert models.backbone_policy(shipped) == "float32"
    from core import profiling
    assert profiling.conditions(shipped)["dtype_policy"] == "float32"
    keras.mixed_precision.set_global_policy("float32")  # the same network shipped on a CPU: the same figures
    np.testing.assert_allclose(got, models.for_deployment(model, flip_tta=flip_tta).predict(x, verbose=0), atol=1e-6)


def test_cached_features_are_float32_under_a_gpus_global_policy(gpu_policy):
    """The trunk's backbone computes in float16 on a GPU, but the pooled features the features stage caches,
    and phase 1 learns on, are float32."""
    trunk = models.build_trunk("basecnn", (32, 32, 3), 32, "none")
    assert trunk.output.dtype == "float32"
