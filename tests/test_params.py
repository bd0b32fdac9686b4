"""params.yaml read as DVC reads and writes it, and every numeric check.

`dvc exp run -S key=value` writes params.yaml through DVC's own override code
(dvc.utils.hydra.apply_overrides); these tests apply overrides with that same
function, then read the file with core.params.load, for every numeric param.
One e2e test runs the real `dvc exp run -S`.
"""
import copy
import math
import re
import shutil
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_cmd
from core.cli import report
from core.params import (FLAGS, KEYS, NUMBERS, OPTIONAL_NUMBERS, TFLITE_KINDS, ParamError, check_number, check_section, get, load,
                         project_root, spec_number, subset, weights_source)
from test_bad_inputs import run_stage, set_key

FAST = settings(max_examples=15, deadline=None)


def leaves(tree, prefix=""):
    """(dotted key, value) of every scalar in a params tree (lists as one leaf)."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, dotted + ".")
        else:
            yield dotted, value


def numeric(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


DEFAULTS = load(ROOT / "params.yaml")
NUMERIC_DEFAULTS = {k: v for k, v in leaves(DEFAULTS) if numeric(v)}


def apply_overrides(tmp_path, overrides):
    """What `dvc exp run -S` does to params.yaml, on a copy; returns the copy read back by core.params.load."""
    from dvc.utils.hydra import apply_overrides as dvc_apply
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    dvc_apply(str(path), overrides)
    return load(path)


def run_offline_overrides(given={"OFFLINE_CIFAR10": "../cifar10-jpg.tar.gz", "OFFLINE_CHECKSUM": "sha256:" + "0" * 64}):
    """The `-S key=value` overrides of the Makefile's run-offline recipe, its variables filled in as a user
    gives them on the command line (`make run-offline OFFLINE_CIFAR10=...`)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = next(line for line in text.split("run-offline: setup\n", 1)[1].splitlines() if "-S " in line)
    variables = {**dict(re.findall(r"^(OFFLINE_\w+) \?=[ ]?(.*)$", text, re.M)), **given}
    overrides = re.findall(r"-S (\S+)", recipe)
    return [re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], o).strip("'") for o in overrides]


def test_dvc_set_rewrites_only_the_keys_it_sets(tmp_path):
    """DVC writes params.yaml back with its own YAML dumper (block lists, nulls as empty values): the file is
    laid out that way already, so `make run-offline`'s overrides change their own lines and nothing else (no
    reformatted list, no moved comment or blank line), and setting every key to its own value changes nothing."""
    from dvc.utils.hydra import apply_overrides as dvc_apply
    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    overrides = run_offline_overrides()
    assert "weights=none" in overrides and "cinic10.urls=none" in overrides
    path.write_text(original)
    dvc_apply(str(path), overrides)
    before, after = original.splitlines(), path.read_text().splitlines()
    changed = [line for line in before if line not in after]
    top = {o.split("=")[0].split(".")[-1] for o in overrides}
    # A changed line is an overridden key's, or an item of a list that was overridden (cifar10.urls, cinic10.urls).
    assert all(line.strip().split(":")[0] in top or line.strip().startswith("- https://") for line in changed), changed
    assert len(changed) <= len(overrides) + 2  # the two CINIC-10 mirrors went with their list
    # Every scalar set to its own value: nothing moves but the SHA-256 checksum, which DVC's dumper folds onto
    # the next line on every rewrite (its line passes 80 columns): the same value, read back the same.
    same = [f"{k}={'null' if v is None else v}" for k, v in leaves(DEFAULTS) if not isinstance(v, list)]
    assert len(same) > 40
    path.write_text(original)
    dvc_apply(str(path), same)
    assert [line for line in original.splitlines() if line not in path.read_text().splitlines()] == [
        line for line in original.splitlines() if line.startswith("  checksum: sha256:")]
    assert load(path) == DEFAULTS


