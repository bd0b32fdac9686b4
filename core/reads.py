"""Which params each stage reads (for a model stage, for the selected model): DVC reruns a stage when one of
them changes, and only then.

The two training recipes read different params (basecnn trains from scratch: no head, frozen or fine-tune
phase, no ImageNet weights, always 32 px), and dvc.yaml cannot select a list of params by the value of
`model`. So the resolve_params stage reads every param the model stages may read and writes, per stage, the
ones its work reads for the selected model (data/params/<stage>.json, a subset of params.yaml of the same
shape); features and train read that file, and DVC reruns them only when it changes. The other stages read
the same params whatever the model and declare them in dvc.yaml directly.
"""
import copy

from core.params import KEYS, check_section, get, known_keys
from core.registry import entry

TRAINING = ("seed", "model", "flip_tta", "train.batch_size", "train.patience", "train.max_repeats", "train.augment")
# stage -> the params keys (sections or leaves) its work reads; for a model stage, per recipe. Each stage sees
# only these (resolve), so a stage that read another key would fail its tests, and dvc.yaml declares exactly
# these (tests/test_dvc_yaml.py).
READS = {
    # data_seed chooses every image, seed the training randomness: another training seed reruns no data stage.
    "download_cifar10": ("data_seed", "fetch", "cifar10"),
    "sample_cinic10": ("data_seed", "fetch", "cinic10"),
    "corrupt_cifar10": ("data_seed", "corruptions"),
    "resolve_params": ("seed", "model", "image_size", "weights", "flip_tta", "features", "train", "tune"),
    "features": {"scratch": ("seed", "model"),  # builds the trunk only: its outputs are never cached
                 "two_phase": ("seed", "model", "image_size", "weights", "features")},
    "train": {"scratch": (*TRAINING, "train.scratch"),
              "two_phase": (*TRAINING, "train.head", "train.frozen", "train.fine_tune", "tune")},
    "evaluate": ("seed", "model", "evaluate"),
    "profile": ("seed", "data_seed", "model", "profile"),  # data_seed: the TFLite check subset
}
RESOLVED = tuple(stage for stage, keys in READS.items() if isinstance(keys, dict))  # read data/params/<stage>.json
PARAMS_DIR = "data/params"


def params_path(stage):
    """Where resolve_params writes what `stage` reads (the stage's `__main__` guard reads it)."""
    return f"{PARAMS_DIR}/{stage}.json"


def reads(params, stage):
    """The params keys `stage` reads (for params' `model`, if it depends on the model)."""
    keys = READS[stage]
    return keys[entry(get(params, "model")).recipe] if isinstance(keys, dict) else keys


def resolve(params, stage):
    """The params `stage` reads for the selected model, checked (unknown keys, ranges, flags, choices), as a
    nested dict of params.yaml's shape holding those keys only. Resolving the result again gives it back."""
    return resolve_checked(params, stage)[0]


def resolve_checked(params, stage):
    """resolve's dict, and the checked values flat: {dotted key: value} (core.params.check_section)."""
    keys = reads(params, stage)
    if "model" in keys:
        entry(get(params, "model"))  # a model not in the registry is refused by the first stage that reads it
    out, checked = {}, {}
    for key in keys:
        *parents, leaf = key.split(".")
        node = out
        # Parents first: a misspelt key (train.batch_sise) is named with the key it probably meant, rather than
        # reported as the other one missing; a misspelt neighbour of a key read is refused too.
        for i, part in enumerate(parents):
            known_keys(params, ".".join(parents[:i + 1]), KEYS[".".join(parents[:i + 1])])
            node = node.setdefault(part, {})
        checked.update(check_section(params, key))
        node[leaf] = copy.deepcopy(get(params, key))
    return out, checked
