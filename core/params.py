"""Reading params.yaml and checking values, so a typo stops a stage with an
error that names the key and the allowed values instead of a traceback."""
import difflib
from pathlib import Path

import yaml

from core import StageError


class ParamError(StageError):
    pass


def load(path="params.yaml"):
    with open(path) as f:
        return yaml.safe_load(f)


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
    if value not in allowed:
        raise ParamError(f"params.yaml: `{key}` is {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


def number(params, key, low=None, high=None, integer=False):
    """A number within [low, high] (either bound optional)."""
    value = get(params, key)
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ParamError(f"params.yaml: `{key}` must be {kind}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ParamError(f"params.yaml: `{key}` is {value}; must be in {span}")
    return value


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
