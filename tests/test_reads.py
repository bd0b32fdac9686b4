"""Which params each stage reads (core.reads): the resolved params of a stage hold exactly the keys its
work reads for the selected model, and resolve_params writes the same bytes when only other keys change."""
import copy
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from core import StageError
from core.params import ParamError
from core.reads import READS, RESOLVED, reads, resolve
from core.registry import REGISTRY
from stages import resolve_params
from test_params import DEFAULTS, leaves

MODELS = list(REGISTRY)


def changed(value):
    """Another value of the same kind (the value's validity does not matter to resolve's selection)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return [value, "other"] if not isinstance(value, list) else [*value, 0]


def under(key, sections):
    return any(key == s or key.startswith(s + ".") for s in sections)


@pytest.mark.parametrize("model", MODELS)
def test_a_stage_sees_exactly_the_keys_it_reads(model):
    """For every stage and every leaf of params.yaml: changing the leaf changes what the stage gets exactly
    when the leaf is under a key the stage reads for this model; what it gets resolves to itself."""
    base = {**copy.deepcopy(DEFAULTS), "model": model}
    for stage in READS:
        got = resolve(base, stage)
        assert resolve(got, stage) == got
        for key, value in leaves(base):
            if key == "model":
                continue
            other = copy.deepcopy(base)
            node = other
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = changed(value)
            try:
                differs = resolve(other, stage) != got
            except ParamError:  # an out-of-range value is refused only where it is read
                differs = True
            assert differs == under(key, reads(base, stage)), (model, stage, key)


def test_basecnn_reads_no_pretrained_backbone_param_and_the_backbones_no_scratch_param():
    base = copy.deepcopy(DEFAULTS)
    scratch = resolve({**base, "model": "basecnn"}, "train")
    assert set(scratch["train"]) == {"batch_size", "patience", "max_repeats", "augment", "scratch"} and "tune" not in scratch
    assert resolve({**base, "model": "basecnn"}, "features") == {"seed": base["seed"], "model": "basecnn"}
    for name in (n for n, e in REGISTRY.items() if e.two_phase):
        two_phase = resolve({**base, "model": name}, "train")
        assert "scratch" not in two_phase["train"] and "tune" in two_phase
        assert resolve({**base, "model": name}, "features")["image_size"] == base["image_size"]


def test_a_misspelt_key_beside_the_read_ones_is_refused():
    params = {**copy.deepcopy(DEFAULTS), "model": "basecnn"}
    params["train"]["bath_size"] = 64
    with pytest.raises(ParamError, match=r"train\.bath_size.*train\.batch_size"):
        resolve(params, "train")


def test_resolve_params_writes_the_same_bytes_unless_a_read_key_changes(tmp_path):
    """basecnn: a head param (read by the backbones only) leaves both files byte-identical, so DVC reruns
    neither features nor train; a from-scratch param changes train's file only."""
    params = {**copy.deepcopy(DEFAULTS), "model": "basecnn"}
    files = lambda d: {s: (d / f"{s}.json").read_bytes() for s in RESOLVED}  # noqa: E731
    resolve_params.main(params, out_dir=tmp_path / "a")
    params["train"]["head"]["units"] += 1
    params["image_size"] = 224
    resolve_params.main(params, out_dir=tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    params["train"]["scratch"]["epochs"] += 1
    resolve_params.main(params, out_dir=tmp_path / "c")
    a, c = files(tmp_path / "a"), files(tmp_path / "c")
    assert a["features"] == c["features"] and a["train"] != c["train"]


def test_reading_params_imports_no_tensorflow():
    """resolve_params runs in a second: the registry and the params checks import no TensorFlow."""
    code = "import sys, stages.resolve_params; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("stage, key, meant", [
    ("features", "features.batch_sise", "features.batch_size"),
    ("train", "train.batch_sise", "train.batch_size"),
    ("evaluate", "evaluate.batch_sise", "evaluate.batch_size"),
    ("profile", "profile.latency_run", "profile.latency_runs"),
])
def test_a_misspelt_key_stops_each_model_stage_before_any_work(params, tmp_path, monkeypatch, stage, key, meant):
    """Every model stage refuses a key it does not know, naming the key it probably meant, before it reads a
    file (the working directory holds none)."""
    import importlib
    monkeypatch.chdir(tmp_path)
    params["model"] = "mobilenetv2"  # basecnn reads no features.* (core.reads), so nothing there is checked for it
    section, name = key.split(".")
    params[section][name] = params[section].pop(meant.split(".")[1])
    with pytest.raises(StageError, match=rf"unknown key `{re.escape(key)}`; did you mean `{re.escape(meant)}`\?"):
        importlib.import_module(f"stages.{stage}").main(params)
    assert list(tmp_path.iterdir()) == []
