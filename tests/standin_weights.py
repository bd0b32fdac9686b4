"""Stand-ins for the ImageNet weights files keras.applications downloads.

The files cannot be downloaded here, but `weights: imagenet` is the route
users take, so tests run Keras' own code for it: the files are written with
the official names in the legacy HDF5 weights layout Keras' loader reads
(`save_weights_to_hdf5_group`, as the published files were made), holding
seeded random values, and handed to Keras by replacing the one function it
downloads with, `keras.src.utils.file_utils.get_file`. Which file Keras asks
for, and the architecture it builds for ImageNet weights (EfficientNet's extra
input rescaling), are Keras' own.
"""
import os
import urllib.parse
from pathlib import Path

import numpy as np

ENV = "STANDIN_KERAS_WEIGHTS"  # directory of stand-in files, for stage subprocesses (see sitecustomize_source)

# The no-top file Keras 3.15 asks for, per registry entry ({rows}: MobileNetV2's input side, or 224).
OFFICIAL_NAMES = {
    "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    "resnet50v2": "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnetb0": "efficientnetb0_notop.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def serve_from(directory):
    """A get_file that serves the stand-ins in `directory` and fails, as offline, for anything else."""
    def get_file(fname=None, origin=None, *args, **kwargs):
        path = Path(directory) / str(fname)
        if not path.is_file():
            raise Exception(f"URL fetch failure on {origin}: no stand-in {fname} in {directory}")
        return str(path)
    return get_file


def _randomised(model, seed):
    """Seeded random values in every weight: the architecture's own initialisers for kernels
    (a freshly built model, seeded), random normalisation statistics (positive where they must be)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, name = tuple(w.shape), w.path.rsplit("/", 1)[-1]
        if "variance" in name or name == "gamma":
            w.assign(rng.uniform(0.5, 1.5, shape).astype(w.dtype))
        elif "mean" in name or name == "beta":
            w.assign(rng.normal(0.0, 0.1, shape).astype(w.dtype))
    return model


def write_standins(directory, constructors, size, seed=0):
    """Run each constructor with weights="imagenet" at `size` px, writing whatever file Keras
    asks for as a stand-in (then Keras loads it, as it would the download). Returns {name: file}."""
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
    from keras.src.utils import file_utils

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written, fetch = {}, file_utils.get_file
    for i, (name, constructor) in enumerate(constructors.items()):
        def get_file(fname=None, origin=None, *args, **kwargs):
            path = directory / fname
            if not path.exists():
                keras.utils.set_random_seed(seed + i)
                model = _randomised(constructor(include_top=False, weights=None, input_shape=(size, size, 3)), seed + i)
                with h5py.File(path, "w") as f:
                    save_weights_to_hdf5_group(f, model)
            written[name] = path.name
            return str(path)
        file_utils.get_file = get_file
        try:
            constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
        finally:
            file_utils.get_file = fetch
    return written


def serve_nothing(base_url, cache_dir, get_file):
    """Keras' own `get_file` with the weights host replaced by `base_url` (a loopback server holding nothing:
    every fetch a 404) and an empty `cache_dir` for Keras' cache: ImageNet weights offline, through the code
    Keras runs offline, on a machine that has internet and a warm ~/.keras."""
    def offline(fname=None, origin=None, *args, **kwargs):
        name = urllib.parse.urlsplit(origin).path.rsplit("/", 1)[-1]
        return get_file(fname, f"{base_url.rstrip('/')}/{name}", *args, **{**kwargs, "cache_dir": str(cache_dir)})
    return offline


def sitecustomize_source(directory):
    """A sitecustomize.py that, in any Python process started with it on PYTHONPATH, replaces
    Keras' get_file with `serve_from(directory)` as soon as Keras imports it (DVC's stage
    commands are such processes)."""
    return _patching_get_file(f"standin_weights.serve_from({str(directory)!r})")


def offline_sitecustomize_source(base_url, cache_dir):
    """The same, replacing it with `serve_nothing(base_url, cache_dir, <Keras' get_file>)`."""
    return _patching_get_file(f"standin_weights.serve_nothing({base_url!r}, {str(cache_dir)!r}, module.get_file)")


def _patching_get_file(replacement):
    """sitecustomize.py source that sets keras.src.utils.file_utils.get_file to the expression
    `replacement` (in which `module` is file_utils) right after that module is executed."""
    here = Path(__file__).resolve().parent
    return f'''import importlib.abc, importlib.util, sys
sys.path.insert(0, {str(here)!r})
import standin_weights
TARGET = "keras.src.utils.file_utils"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.get_file = {replacement}
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchOnImport())
'''


def subprocess_env(directory, site_dir):
    """Environment for subprocesses (DVC and its stages) that load stand-ins for ImageNet weights."""
    return {**_with_sitecustomize(site_dir, sitecustomize_source(directory)), ENV: str(directory)}


def offline_subprocess_env(base_url, cache_dir, site_dir):
    """Environment for subprocesses (DVC and its stages) in which ImageNet weights cannot be had."""
    return _with_sitecustomize(site_dir, offline_sitecustomize_source(base_url, cache_dir))


def _with_sitecustomize(site_dir, source):
    Path(site_dir).mkdir(parents=True, exist_ok=True)
    (Path(site_dir) / "sitecustomize.py").write_text(source)
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(site_dir) + (os.pathsep + path if path else "")}
