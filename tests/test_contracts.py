"""core.contracts: files between stages that are missing, corrupt or inconsistent
are one error naming the file and the stage to run again."""
import json
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import StageError
from core.contracts import ContractError, load_features, load_images, load_model, read_dataset_info, read_json
from core.io import save_npz, write_json

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLASSES = ["cat", "dog", "frog"]


def one_line_naming(e, path, stage):
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and f"dvc repro {stage}" in message, message


def good_images(n=6):
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), "y": (np.arange(n) % 3).astype(np.uint8)}


def test_good_files_pass(tmp_path):
    save_npz(tmp_path / "train.npz", **good_images())
    write_json(tmp_path / "info.json", {"classes": CLASSES, "image_shape": [8, 8, 3]})
    assert read_dataset_info(tmp_path)["classes"] == CLASSES
    assert len(load_images(tmp_path / "train.npz", 3, image_shape=(8, 8, 3))["y"]) == 6
    save_npz(tmp_path / "f.npz", x=np.zeros((4, 5), np.float32), y=np.arange(4, dtype=np.uint8) % 3)
    assert load_features(tmp_path / "f.npz", 3, dim=5)["x"].shape == (4, 5)


MUTATIONS = {
    "drop-x": lambda a: {"y": a["y"]},
    "drop-y": lambda a: {"x": a["x"]},
    "x-float": lambda a: {**a, "x": a["x"].astype(np.float32)},
    "x-int16": lambda a: {**a, "x": a["x"].astype(np.int16)},
    "x-grey": lambda a: {**a, "x": a["x"][..., 0]},
    "x-rgba": lambda a: {**a, "x": np.concatenate([a["x"], a["x"][..., :1]], axis=3)},
    "x-other-size": lambda a: {**a, "x": a["x"][:, :4, :4]},
    "y-too-short": lambda a: {**a, "y": a["y"][:-1]},
    "y-2d": lambda a: {**a, "y": a["y"][:, None]},
    "y-float": lambda a: {**a, "y": a["y"].astype(np.float32)},
    "label-outside-classes": lambda a: {**a, "y": np.where(np.arange(len(a["y"])) == len(a["y"]) - 1, 3, a["y"]).astype(np.uint8)},
    "label-negative": lambda a: {**a, "y": a["y"].astype(np.int64) - 1},
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 8))
def test_any_npz_off_the_contract_names_the_file(tmp_path_factory, mutation, n):
    path = tmp_path_factory.mktemp("npz") / "train.npz"
    arrays = MUTATIONS[mutation](good_images(n))
    if mutation == "y-too-short" and n == 1:
        arrays["y"] = arrays["y"][:0]
    np.savez(path, **arrays)
    with pytest.raises(ContractError) as e:
        load_images(path, len(CLASSES), image_shape=(8, 8, 3))
    one_line_naming(e, path, "download_cifar10")


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "truncated", "pickled"])
def test_missing_or_unreadable_npz_names_the_file(tmp_path, case):
    path = tmp_path / "train.npz"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    elif case == "truncated":
        save_npz(path, **good_images())
        path.write_bytes(path.read_bytes()[:200])
    elif case == "pickled":
        np.savez(path, x=np.array([object()], dtype=object), y=np.zeros(1, np.uint8))
    with pytest.raises(StageError) as e:
        load_images(path, 3)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["cut", "not-object", "no-classes", "bad-classes"])
@FAST
@given(cut=st.integers(0, 60))
def test_any_broken_info_json_names_the_file_and_the_stage(tmp_path_factory, kind, cut):
    directory = tmp_path_factory.mktemp("info")
    text = json.dumps({"classes": CLASSES, "image_shape": [8, 8, 3]})
    text = {"cut": text[:cut], "not-object": json.dumps(CLASSES), "no-classes": json.dumps({"source": "x"}),
            "bad-classes": json.dumps({"classes": ["cat"] * (cut % 3 + 1)})}[kind]
    (directory / "info.json").write_text(text)
    with pytest.raises(ContractError) as e:
        read_dataset_info(directory)
    one_line_naming(e, directory / "info.json", "download_cifar10")


@FAST
@given(fraction=st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not 0 < f <= 1),
                          st.text(max_size=5), st.booleans(), st.none(), st.lists(st.floats(0.1, 1), max_size=2)))
def test_a_train_fraction_that_is_no_budget_names_the_file(tmp_path_factory, fraction):
    """info.json's train_fraction sizes train's epochs (train.max_repeats): anything but a number in (0, 1]
    is refused in one line; absent, it is all the labels."""
    directory = tmp_path_factory.mktemp("info")
    write_json(directory / "info.json", {"classes": CLASSES})
    assert read_dataset_info(directory)["train_fraction"] == 1.0
    (directory / "info.json").write_text(json.dumps({"classes": CLASSES, "train_fraction": fraction}))
    with pytest.raises(ContractError) as e:
        read_dataset_info(directory)
    one_line_naming(e, directory / "info.json", "download_cifar10")


def test_missing_info_json_names_the_stage(tmp_path):
    with pytest.raises(ContractError, match=re.escape(f"{tmp_path}/info.json: missing; the download_cifar10 stage "
                                                      "writes it")):
        read_dataset_info(tmp_path)
    with pytest.raises(ContractError, match=r"features.json: missing; the features stage writes it"):
        read_json(tmp_path / "features.json", "features")


