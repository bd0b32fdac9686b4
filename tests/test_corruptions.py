"""CIFAR-10-C (core/corruptions.py, stage corrupt_cifar10): every corruption at every severity,
parameters checked against the reference formulas where they are direct."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from core import corruptions
from core.io import load_npz, save_npz, write_json
from core import StageError
from core.data import balanced_parts, balanced_subset
from stages import corrupt_cifar10


def natural_images(n=12, seed=0):
    """Smooth colour fields with an edge: closer to photographs than white noise, which blurs barely change."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((n, 32, 32, 3)), (0, 3, 3, 0))
    x = (x - x.min()) / (x.max() - x.min())
    x[:, :, 16:] = 0.7 * x[:, :, 16:] + 0.3  # a vertical edge
    return np.uint8(x * 230 + 10)


X = natural_images()
TEXTURES = corruptions.frost_textures(np.random.default_rng(0), count=2, size=64)


def run(name, severity, x=X, seed=0):
    return corruptions.corrupt(x, name, severity, corruptions.rng_for(seed, name, severity), TEXTURES)


@pytest.mark.parametrize("name", corruptions.NAMES)
def test_every_severity_gives_uint8_images_of_the_input_shape_deterministically(name):
    for s in corruptions.SEVERITIES:
        out = run(name, s)
        assert out.dtype == np.uint8 and out.shape == X.shape
        assert 0 <= out.min() and out.max() <= 255
        assert np.array_equal(out, run(name, s)), "same seed, same images"
        assert not np.array_equal(out, X), f"severity {s} changes nothing"


RANDOM = set(corruptions.NAMES) - {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_another_seed_gives_other_draws(name):
    assert not np.array_equal(run(name, 3), run(name, 3, seed=1))


def distances(name):
    return [np.abs(run(name, s).astype(float) - X).mean() for s in corruptions.SEVERITIES]


# Where the reference's parameters rise monotonically, so does the distance from the clean image.
MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "snow", "fog", "brightness",
            "contrast", "jpeg_compression"]


@pytest.mark.parametrize("name", MONOTONE)
def test_distance_from_clean_grows_with_severity(name):
    d = distances(name)
    assert all(a < b for a, b in zip(d, d[1:])), d


@pytest.mark.parametrize("name", ["glass_blur", "motion_blur", "pixelate"])
def test_distance_at_severity_5_exceeds_severity_1(name):
    # Not step by step: glass blur's severities 1-3 differ only in a small sigma, motion blur's 3 and 4 trade
    # sigma for radius, and pixelate's
    # 24 px (severity 4) tiles 32 px evenly where 27 px (severity 3) does not, which can lose less of a smooth image.
    d = distances(name)
    assert d[4] > d[0], d


def test_elastic_transform_moves_pixels_at_every_severity():
    # The reference's severity 1 is a 2.56 px affine jitter alone; later ones shrink it and add elastic
    # displacement, so pixel distance from clean falls with severity: it is the paper's choice, kept.
    d = distances("elastic_transform")
    assert min(d) > 2 and d[0] > d[4], d


# Parameters against the reference formulas.

GREY = np.full((64, 32, 32, 3), 128, np.uint8)


def test_gaussian_noise_std_per_severity():
    for s, std in zip(corruptions.SEVERITIES, [0.04, 0.06, 0.08, 0.09, 0.10]):
        out = run("gaussian_noise", s, GREY) / 255
        assert out.std() == pytest.approx(std, rel=0.02)
        assert out.mean() == pytest.approx(128 / 255 - 0.5 / 255, abs=1e-3)  # truncated to uint8 as np.uint8 does


def test_shot_noise_is_poisson_with_the_reference_rate():
    for s, rate in zip(corruptions.SEVERITIES, [500, 250, 100, 75, 50]):
        out = run("shot_noise", s, GREY) / 255
        assert out.var() == pytest.approx((128 / 255) / rate, rel=0.05)


