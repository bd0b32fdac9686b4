"""The files between stages, checked against the data contract when read.

A stage that reads another stage's output calls these instead of json.load,
np.load or keras.models.load_model, so a file that is missing, corrupt or
inconsistent (deleted by hand, cut short by a full disk, left by an older
version, edited) stops the stage with one `error:` line naming the file and
the stage to run again, instead of a KeyError, a shape error deep in
TensorFlow, or Keras' "File not found" for a file that is there.

The contract (README "Data contract"): `x` uint8 (N, H, W, 3), `y` uint8 (N,)
with every label below the number of classes in info.json; info.json holds
`classes` (2 to 256 names) and `image_shape` [H, W, 3]; cached features are
float (N, D) with `y` as above.
"""
import json
import zipfile
from pathlib import Path

import numpy as np

from core import StageError
from core.io import ZIP_ERRORS, load_npz

MAX_JSON_BYTES = 64 << 20


class ContractError(StageError):
    pass


def _rerun(stage):
    return f"run `dvc repro {stage}` (or `python -m stages.{stage}`) again"


def _regular_file(path, stage, what):
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: missing; the {stage} stage writes it: {_rerun(stage)}")
    if not path.is_file():
        raise ContractError(f"{path}: not a regular file; delete it and {_rerun(stage)}")
    if path.stat().st_size == 0:
        raise ContractError(f"{path}: empty, not {what}; delete it and {_rerun(stage)}")
    return path


def read_json(path, stage, keys=()):
    """A JSON object written by `stage`; ContractError naming the file and the stage if it is missing,
    not JSON, not an object, or lacks one of `keys`."""
    path = _regular_file(path, stage, "JSON")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ContractError(f"{path}: over {MAX_JSON_BYTES:,} bytes, not what {stage} writes; {_rerun(stage)}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ContractError(f"{path}: corrupt, not JSON ({e}); delete it and {_rerun(stage)}") from None
    if not isinstance(data, dict):
        raise ContractError(f"{path}: holds a JSON {type(data).__name__}, not an object; {_rerun(stage)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ContractError(f"{path}: has no {', '.join(missing)} (written by an older version?); {_rerun(stage)}")
    return data


def read_dataset_info(data_dir="data/cifar10", stage="download_cifar10"):
    """info.json of a dataset: its `classes` (2 to 256 distinct names) and `train_fraction` (the labelled budget,
    1 if absent) checked; returns the dict."""
    path = Path(data_dir) / "info.json"
    info = read_json(path, stage, keys=("classes",))
    classes = info["classes"]
    if not (isinstance(classes, list) and 2 <= len(classes) <= 256 and all(isinstance(c, str) for c in classes)
            and len(set(classes)) == len(classes)):
        raise ContractError(f"{path}: `classes` must be 2 to 256 distinct names, got {str(classes)[:80]}; "
                            f"{_rerun(stage)}")
    fraction = info.setdefault("train_fraction", 1.0)  # written since labelled budgets; absent: all of them
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ContractError(f"{path}: `train_fraction` must be a number in (0, 1], got {fraction!r}; "
                            f"{_rerun(stage)}")
    return info


def _check_labels(path, y, n, n_classes, stage):
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise ContractError(f"{path}: `y` is {y.dtype} {y.shape}, expected {n} integer labels (shape ({n},)); "
                            f"{_rerun(stage)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ContractError(f"{path}: label {int(y.max()) if int(y.max()) >= n_classes else int(y.min())} is "
                            f"outside the {n_classes} classes of info.json (0 to {n_classes - 1}); the data and "
                            f"info.json come from different runs: {_rerun(stage)}")


def _load(path, stage, keys):
    _regular_file(path, stage, "an .npz")
    arrays = load_npz(path)
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ContractError(f"{path}: no array {', '.join(repr(k) for k in missing)} (holds "
                            f"{', '.join(sorted(arrays)) or 'nothing'}); {_rerun(stage)}")
    return arrays


def load_images(path, n_classes, stage="download_cifar10", image_shape=None, keys=("x", "y")):
    """An .npz of images: `x` uint8 (N, H, W, 3) (H, W as `image_shape` if given), `y` labels below n_classes."""
    arrays = _load(path, stage, keys)
    x = arrays["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or (
            image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape)):
        want = f"({'N, ' + ', '.join(map(str, image_shape)) if image_shape is not None else 'N, H, W, 3'})"
        raise ContractError(f"{path}: `x` is {x.dtype} {x.shape}, expected uint8 {want} RGB images; {_rerun(stage)}")
    _check_labels(path, arrays["y"], len(x), n_classes, stage)
    return arrays


def load_features(path, n_classes, stage="features", dim=None):
    """An .npz of cached features: `x` float (N, D) (D = `dim` if given), `y` labels below n_classes."""
    arrays = _load(path, stage, ("x", "y"))
    x = arrays["x"]
    if not np.issubdtype(x.dtype, np.floating) or x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise ContractError(f"{path}: `x` is {x.dtype} {x.shape}, expected float features (N, "
                            f"{dim if dim is not None else 'D'}); {_rerun(stage)}")
    if not np.isfinite(x).all():
        raise ContractError(f"{path}: features hold NaN or infinity; {_rerun(stage)}")
    _check_labels(path, arrays["y"], len(x), n_classes, stage)
    return arrays


def load_model(path, stage="train"):
    """keras.models.load_model (safe_mode kept) with the file checked first: a missing, empty, truncated or
    corrupt .keras is one ContractError naming it (Keras calls all of these "File not found")."""
    path = _regular_file(path, stage, "a .keras model")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # every member's CRC: a flipped bit or a cut-off write
            names = set(z.namelist())
    except ZIP_ERRORS as e:
        raise ContractError(f"{path}: truncated or corrupt, not a .keras zip ({e}); delete it and "
                            f"{_rerun(stage)}") from None
    if bad is not None or "config.json" not in names:
        why = f"member {bad} fails its CRC" if bad is not None else "no config.json inside"
        raise ContractError(f"{path}: corrupt .keras file ({why}); delete it and {_rerun(stage)}")
    import keras
    try:
        return keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 (Keras' deserialisers raise anything on a malformed config)
        raise ContractError(f"{path}: not a loadable Keras model ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]}); {_rerun(stage)}") from e
