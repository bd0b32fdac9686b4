"""Reading params.yaml and checking values, so a typo stops a stage with an
error that names the key and the allowed values instead of a traceback.

params.yaml is read as DVC reads it (its own YAML 1.2 loader, ruamel.yaml's
safe mode): `dvc exp run -S train.fine_tune.learning_rate=1e-5` writes
`1e-05`, which YAML 1.1 (PyYAML) would read as a string.
"""
import difflib
import math
import os
from pathlib import Path

from core import StageError

# params.yaml is a page of settings; anything larger is not one (or is /dev/zero).
MAX_PARAMS_BYTES = 1 << 20


class ParamError(StageError):
    pass


def load(path="params.yaml", fix="restore it with `git checkout params.yaml` or fix it by hand"):
    """params.yaml (or a stage's resolved params, core.reads) as a dict, parsed by DVC's own loader;
    ParamError naming the file (and line) and `fix` if it is missing, unreadable, not YAML or not a mapping."""
    from dvc.utils.serialize import YAMLError, parse_yaml

    path = Path(path)
    text = read_params_text(path, fix)
    try:
        data = parse_yaml(text, str(path))
    except YAMLError as e:
        raise ParamError(f"{path}: not valid params YAML ({_yaml_problem(e.__cause__)}); {fix}") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: must be a mapping of settings (key: value), got {type(data).__name__}; {fix}")
    return data