def test_impulse_noise_hits_the_reference_share_of_values():
    for s, amount in zip(corruptions.SEVERITIES, [.01, .02, .03, .05, .07]):
        out = run("impulse_noise", s, GREY)
        hit = (out == 0) | (out == 255)
        assert hit.mean() == pytest.approx(amount, rel=0.1)
        assert (out[hit] == 255).mean() == pytest.approx(0.5, abs=0.05)
        assert (out[~hit] == 128).all()


def test_contrast_scales_each_channels_deviation_from_its_mean():
    x = X[:2] / 255
    for s, factor in zip(corruptions.SEVERITIES, [.75, .5, .4, .3, 0.15]):
        means = x.mean(axis=(1, 2), keepdims=True)
        expected = ((x - means) * factor + means) * 255
        assert np.abs(run("contrast", s, X[:2]) - expected).max() < 1


def test_brightness_raises_hsv_value_and_keeps_hue():
    x = X[:2]
    for s, c in zip(corruptions.SEVERITIES, [.05, .1, .15, .2, .3]):
        out = run("brightness", s, x).astype(float)
        value = x.max(axis=-1) / 255
        ok = value + c <= 1
        assert np.abs(out.max(axis=-1)[ok] / 255 - (value[ok] + c)).max() < 1.5 / 255
        # at fixed hue and saturation every channel scales with V: the ratios stay
        ratio = (value[ok] + c) / value[ok]
        assert np.abs(out[ok] - x[ok] * ratio[:, None]).max() < 1.5


def test_jpeg_is_pillows_codec_at_the_reference_quality():
    for s, quality in zip(corruptions.SEVERITIES, [80, 65, 58, 50, 40]):
        buf = io.BytesIO()
        Image.fromarray(X[0]).save(buf, "JPEG", quality=quality)
        assert np.array_equal(run("jpeg_compression", s)[0], np.asarray(Image.open(buf)))


def test_pixelate_goes_through_the_reference_sizes():
    for s, c in zip(corruptions.SEVERITIES, [0.95, 0.9, 0.85, 0.75, 0.65]):
        small = Image.fromarray(X[0]).resize((int(32 * c),) * 2, Image.BOX)
        assert np.array_equal(run("pixelate", s)[0], np.asarray(small.resize((32, 32), Image.BOX)))


def test_zoom_blur_averages_the_references_zooms_and_clipped_zoom_is_scipys():
    assert [len(np.arange(1, c, 0.01)) for c in corruptions.PARAMS["zoom_blur"]] == [7, 12, 16, 21, 26]
    x = X[:1] / 255
    for factor in (1.01, 1.06, 1.25, 1.75, 2.25):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        zoomed = ndimage.zoom(x[0, top:top + crop, top:top + crop], (factor, factor, 1), order=1)
        trim = (zoomed.shape[0] - 32) // 2
        assert np.allclose(corruptions.clipped_zoom(x, factor)[0], zoomed[trim:trim + 32, trim:trim + 32])


def test_defocus_kernel_is_a_normalised_disk_of_the_reference_radius():
    for radius, alias in corruptions.PARAMS["defocus_blur"]:
        k = corruptions.disk_kernel(radius, alias)
        assert k.sum() == pytest.approx(1, abs=1e-6) and np.allclose(k, k.T) and np.allclose(k, k[::-1])
    assert corruptions.disk_kernel(1.5, 0.1).shape == (5, 5)  # radius 1.5 reaches 1 px, its 3 x 3 blur one more


def test_motion_blur_is_a_one_sided_gaussian_trail_of_2r_plus_1_taps():
    dot = np.zeros((1, 32, 32, 1))
    dot[0, 16, 16] = 1
    out = corruptions.motion_blur_layer(dot, 6, 2, [0.0])[0, ..., 0]
    # At angle 0 each pixel averages the 13 pixels to its right, so the dot trails to its left.
    taps = np.exp(-np.arange(13) ** 2 / 8)
    assert np.allclose(out[16, 4:17][::-1], taps / taps.sum()) and out.sum() == pytest.approx(1)