def test_every_numeric_param_has_a_range():
    # compare.* are checked by compare/table.py (null: no limit), the sizes are OPTIONAL_NUMBERS
    assert set(NUMERIC_DEFAULTS) - set(NUMBERS) - set(OPTIONAL_NUMBERS) == set()
    for key in NUMBERS:
        spec_number(DEFAULTS, key)  # every default passes its own check


def test_defaults_round_trip_through_dvc_set(tmp_path):
    """Every numeric default set through `-S` (as repr, as scientific notation) reads back as the same number."""
    for text in (repr, "{:.17e}".format):
        overrides = [f"{k}={text(v)}" for k, v in NUMERIC_DEFAULTS.items()]
        back = apply_overrides(tmp_path, overrides)
        for key, value in NUMERIC_DEFAULTS.items():
            assert spec_number(back, key) == value, (key, text(value), get(back, key))


def test_small_learning_rate_written_by_dvc_is_a_float(tmp_path):
    for text in ("0.00001", "1e-5", "1e-05", "1.0E-5"):
        back = apply_overrides(tmp_path, [f"train.fine_tune.learning_rate={text}"])
        assert (tmp_path / "params.yaml").read_text().count("learning_rate: 1e-05") == 1
        assert spec_number(back, "train.fine_tune.learning_rate") == 1e-5
        # The bug this fixes: PyYAML (YAML 1.1) reads the same line as the string '1e-05'.
        assert yaml.safe_load((tmp_path / "params.yaml").read_text())["train"]["fine_tune"]["learning_rate"] == "1e-05"


def in_range(key):
    low, high, integer = NUMBERS[key]
    if integer:
        return st.integers(low, high)
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("text", [repr, "{:.17e}".format, "{:.17g}".format], ids=["repr", "e17", "g17"])
@FAST
@given(st.fixed_dictionaries({key: in_range(key) for key in NUMBERS}))
def test_any_value_in_range_round_trips_through_dvc_set(tmp_path_factory, text, values):
    tmp_path = tmp_path_factory.mktemp("p")
    back = apply_overrides(tmp_path, [f"{k}={text(v)}" for k, v in values.items()])
    for key, value in values.items():
        got = spec_number(back, key)
        assert got == value and (isinstance(got, int) or not NUMBERS[key][2]), (key, text(value), got)


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_nan_and_infinity_are_refused_for_every_numeric_key(tmp_path, key):
    path = tmp_path / "params.yaml"
    parent, _, last = key.rpartition(".")
    data = copy.deepcopy(DEFAULTS)
    target = data
    for part in filter(None, parent.split(".")):
        target = target[part]
    target[last] = "PLACEHOLDER"
    template = yaml.safe_dump(data)
    for text in (".nan", ".inf", "-.inf", ".NaN", ".Inf"):  # each spelling, in one file each
        path.write_text(template.replace("PLACEHOLDER", text))
        try:
            got = spec_number(load(path), key)
        except ParamError as e:
            assert re.search(re.escape(f"`{key}` is ") + r"(NaN|-?inf)", str(e)), (text, str(e))
        else:
            pytest.fail(f"{key}: {text} read as {got!r}, not refused")


