"""DVC reruns only what changed, in a temporary git + DVC repo on tiny data, for basecnn and a pretrained
backbone (mobilenetv2 at 32 px from random weights). The repo is a copy of README's route
(tests/tiny_repo.py), whose two experiments already computed every stage for both models:

(a) every stage forced to run again (`dvc repro -f`) leaves `dvc status` clean and its outputs' hashes
    unchanged (but the measurement records: timings, machine);
(b) for every params key (listed from core.params, so a new key is covered without editing this test),
    changing it makes DVC rerun exactly the stages whose work reads it for that model (core.reads.READS);
(c) the same dataset under another path reruns the download and nothing after it;
(d) params changed and changed back restore each stage from DVC's run cache, nothing recomputed.

(b) does resolve_params' work (it writes what features and train read) and asks DVC which stages are
out of date: running every model stage for each of ~60 keys and two models would take most of an hour. Real `dvc repro` runs check the same for a few keys, the done-when examples
among them, and show that a rerun whose outputs are byte-identical reruns nothing downstream.
"""
import copy
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from core.params import CHOICES, FLAGS, KEYS, NUMBERS, OPTIONAL_NUMBERS, get
from core.params import load as load_params
from core.reads import READS, reads
from test_bad_inputs import set_key
from test_params import leaves
from tiny_repo import dvc

pytestmark = pytest.mark.e2e

# Output files that hold measurements (timings, memory, the machine): a rerun writes new figures there.
MEASURED = re.compile(r"^metrics/(conditions/.*|profile\.json|train\.json)$")
# Values for keys whose change no rule below derives (the run never reads them: DVC's status is asked).
CHANGES = {
    "weights": "imagenet", "cifar10.format": "binary", "cifar10.urls": ["elsewhere/cifar.tar.gz"],
    "cifar10.checksum": "sha256:" + "0" * 64, "cinic10.urls": ["elsewhere/cinic.tar.gz"],
    "cinic10.checksum": "md5:" + "0" * 32, "cinic10.origin": "all", "corruptions.names": ["pixelate"],
    "fetch.dir": "elsewhere", "profile.tflite": ["fp16"], "tune.units": [0, 64], "tune.dropout": [0.0, 0.3],
    "tune.learning_rate": [0.001, 0.01], "compare.rank_by": "test_accuracy", "compare.max_latency_ms": 100,
    "compare.max_size_mb": 100, "compare.max_peak_rss_mb": 1000,
}


def every_key(params):
    """Every leaf key: the sections' keys of core.params.KEYS, and the top-level keys outside them."""
    keys = [f"{section}.{k}" for section, names in KEYS.items() for k in names if f"{section}.{k}" not in KEYS]
    return [k for k in params if k not in KEYS] + keys


def with_value(params, key, value):
    out = copy.deepcopy(params)
    set_key(out, key, value)
    return out


def changed_value(params, key):
    """A valid value of `key` other than its value in `params`."""
    value = get(params, key)
    if key == "model":
        return "basecnn" if value != "basecnn" else "mobilenetv2"
    if key in CHANGES:
        assert CHANGES[key] != value, key
        return CHANGES[key]
    if key in FLAGS:
        return not value
    if key in CHOICES:
        return next(v for v in CHOICES[key] if v != value)
    if key in OPTIONAL_NUMBERS and value is None:
        return OPTIONAL_NUMBERS[key][0] + 1
    if key in NUMBERS or key in OPTIONAL_NUMBERS:
        low, high, integer = {**NUMBERS, **OPTIONAL_NUMBERS}[key]
        if integer:
            return value + 1 if value + 1 <= high else value - 1
        return (value + high) / 2 if value < high else (value + low) / 2
    raise AssertionError(f"no changed value for params key `{key}`: add one to CHANGES in {__file__}")


def write_params(repo, params):
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ran(output):
    """The stages a `dvc repro` output says it ran, and those it restored from the run cache."""
    return (set(re.findall(r"Running stage '(\w+)'", output)),
            set(re.findall(r"Stage '(\w+)' is cached - skipping run", output)))


def touched(output):
    """The stages a `dvc repro` output ran or restored from the run cache."""
    return set.union(*ran(output))


def out_hashes(repo):
    """{output path: md5} of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for stage in lock.values() for o in stage.get("outs", [])}


def repro(repo, *args):
    return dvc(repo, "repro", *args).stdout


def readers(params, key):
    """The stages whose work reads `key` for params' model: the expectation."""
    return {stage for stage in READS
            if any(key == r or key.startswith(r + ".") for r in reads(params, stage))}