def test_glass_blur_moves_each_pixel_from_an_up_left_neighbour():
    blurred = np.uint8(corruptions.gaussian_filter(X / 255, 0.05) * 255)
    out = run("glass_blur", 1)  # one pass, sigma 0.05: the second blur is below a grey level
    neighbours = [np.roll(blurred, (dy, dx), axis=(1, 2)) for dy in (0, 1) for dx in (0, 1)]
    near = np.min([np.abs(out.astype(int) - n.astype(int)) for n in neighbours], axis=0)
    assert near[:, 2:, 2:].max() <= 1


def test_fog_plasma_maps_span_zero_to_one():
    maps = corruptions.plasma_fractal(3, np.random.default_rng(0), 2.0)
    assert maps.shape == (3, 32, 32) and np.allclose(maps.min(axis=(1, 2)), 0) and np.allclose(maps.max(axis=(1, 2)), 1)


def test_frost_blends_image_and_texture_with_the_reference_weights():
    black = np.zeros((64, 32, 32, 3), np.uint8)
    for s, (_, frost_weight) in zip(corruptions.SEVERITIES, corruptions.PARAMS["frost"]):
        # frost's image weight drops as its frost weight rises, so the distance from clean need not grow:
        # on a black image only the frost remains, in proportion to its weight.
        assert run("frost", s, black).mean() / (255 * frost_weight) == pytest.approx(TEXTURES.mean(), rel=0.15)
    white = np.full((4, 32, 32, 3), 200, np.uint8)
    assert (run("frost", 5, white) >= np.uint8(0.75 * 200)).all()


def test_frost_textures_are_seeded():
    a, b = (corruptions.frost_textures(np.random.default_rng(5), count=1, size=64) for _ in range(2))
    assert np.array_equal(a, b) and a.shape == (1, 64, 64, 3) and 0.2 < a.mean() < 0.7


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=5), per_class=st.integers(1, 10),
       parts=st.integers(1, 15), seed=st.integers(0, 2 ** 32 - 1))
def test_balanced_parts_are_disjoint_and_balanced_and_the_first_is_balanced_subsets(counts, per_class, parts, seed):
    y = np.repeat(np.arange(len(counts)), counts).astype(np.uint8)
    np.random.default_rng(seed).shuffle(y)
    if min(counts) < per_class * parts:
        with pytest.raises(StageError, match="lower it"):
            balanced_parts(y, per_class, parts, seed, "k")
        return
    got = balanced_parts(y, per_class, parts, seed, "k")
    together = np.concatenate(got)
    assert len(np.unique(together)) == len(together) == per_class * parts * len(counts)
    assert all(np.bincount(y[p], minlength=len(counts)).tolist() == [per_class] * len(counts) for p in got)
    assert all(np.array_equal(p, np.sort(p)) for p in got)
    assert np.array_equal(got[0], balanced_subset(y, per_class, seed, "k"))


# The stage.