def acceptable(value, low, high, integer):
    """What check_number must return for `value`, worked out apart from it; None where it must refuse."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if integer and not float(value).is_integer():
        return None
    value = int(value) if integer else value
    return value if low <= value <= high else None


@pytest.mark.parametrize("key", sorted(NUMBERS))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_any_value_either_passes_its_range_or_names_the_key(key, data):
    """Whatever a params value is, the check returns it (an integral float as an int) if it is a finite number
    in range, and one line naming the key if not: a check that refused everything would fail here."""
    low, high, integer = NUMBERS[key]
    near = st.floats(low - 1, high + 1) | st.integers(int(low) - 1, int(high) + 1)
    value = data.draw(st.one_of(in_range(key), near, st.text(max_size=5), st.booleans(), st.none(),
                                st.lists(st.integers(), max_size=2), st.floats(allow_nan=True, allow_infinity=True),
                                st.integers(-2 ** 70, 2 ** 70)))
    want = acceptable(value, low, high, integer)
    if want is None:
        with pytest.raises(ParamError) as e:
            check_number(value, key, low, high, integer)
        assert f"`{key}`" in str(e.value) and "\n" not in str(e.value)
    else:
        got = check_number(value, key, low, high, integer)
        assert got == want and type(got) is type(want)


@pytest.mark.parametrize("key", FLAGS)
@FAST
@given(st.one_of(st.booleans(), st.text(max_size=5), st.none(), st.integers(-2, 2), st.floats(allow_nan=True),
                 st.lists(st.booleans(), max_size=2)))
def test_any_flag_value_is_a_boolean_or_one_line_naming_the_key(key, value):
    """`flip: "no"` or `enabled: 0` would be read by truth value: a flag is true or false, nothing else."""
    params = copy.deepcopy(DEFAULTS)
    set_key(params, key, value)
    try:
        got = check_section(params, key.split(".")[0])[key]
    except ParamError as e:
        assert f"`{key}` must be true or false" in str(e) and "\n" not in str(e)
        assert not isinstance(value, bool)
        return
    assert got is value and isinstance(value, bool)


def test_integral_float_for_integer_key_becomes_int():
    assert check_number(1e3, "seed", 0, 10 ** 6, integer=True) == 1000
    with pytest.raises(ParamError, match=r"`seed` must be an integer, got 1.5"):
        check_number(1.5, "seed", 0, 10, integer=True)


@pytest.mark.parametrize("key, value, match", [
    pytest.param("seed", -1, r"`seed` is -1; must be in \[0, 4294967295\]", id="negative-seed"),
    pytest.param("seed", 2 ** 32, r"`seed` is 4294967296; must be in", id="seed-past-numpy"),
    pytest.param("data_seed", -1, r"`data_seed` is -1; must be in \[0, 4294967295\]", id="negative-data-seed"),
    pytest.param("data_seed", 2 ** 32, r"`data_seed` is 4294967296; must be in", id="data-seed-past-numpy"),
    pytest.param("fetch.timeout_s", 1e12, r"`fetch.timeout_s` is 1000000000000.0; must be in \[1, 3600\]",
                 id="timeout-past-timeval"),
    pytest.param("fetch.backoff_s", 1e300, r"`fetch.backoff_s` is 1e\+300; must be in \[0, 600\]",
                 id="backoff-past-sleep"),
    pytest.param("fetch.retries", 10 ** 6, r"`fetch.retries` is 1000000; must be in \[1, 20\]", id="retries-huge"),
])
def test_numbers_past_a_library_limit_are_refused(key, value, match):
    params = load(ROOT / "params.yaml")
    parent, _, last = key.rpartition(".")
    (params[parent] if parent else params)[last] = value
    with pytest.raises(ParamError, match=match):
        spec_number(params, key)


@pytest.mark.parametrize("key, value, match", [
    pytest.param("tune.dropout", [0.5, 0.0], r"`tune.dropout` is \[0.5, 0.0\]; its min must not exceed its max",
                 id="dropout-reversed"),
    pytest.param("tune.dropout", [0.1], r"`tune.dropout` must be a range \[min, max\]", id="dropout-one-value"),
    pytest.param("tune.learning_rate", [0.0, 0.01], r"`tune.learning_rate\[0\]` is 0.0; must be in",
                 id="log-range-from-zero"),
    pytest.param("tune.learning_rate", [0.1, 0.01], r"its min must not exceed its max", id="log-range-reversed"),
    pytest.param("tune.units", [], r"`tune.units` must be a non-empty list of integers", id="units-empty"),
    pytest.param("tune.units", [64, 128.5], r"`tune.units\[1\]` must be an integer", id="units-mixed-types"),
    pytest.param("tune.units", [64, True], r"`tune.units\[1\]` must be an integer", id="units-bool"),
    pytest.param("tune.units", [64, 64], r"list each value once", id="units-repeated"),
    pytest.param("tune.trials", float("nan"), r"`tune.trials` is NaN", id="trials-nan"),
])
def test_tuning_ranges_keras_tuner_rejects_are_refused(key, value, match):
    params = load(ROOT / "params.yaml")
    params["tune"][key.split(".")[1]] = value
    with pytest.raises(ParamError, match=match):
        check_section(params, "tune")


def test_default_tuning_space_passes():
    checked = check_section(DEFAULTS, "tune")
    assert checked["tune.units"] == [0, 128, 256, 512] and checked["tune.learning_rate"] == [0.0001, 0.01]


@pytest.mark.parametrize("value", [None, "", "  ", 5, ["a"], {"path": "x"}, True])
def test_weights_that_are_not_text_are_refused_naming_the_key(value):
    params = {**DEFAULTS, "weights": value}
    with pytest.raises(ParamError, match=re.escape(f"`weights` is {value!r}; allowed: imagenet, none, or a weights "
                                                   "file or a directory of Keras' weights files")):
        check_section(params, "weights")


def test_a_relative_weights_path_is_read_against_the_project_root(tmp_path, monkeypatch):
    """DVC sets DVC_ROOT for every stage, for a queued experiment to the repository it was queued from (its
    temporary copy under .dvc/tmp/exps lacks git-ignored files such as a copy of ~/.keras/models); by hand, the
    stage runs from the root."""
    root, elsewhere = tmp_path / "project", tmp_path / "project/.dvc/tmp/exps/tmp123"
    (root / "keras-models").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DVC_ROOT", str(root))
    assert weights_source("keras-models") == root / "keras-models"
    assert weights_source(str(root / "keras-models")) == root / "keras-models"
    assert [weights_source(v) for v in ("imagenet", "none")] == ["imagenet", "none"]
    monkeypatch.delenv("DVC_ROOT")
    with pytest.raises(ParamError, match=re.escape(f"`weights` is 'keras-models'; allowed: imagenet, none, or a "
                                                   f"weights file or a directory of Keras' weights files (no such "
                                                   f"file or directory: {elsewhere / 'keras-models'})")):
        weights_source("keras-models")
    monkeypatch.chdir(root)
    assert weights_source("keras-models") == root / "keras-models" and project_root() == root


# params.yaml itself: missing, not YAML, a Python tag, not a mapping

BAD_FILES = {
    "missing": (None, r"params.yaml: missing; run the stage from the project's root"),
    "not-yaml": ("seed: [1\n", r"params.yaml: not valid params YAML \(line 2: expected ',' or '\]'"),
    "python-tag": ("seed: !!python/object/apply:os.system ['touch pwned']\n",
                   r"params.yaml: not valid params YAML \(line 1: tag 'tag:yaml.org,2002:python/object/apply:os.system'"
                   r" is not allowed \(params are plain values\)\)"),
    "duplicate-key": ("seed: 1\nseed: 2\n", r"params.yaml: not valid params YAML \(line 2: found duplicate key \"seed\""),
    "a-list": ("- 1\n- 2\n", r"params.yaml: must be a mapping of settings \(key: value\), got list"),
    "binary": (b"\xff\xfe\x00garbage", r"params.yaml: not UTF-8 text"),
    "directory": ("DIR", r"params.yaml: not a regular file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_params_file_is_named(tmp_path, case):
    content, match = BAD_FILES[case]
    path = tmp_path / "params.yaml"
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ParamError, match=match) as e:
        load(path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["missing", "python-tag", "not-yaml"])
def test_cli_bad_params_file_is_one_line(tmp_path, case):
    content, match = BAD_FILES[case]
    if content is not None:
        (tmp_path / "params.yaml").write_text(content)
    result = run_stage(["-m", "stages.download_cifar10"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert re.match("error: " + match, result.stderr)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "data").exists()


def test_cli_reports_environment_errors_and_keeps_bugs():
    import errno
    line = report(PermissionError(errno.EACCES, "Permission denied", "data/cifar10"))
    assert line.startswith("error: data/cifar10: Permission denied; check that you may write")
    assert report(OSError(errno.EROFS, "Read-only file system", "metrics/x.json")).startswith(
        "error: metrics/x.json: Read-only file system; that file system is read-only")
    assert report(KeyError("x")) is None and report(TypeError("bug")) is None  # bugs keep their traceback
    assert report(OSError(errno.ECONNRESET, "reset")) is None


@pytest.mark.e2e
def test_dvc_exp_run_set_small_float_reaches_the_stage(project):
    """The real `dvc exp run -S` writes 1e-05; a stage reading params with core.params gets the float."""
    (project / "show_lr.py").write_text(
        "from core.params import load, spec_number\n"
        "print('LR', repr(spec_number(load(), 'train.fine_tune.learning_rate')))\n")
    (project / "dvc.yaml").write_text(
        "stages:\n  show:\n    cmd: python show_lr.py > lr.txt\n    deps: [show_lr.py, core/params.py]\n"
        "    params: [train.fine_tune.learning_rate]\n    outs: [lr.txt]\n")
    (project / ".gitignore").write_text("/lr.txt\n")
    run_cmd(["git", "add", "-A"], project)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], project)
    for text in ("0.00001", "1e-5"):
        run_cmd([sys.executable, "-m", "dvc", "exp", "run", "-S", f"train.fine_tune.learning_rate={text}"], project)
        assert (project / "lr.txt").read_text().strip() == "LR 1e-05"
        assert "learning_rate: 1e-05" in (project / "params.yaml").read_text()


@FAST
@given(st.one_of(st.none(), st.text(max_size=5), st.integers(),
                 st.lists(st.one_of(st.sampled_from(TFLITE_KINDS + ("FP32", "int4")), st.integers(), st.none(),
                                    st.lists(st.just("fp32"), max_size=1)), max_size=4)))
def test_tflite_kinds_are_a_list_of_distinct_known_exports_or_one_line_naming_the_key(value):
    try:
        got = subset({"profile": {"tflite": value}}, "profile.tflite", TFLITE_KINDS)
    except ParamError as e:
        assert "`profile.tflite`" in str(e) and "\n" not in str(e)
        assert value and value != [] and not (isinstance(value, list) and set(map(str, value)) <= set(TFLITE_KINDS)
                                              and len(set(map(str, value))) == len(value))
        return
    assert got == (value or []) and set(got) <= set(TFLITE_KINDS) and len(set(got)) == len(got)


def test_the_key_table_is_params_yaml():
    """KEYS lists exactly the keys of the committed params.yaml, section by section (no drift either way)."""
    for section, keys in KEYS.items():
        assert set(get(DEFAULTS, section)) == set(keys), section
    nested = {f"{s}.{k}" for s in DEFAULTS if isinstance(DEFAULTS[s], dict)
              for k, v in DEFAULTS[s].items() if isinstance(v, dict)}
    assert {s for s in DEFAULTS if isinstance(DEFAULTS[s], dict)} | nested == set(KEYS)


@pytest.mark.parametrize("section", sorted(KEYS))
@settings(max_examples=5, deadline=None)
@given(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_an_unknown_key_in_any_section_is_refused_by_its_check(section, key):
    """Every stage checks its sections with check_section, so a misspelt key anywhere stops it, named."""
    params = copy.deepcopy(DEFAULTS)
    get(params, section)[key] = 1
    top = section.split(".")[0]
    if key in KEYS[section]:
        return  # a known key, not a misspelling
    with pytest.raises(ParamError, match=re.escape(f"unknown key `{section}.{key}`")):
        check_section(params, top)