def out_of_date(repo, params, keys, monkeypatch):
    """For each key: changed alone, the stages DVC's status calls out of date. resolve_params' work is done
    here first, as `dvc repro` would run it (in this process: a millisecond, no TensorFlow), so that its
    outputs, what features and train read for the model, say whether they rerun; DVC itself only answers
    (its status, in this process), so dvc.lock and the run cache are untouched. resolve_params counts as
    out of date only for what it depends on, not for the outputs rewritten here."""
    from dvc.repo import Repo

    from stages import resolve_params
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(repo)  # DVC finds a stage named on its own in the dvc.yaml of the working directory
    resolved = repo / "data/params"

    def stale(name, reasons):
        return name != "resolve_params" or any("changed deps" in r for r in reasons if isinstance(r, dict))

    found = {}
    for key in keys:
        changed = with_value(params, key, changed_value(params, key))
        write_params(repo, changed)
        resolve_params.main(changed, out_dir=str(resolved))
        with Repo(str(repo)) as dvc_repo:  # a Repo reads dvc.yaml and params once: one per change
            status = {name.split(":")[-1]: reasons for name, reasons in dvc_repo.status().items()}
        found[key] = {name for name, reasons in status.items() if stale(name, reasons)}
    write_params(repo, params)
    resolve_params.main(params, out_dir=str(resolved))
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout  # all put back
    return found


def forced_reruns_change_nothing(repo, args, stages):
    """`dvc repro -f <args>` runs `stages` again; nothing is stale after it and every output but the
    measurement records has the bytes it had."""
    before = out_hashes(repo)
    assert ran(repro(repo, "-f", *args))[0] == set(stages)
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    after = out_hashes(repo)
    changed = sorted(path for path in before if before[path] != after[path] and not MEASURED.match(path))
    assert changed == [], f"rerun with the same inputs wrote other bytes: {changed}"


def changed_and_back(repo, params, key, value=None):
    """Run with `key` changed (to `value`, or another valid one), then with params again: the stages the
    change ran or restored, and what the return ran and what it restored from the run cache."""
    write_params(repo, with_value(params, key, changed_value(params, key) if value is None else value))
    there = touched(repro(repo))
    write_params(repo, params)
    return there, ran(repro(repo))


# DVC's own modules, called in this process by out_of_date, use pygtrie's soon-deprecated `.value`.
@pytest.mark.filterwarnings("ignore:_NoneStep.value will soon raise AttributeError:DeprecationWarning")
def test_dvc_reruns_only_what_changed(route_copy, tmp_path, monkeypatch):
    project = route_copy
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    backbone = load_params(project / "params.yaml")  # README's last run: mobilenetv2
    assert backbone["model"] == "mobilenetv2"
    base = {**backbone, "model": "basecnn"}
    model_stages = [s for s in stages if "model" in reads(base, s)]
    # (d) README ran both models: back to basecnn, every model stage comes from the run cache.
    write_params(project, base)
    assert ran(repro(project)) == (set(), set(model_stages))

    # (a) basecnn: every stage forced again, byte-identical.
    forced_reruns_change_nothing(project, [], stages)
    # (b) every key, basecnn.
    keys = every_key(base)
    assert {k for k, _ in leaves(base)} <= set(keys)
    stale = out_of_date(project, base, keys, monkeypatch)
    for key, found in stale.items():
        assert found == readers(base, key), key
    # Another training seed trains again on the same images; another data seed chooses other images.
    image_stages = {"download_cifar10", "sample_cinic10", "corrupt_cifar10"}
    assert not stale["seed"] & image_stages and image_stages <= stale["data_seed"]
    # For real: a head param or image_size for basecnn reruns resolve_params only; a download setting reruns
    # the data stages, which write the same bytes, and nothing after them; a corruption reruns CIFAR-10-C
    # and its evaluation; (d) changed back, each comes from the run cache.
    for key in ("train.head.units", "image_size", "features.batch_size"):
        assert changed_and_back(project, base, key) == ({"resolve_params"}, (set(), {"resolve_params"})), key
    data_stages = {"download_cifar10", "sample_cinic10"}
    assert changed_and_back(project, base, "fetch.timeout_s", 7) == (data_stages, (set(), data_stages))
    assert changed_and_back(project, base, "corruptions.names", ["pixelate"]) == (
        {"corrupt_cifar10", "evaluate"}, (set(), {"corrupt_cifar10", "evaluate"}))
    # (c) the same images under another path: the download reruns, nothing after it.
    shutil.copytree(base["cifar10"]["urls"][0], tmp_path / "copy")
    write_params(project, with_value(base, "cifar10.urls", [str(tmp_path / "copy")]))
    assert ran(repro(project))[0] == {"download_cifar10"}
    write_params(project, base)
    assert ran(repro(project)) == (set(), {"download_cifar10"})

    # The same for the pretrained backbone, on the same data: its stages come from README's run.
    write_params(project, backbone)
    assert ran(repro(project)) == (set(), set(model_stages))
    forced_reruns_change_nothing(project, ["--downstream", "resolve_params"], model_stages)
    # Which stages a key reaches differs by model only through resolve_params, which writes, per model, what
    # features and train read; every other key reaches the stages whose dvc.yaml `params` name it, whatever
    # the model, as (b) found for basecnn.
    resolved = [k for k in keys if "resolve_params" in readers(backbone, k)]
    assert all(readers(backbone, k) == readers(base, k) for k in keys if k not in resolved)
    stale = out_of_date(project, backbone, resolved, monkeypatch)
    for key, found in stale.items():
        assert found == readers(backbone, key), key
    # A head param reruns train (and, through its model, evaluate and profile), not features: for basecnn it
    # reran resolve_params alone, for real, above. (The real run here took a minute of the suite for what
    # DVC's status above already says.)
    assert stale["train.head.units"] == {"resolve_params", "train"}