@pytest.fixture
def test_split(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    y = (np.arange(240) % 4).astype(np.uint8)  # 60 per class: 15 disjoint sets of 3 per class, and 15 spare
    save_npz("data/cifar10/test.npz", x=rng.integers(0, 256, (240, 32, 32, 3), dtype=np.uint8), y=y)
    write_json("data/cifar10/info.json", {"classes": ["a", "b", "c", "d"], "image_shape": [32, 32, 3]})
    params["corruptions"].update(per_class=3, names=["gaussian_noise", "frost", "jpeg_compression"])
    return params


@pytest.mark.parametrize("distinct", [True, False])
def test_stage_writes_the_data_contract_byte_identically(test_split, distinct):
    test_split["corruptions"]["distinct"] = distinct
    corrupt_cifar10.main(test_split)
    test = load_npz("data/cifar10/test.npz")
    info = json.loads(open("data/cifar10c/info.json").read())
    assert info["corruptions"] == ["gaussian_noise", "frost", "jpeg_compression"] and info["data_seed"] == 42
    assert info["parameters"]["gaussian_noise"]["severity"]["3"] == 0.08 and info["distinct"] is distinct
    assert info["images_per_corruption"] == 12 and info["images"] == (36 if distinct else 12)
    first, places = {}, {}
    for name in info["corruptions"]:
        d = load_npz(f"data/cifar10c/{name}.npz")
        assert d["x"].shape == (5, 12, 32, 32, 3) and d["x"].dtype == np.uint8 and d["y"].dtype == np.uint8
        assert np.array_equal(d["y"], test["y"][d["index"]]) and np.bincount(d["y"]).tolist() == [3] * 4
        assert np.array_equal(d["x"][3], corruptions.corrupt(test["x"][d["index"]], name, 4, corruptions.rng_for(42, name, 4),
                                                   corruptions.frost_textures(corruptions.rng_for(42, "frost", 0))))
        first[name] = open(f"data/cifar10c/{name}.npz", "rb").read()
        places[name] = set(d["index"].tolist())
    # Each corruption its own images, or all the same ones.
    a, b, c = places.values()
    assert (not (a & b or b & c or a & c)) if distinct else a == b == c
    corrupt_cifar10.main(test_split)
    assert all(open(f"data/cifar10c/{n}.npz", "rb").read() == b for n, b in first.items())
    # A corruption's images do not depend on which others are selected.
    test_split["corruptions"]["names"] = ["jpeg_compression"]
    corrupt_cifar10.main(test_split)
    assert open("data/cifar10c/jpeg_compression.npz", "rb").read() == first["jpeg_compression"]


def test_per_class_zero_writes_only_a_note(test_split):
    test_split["corruptions"]["per_class"] = 0
    corrupt_cifar10.main(test_split)
    info = json.loads(open("data/cifar10c/info.json").read())
    assert info["available"] is False and "per_class is 0" in info["reason"]
    assert sorted(p.name for p in Path("data/cifar10c").iterdir()) == ["info.json"]


@pytest.mark.parametrize("change, message", [
    ({"names": ["gaussian_noise", "fogg"]}, "`corruptions.names` has 'fogg'; allowed: gaussian_noise"),
    ({"names": "some"}, "`corruptions.names` must be all or a list"),
    ({"per_class": 5}, "`corruptions.per_class` is 5, x 15 disjoint sets = 75, but the split has fewer images of "
                       "class 0: 60"),
    ({"per_class": 61, "distinct": False}, "`corruptions.per_class` is 61 but the split has fewer images of class 0: "
                                           "60"),
    ({"distinct": "yes"}, "`corruptions.distinct` must be true or false, got 'yes'"),
    ({"per_class": -1}, "`corruptions.per_class` is -1; must be in [0, 10000]"),
    ({"per_clas": 3}, "unknown key `corruptions.per_clas`; did you mean `corruptions.per_class`?"),
], ids=["unknown-name", "names-not-a-list", "per-class-too-large", "per-class-too-large-shared", "distinct-not-a-flag",
        "per-class-negative", "misspelt-key"])
def test_bad_params_name_the_key(test_split, change, message):
    test_split["corruptions"].update(change)
    with pytest.raises(StageError) as e:
        corrupt_cifar10.main(test_split)
    assert message in str(e.value)


def test_images_that_are_not_32_px_are_refused_with_the_key_to_set(test_split):
    save_npz("data/cifar10/test.npz", x=np.zeros((8, 40, 40, 3), np.uint8), y=np.arange(8, dtype=np.uint8) % 2)
    with pytest.raises(StageError, match=r"holds 40x40 images; CIFAR-10-C's parameters are for 32x32 px: "
                                         r"set `corruptions.per_class: 0`"):
        corrupt_cifar10.main(test_split)
    assert not Path("data/cifar10c").exists()