def read_params_text(path, fix):
    try:
        if not path.is_file():
            what = "missing" if not path.exists() else "not a regular file"
            raise ParamError(f"{path}: {what}; run the stage from the project's root (where dvc.yaml is), or {fix}")
        with open(path, "rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)
    except OSError as e:
        raise ParamError(f"{path}: cannot be read ({e.strerror or e}); {fix}") from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise ParamError(f"{path}: over {MAX_PARAMS_BYTES:,} bytes, not a params file; {fix}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamError(f"{path}: not UTF-8 text (byte {e.start}); {fix}") from None


def _yaml_problem(e):
    """ruamel's error in one line: what is wrong and where (its own text spans several)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
    problem = " ".join(str(problem).split())
    if "could not determine a constructor for the tag" in problem:
        problem = problem.replace("could not determine a constructor for the tag", "tag") + \
            " is not allowed (params are plain values)"
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def get(params, key):
    """`get(p, "cifar10.val_fraction")` -> p["cifar10"]["val_fraction"]."""
    value = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ParamError(f"params.yaml: missing key `{key}`")
        value = value[part]
    return value


def known_keys(params, key, allowed):
    """Refuse a key under `key` that is not in `allowed`: a misspelt key would
    otherwise be ignored and its default used without a word."""
    section = get(params, key)
    if not isinstance(section, dict):
        raise ParamError(f"params.yaml: `{key}` must be a mapping of {', '.join(allowed)}; got {section!r}")
    for name in section:
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f"did you mean `{key}.{close[0]}`?" if close else f"allowed: {', '.join(allowed)}"
            raise ParamError(f"params.yaml: unknown key `{key}.{name}`; {hint}")


def choice(params, key, allowed):
    value = get(params, key)
    if isinstance(value, (dict, list)) or value not in allowed:
        raise ParamError(f"params.yaml: `{key}` is {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


def subset(params, key, allowed):
    """A list drawn from `allowed` (null or [] for none)."""
    value = get(params, key) or []
    if not isinstance(value, list) or any(isinstance(v, (dict, list)) or v not in allowed for v in value) \
            or len(set(value)) < len(value):
        raise ParamError(f"params.yaml: `{key}` is {value!r}; a list of distinct values from "
                         f"{', '.join(map(str, allowed))}")
    return value


def check_number(value, key, low=None, high=None, integer=False, infinite=False):
    """`value` as a number within [low, high]; NaN is refused always, infinity
    unless `infinite` (a key for which it means "no limit"). An integral float
    (`1e3`, which `-S seed=1e3` writes as 1000.0) is accepted for an integer key."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"params.yaml: `{key}` must be {kind}, got {value!r}")
    if math.isnan(value):
        raise ParamError(f"params.yaml: `{key}` is NaN; it must be {kind}")
    if math.isinf(value) and not infinite:
        raise ParamError(f"params.yaml: `{key}` is {value}; it must be a finite number")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise ParamError(f"params.yaml: `{key}` must be an integer, got {value!r}")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ParamError(f"params.yaml: `{key}` is {value}; must be in {span}")
    return value


def number(params, key, low=None, high=None, integer=False, infinite=False):
    """The number at `key` within [low, high] (either bound optional); see check_number."""
    return check_number(get(params, key), key, low, high, integer, infinite)


def number_range(params, key, low, high, positive=False):
    """A [min, max] pair within [low, high], min <= max (a search range for keras-tuner)."""
    value = get(params, key)
    if not (isinstance(value, list) and len(value) == 2):
        raise ParamError(f"params.yaml: `{key}` must be a range [min, max] of two numbers, got {value!r}")
    lo, hi = (check_number(v, f"{key}[{i}]", low, high) for i, v in enumerate(value))
    if lo > hi:
        raise ParamError(f"params.yaml: `{key}` is {value!r}; its min must not exceed its max")
    if positive and lo <= 0:
        raise ParamError(f"params.yaml: `{key}` is {value!r}; a log-uniform range needs a min above 0")
    return [lo, hi]


def integer_choices(params, key, low, high):
    """A non-empty list of distinct integers within [low, high] (keras-tuner's Choice)."""
    value = get(params, key)
    if not (isinstance(value, list) and value):
        raise ParamError(f"params.yaml: `{key}` must be a non-empty list of integers, got {value!r}")
    picked = [check_number(v, f"{key}[{i}]", low, high, integer=True) for i, v in enumerate(value)]
    if len(set(picked)) != len(picked):
        raise ParamError(f"params.yaml: `{key}` is {value!r}; list each value once")
    return picked


# Every numeric param: key -> (low, high, integer). The bounds are the range
# check and also the limits of the libraries the value reaches (NumPy seeds
# are below 2**32; a socket timeout or a sleep must fit a C timeval; keras-tuner
# needs min <= max and a log range above 0). `infinite` keys are none yet:
# no number here means "no limit" (null does, for size_bytes and compare.*).
SEED_MAX = 2 ** 32 - 1
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024  # px: CIFAR-10's side; the largest input the archives keep (MAX^2 pixels)
BATCH, EPOCHS, RATE = (1, 65536, True), (0, 10000, True), (1e-8, 1.0, False)
NUMBERS = {
    **dict.fromkeys(["seed", "data_seed"], (0, SEED_MAX, True)), "image_size": (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, True),
    "fetch.retries": (1, 20, True), "fetch.backoff_s": (0, 600, False), "fetch.timeout_s": (1, 3600, False),
    "cifar10.val_fraction": (0.01, 0.5, False), "cifar10.train_fraction": (0.01, 1.0, False),
    "cinic10.per_class": (1, 9000, True),  # CINIC-10's test split has 9,000 images per class
    "corruptions.per_class": (0, 10000, True),  # 0: no CIFAR-10-C; CIFAR-10's test split has 1,000 per class
    **dict.fromkeys(["features.batch_size", "train.batch_size", "evaluate.batch_size"], BATCH),
    **dict.fromkeys(["train.frozen.epochs", "train.fine_tune.epochs", "train.scratch.epochs"], EPOCHS),
    **dict.fromkeys(["train.frozen.learning_rate", "train.fine_tune.learning_rate", "train.scratch.learning_rate"],
                    RATE),
    "train.patience": (1, 10000, True), "train.max_repeats": (1, 10000, True), "train.head.units": (0, 65536, True), "train.head.dropout": (0.0, 0.9, False),
    "train.fine_tune.unfreeze_fraction": (0.0, 1.0, False), "train.fine_tune.views": (0, 64, True), "train.scratch.weight_decay": (0.0, 1.0, False),
    "train.scratch.warmup_fraction": (0.0, 0.5, False), "train.scratch.watch_from_fraction": (0.0, 1.0, False),
    "train.scratch.label_smoothing": (0.0, 0.5, False), "train.scratch.dropout": (0.0, 0.9, False),
    "train.scratch.units": (0, 65536, True),
    "train.augment.rotation": (0.0, 0.5, False), "train.augment.zoom": (0.0, 0.9, False),
    "train.augment.translate": (0.0, 0.5, False),
    "tune.trials": (1, 10000, True), "tune.epochs": (1, 10000, True),
    "profile.warmup_runs": (1, 100000, True), "profile.latency_runs": (20, 1000000, True),
    "profile.batch_size": (2, 65536, True), "profile.throughput_runs": (3, 100000, True),
    "profile.tflite_eval_images": (10, 1000000, True),
    "compare.label_target": (0.01, 1.0, False),
}
# Every key each section may hold. A misspelt key would otherwise be ignored and
# its default used without a word, so each stage refuses unknown keys in the
# sections it reads (check_section). Top-level keys are not checked: users add
# sections of their own for their own stages.
KEYS = {
    "fetch": ("dir", "retries", "backoff_s", "timeout_s"),
    "cifar10": ("format", "urls", "checksum", "size_bytes", "val_fraction", "train_fraction"),
    "cinic10": ("urls", "checksum", "size_bytes", "per_class", "origin"),
    "corruptions": ("per_class", "distinct", "names"),
    "features": ("batch_size", "precision"),
    "train": ("batch_size", "patience", "max_repeats", "head", "frozen", "fine_tune", "scratch", "augment"),
    "train.head": ("units", "dropout"),
    "train.frozen": ("epochs", "learning_rate"),
    "train.fine_tune": ("epochs", "learning_rate", "unfreeze_fraction", "views", "precision"),
    "train.scratch": ("epochs", "learning_rate", "weight_decay", "warmup_fraction", "watch_from_fraction",
                      "label_smoothing", "optimizer", "units", "dropout", "precision"),
    "train.augment": ("flip", "translate", "rotation", "zoom"),
    "tune": ("enabled", "trials", "epochs", "units", "dropout", "learning_rate"),
    "evaluate": ("batch_size",),
    "profile": ("warmup_runs", "latency_runs", "batch_size", "throughput_runs", "tflite", "tflite_eval_images"),
    "compare": ("max_latency_ms", "max_size_mb", "max_peak_rss_mb", "rank_by", "prefer", "mixed_tta", "label_target"),
}
OPTIMIZERS = ("sgd", "adamw")  # train.scratch.optimizer (core.training.OPTIMIZERS): SGD is Nesterov momentum 0.9
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # train.scratch.precision (Keras dtype policies)
PREFER = ("latency", "size", "memory")  # compare.prefer: the cost that breaks a tie (compare.table.PREFER_COLUMNS)
# Params with a fixed set of values: key -> the allowed values.
CHOICES = {"train.scratch.optimizer": OPTIMIZERS, "train.scratch.precision": PRECISIONS,
           "train.fine_tune.precision": PRECISIONS, "features.precision": PRECISIONS, "compare.prefer": PREFER}
# Every true/false param: `flip: "no"` or `enabled: 0` would otherwise be read by truth value.
FLAGS = ("flip_tta", "corruptions.distinct", "train.augment.flip", "tune.enabled", "compare.mixed_tta")
TFLITE_KINDS = ("fp32", "fp16", "int8")  # profile.tflite: the exports profile makes, in this order
# Sizes in bytes may be null (unknown); when given they must be integers >= 1.
OPTIONAL_NUMBERS = dict.fromkeys(["cifar10.size_bytes", "cinic10.size_bytes"], (1, 1 << 50, True))


# `weights` besides a path: Keras' download (and cache, ~/.keras/models) | random initialisation.
WEIGHTS = ("imagenet", "none")
WEIGHTS_ALLOWED = "allowed: imagenet, none, or a weights file or a directory of Keras' weights files"


def check_weights(value):
    """params' `weights` as text: imagenet, none or a path (whether the path exists is weights_source's)."""
    if not isinstance(value, str) or not value.strip():
        raise ParamError(f"params.yaml: `weights` is {value!r}; {WEIGHTS_ALLOWED}")
    return value


def project_root(environ=None):
    """The project's root (where dvc.yaml and params.yaml are), against which a relative path in params is read:
    DVC_ROOT, which DVC sets for every stage it runs, and for a queued experiment to the repository it was queued
    from, not the temporary copy under .dvc/tmp/exps it runs in (which lacks git-ignored files); else the current
    directory (a stage run by hand runs from the root)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("DVC_ROOT") or os.getcwd())


def weights_source(value, root=None):
    """params' `weights`: "imagenet", "none", or the absolute Path of the no-top weights file or the directory of
    Keras' weights files (a copy of ~/.keras/models) it names, `~` expanded and a relative path read against
    `root` (project_root()). ParamError naming the key and the path looked at if it is none of these."""
    value = check_weights(value)
    if value in WEIGHTS:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(root or project_root()) / path
    if not (path.is_file() or path.is_dir()):
        raise ParamError(f"params.yaml: `weights` is {value!r}; {WEIGHTS_ALLOWED} (no such file or directory: "
                         f"{path})")
    return path


def spec_number(params, key):
    """The number at `key`, checked against its row of NUMBERS (or OPTIONAL_NUMBERS: None passes)."""
    if key in OPTIONAL_NUMBERS:
        value = get(params, key)
        return None if value is None else check_number(value, key, *OPTIONAL_NUMBERS[key])
    return number(params, key, *NUMBERS[key])


def check_section(params, section):
    """Refuse unknown keys in `section` (a top-level key such as "train", a subsection such as
    "train.scratch", or a leaf such as "seed") and its subsections, check every numeric key of NUMBERS,
    every flag of FLAGS and every choice of CHOICES under it, `weights` as text (check_weights) and, for "tune",
    the search space keras-tuner takes. Returns {key: checked value}."""
    def within(key):
        return key == section or key.startswith(section + ".")

    for key in filter(within, KEYS):
        known_keys(params, key, KEYS[key])
    checked = {key: spec_number(params, key) for key in filter(within, {**NUMBERS, **OPTIONAL_NUMBERS})}
    for key in filter(within, FLAGS):
        checked[key] = get(params, key)
        if not isinstance(checked[key], bool):
            raise ParamError(f"params.yaml: `{key}` must be true or false, got {checked[key]!r}")
    for key in filter(within, CHOICES):
        checked[key] = choice(params, key, CHOICES[key])
    if within("weights"):
        checked["weights"] = check_weights(get(params, "weights"))
    if section == "tune":
        checked["tune.units"] = integer_choices(params, "tune.units", 0, 65536)
        checked["tune.dropout"] = number_range(params, "tune.dropout", 0.0, 0.9)
        checked["tune.learning_rate"] = number_range(params, "tune.learning_rate", 1e-8, 1.0, positive=True)
    return checked


def sources(params, key):
    """A list of URLs or local paths, tried in order; `none` gives []."""
    value = get(params, key)
    if value is None or value == "none":
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ParamError(f"params.yaml: `{key}` must be a URL, a local path, a list of them, or none; got {value!r}")