@pytest.mark.parametrize("kind", ["float-labels", "int-features", "3d", "nan", "other-dim"])
def test_features_off_the_contract_name_the_file(tmp_path, kind):
    path = tmp_path / "train.npz"
    x, y = np.zeros((4, 5), np.float32), np.arange(4, dtype=np.uint8) % 3
    x, y = {"float-labels": (x, y.astype(np.float32)), "int-features": (x.astype(np.int32), y),
            "3d": (x[:, :, None], y), "nan": (np.full_like(x, np.nan), y), "other-dim": (x[:, :4], y)}[kind]
    np.savez(path, x=x, y=y)
    with pytest.raises(ContractError) as e:
        load_features(path, 3, dim=5)
    one_line_naming(e, path, "features")


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    import keras
    path = tmp_path_factory.mktemp("m") / "model.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(path)
    return path.read_bytes()


def model_state(model):
    return model.get_config(), [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def model_original(tmp_path_factory, model_bytes):
    """The config and weights the intact file loads to: a damaged file that still loads must load these."""
    path = tmp_path_factory.mktemp("m") / "model.keras"
    path.write_bytes(model_bytes)
    return model_state(load_model(path))


def assert_same_model(model, original):
    config, weights = model_state(model)
    assert config == original[0]
    assert len(weights) == len(original[1]) and all(np.array_equal(a, b) for a, b in zip(weights, original[1]))


@pytest.mark.parametrize("how", ["truncate", "flip"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0.0, 0.999))
def test_truncated_or_corrupt_model_names_the_file_not_file_not_found(tmp_path_factory, model_bytes, model_original,
                                                                      how, where):
    path = tmp_path_factory.mktemp("m") / "model.keras"
    at = int(where * len(model_bytes))
    data = bytearray(model_bytes[:at] if how == "truncate" else model_bytes)
    if how == "flip":
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    try:
        model = load_model(path)
    except ContractError as e:
        message = str(e)
        assert message.startswith(f"{path}: ") and "dvc repro train" in message and "\n" not in message
        assert "File not found" not in message
        return
    assert how == "flip"  # a cut never loads
    assert_same_model(model, model_original)  # a flip in padding or an unused field: harmless only if nothing changed


def member_data_spans(data):
    """{member name: (first, end)} of each member's stored bytes in a zip."""
    import io
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
    spans = {}
    for info in infos:
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        first = info.header_offset + 30 + name_len + extra_len
        spans[info.filename] = (first, first + info.compress_size)
    return spans


@pytest.mark.parametrize("member", ["metadata.json", "config.json", "model.weights.h5"])
def test_a_flipped_byte_in_any_member_of_a_model_fails_its_crc(tmp_path, model_bytes, member):
    """Checked for every member before Keras reads any: metadata.json is never verified by Keras, and the
    others only part-way through its loading."""
    first, end = member_data_spans(model_bytes)[member]
    broken = bytearray(model_bytes)
    broken[(first + end) // 2] ^= 0x01
    (tmp_path / "model.keras").write_bytes(bytes(broken))
    with pytest.raises(ContractError, match=re.escape(f"corrupt .keras file (member {member} fails its CRC)")):
        load_model(tmp_path / "model.keras")


def test_missing_model_names_the_train_stage(tmp_path, model_bytes):
    with pytest.raises(ContractError, match=re.escape(f"{tmp_path}/model.keras: missing; the train stage writes it")):
        load_model(tmp_path / "model.keras")
    (tmp_path / "model.keras").write_bytes(model_bytes)
    assert load_model(tmp_path / "model.keras").count_params() == 15


def zip_header_positions(data):
    """Every byte of a zip's structure (local headers, central directory, end record): where a flipped bit
    makes zipfile raise something other than BadZipFile (an unknown compression method, an encryption flag)."""
    import io
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
    local = [i for info in infos for i in range(info.header_offset, info.header_offset + 30)]
    last = infos[-1]  # the central directory follows its data (a few bytes of data may be included: harmless)
    central = range(last.header_offset + 30 + len(last.filename) + last.compress_size, len(data))
    return sorted(set(local) | set(central))


def test_every_flipped_zip_header_byte_of_a_model_or_npz_is_one_line_or_harmless(tmp_path, model_bytes,
                                                                                 model_original):
    save_npz(tmp_path / "good.npz", **good_images())

    def same_images(arrays):
        assert arrays.keys() == good_images().keys()
        assert all(np.array_equal(arrays[k], v) and arrays[k].dtype == v.dtype for k, v in good_images().items())

    for name, data, load, same in (
            ("model.keras", model_bytes, load_model, lambda m: assert_same_model(m, model_original)),
            ("train.npz", (tmp_path / "good.npz").read_bytes(),
             lambda p: load_images(p, len(CLASSES), stage="download_cifar10"), same_images)):
        refused = 0
        for at in zip_header_positions(data):
            broken = bytearray(data)
            broken[at] ^= 0xFF
            path = tmp_path / name
            path.write_bytes(bytes(broken))
            try:
                loaded = load(path)
            except StageError as e:  # ContractError is one
                assert str(e).startswith(f"{path}: ") and "\n" not in str(e), (name, at, str(e))
                refused += 1
                continue
            same(loaded)  # harmless means: what loads is what was saved
        assert refused > 0, name
