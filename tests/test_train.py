"""Stages features + train on tiny random data: every registry entry, one epoch.

The runs several tests look at (a test differs from another only in what it asserts) are trained once per
session and worker (`shared_run`), and read, never written, by the tests."""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import ROOT
from core import StageError, hardware
from core.io import load_npz, save_npz, write_json
from core.models import REGISTRY
from core.params import load
from stages import features, resolve_params, train
from test_bad_inputs import set_key

PRETRAINED = [name for name, e in REGISTRY.items() if e.two_phase]
# One pytest-xdist worker runs this module: `shared_run` trains each route once per worker (a module fixture),
# so tests of one route on two workers trained it twice (DenseNet121's twice, some 45 s each). As a group it is
# also handed out first (make test's --dist loadgroup schedules the largest groups first), not left for last.
pytestmark = pytest.mark.xdist_group("train")


def one_epoch_setup(params):
    """In the current directory, a tiny data/cifar10 (40 train, 20 val images); `params` set for one-epoch
    runs at 32 px from random weights."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 20)):
        save_npz(f"data/cifar10/{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=(np.arange(n) % 10).astype(np.uint8))
    write_json("data/cifar10/info.json", {"classes": [f"c{i}" for i in range(10)], "image_shape": [32, 32, 3]})
    params.update(weights="none", image_size=32)
    t = params["train"]
    t["batch_size"] = 16
    for phase in ("frozen", "fine_tune", "scratch"):
        t[phase]["epochs"] = 1
    return params


@pytest.fixture
def workdir(tmp_path, monkeypatch, params):
    """A working directory with a tiny data/cifar10 and params for one-epoch runs."""
    monkeypatch.chdir(tmp_path)
    return one_epoch_setup(params)


SEARCH = {"tune.enabled": True, "tune.trials": 3, "tune.epochs": 1, "tune.units": [8, 16]}
# Runs shared by the tests of this module, each trained at most once, when a test first asks for it: {route:
# (model, changes to the one-epoch params)}. The params are conftest's `params` (From-scratch precision float32).
ROUTES = {
    # flip_tta as params.yaml has it (off). A gentler peak rate than SGD's 0.2, which on 3 steps (40 images) drives
    # every output to one class, warm-up step or not, where a mirrored image's prediction is trivially the same.
    "basecnn": ("basecnn", {"train.scratch.learning_rate": 0.02}),
    "basecnn-bfloat16": ("basecnn", {"train.scratch.precision": "mixed_bfloat16", "flip_tta": True}),
    "basecnn-auto": ("basecnn", {"train.scratch.precision": "auto"}),
    "mobilenetv2": ("mobilenetv2", {}),  # both phases
    # Both phases, shipped averaged over both views. DenseNet121: from random weights MobileNetV2's features are
    # the same for every image (about 1e-12), so its two views would agree whatever was shipped.
    "densenet121-flip": ("densenet121", {"flip_tta": True}),
    # The default route: `weights: imagenet` at 96 px (images resized inside the model), through Keras' own
    # loader on stand-in files (conftest's imagenet_standins); phase 2 off. MobileNetV2's head is searched.
    **{f"{name}-imagenet": (name, {"weights": "imagenet", "image_size": 96, "train.fine_tune.epochs": 0,
                                   **(SEARCH if name == "mobilenetv2" else {})}) for name in PRETRAINED},
}


@pytest.fixture(scope="session")  # not module: pytest ends a module's fixtures whenever another module's test
def shared_run(tmp_path_factory, request):  # runs between two of this one's, and each route would train again
    """shared_run(route): the directory in which features + train ran once for ROUTES[route], and its params."""
    done = {}

    def run(route):
        if route not in done:
            name, changes = ROUTES[route]
            directory = tmp_path_factory.mktemp(route)
            params = copy.deepcopy(load(ROOT / "params.yaml"))
            params["train"]["scratch"]["precision"] = "float32"  # as conftest's `params`
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(directory)
                one_epoch_setup(params)
                params["model"] = name
                for key, value in changes.items():
                    set_key(params, key, value)
                if params["weights"] == "imagenet":
                    from keras.src.utils import file_utils
                    from standin_weights import serve_from
                    mp.setattr(file_utils, "get_file", serve_from(request.getfixturevalue("standin_dir")))
                features.main(params)
                train.main(params)
            done[route] = directory, params
        return done[route]
    return run


@pytest.fixture
def trained(shared_run, monkeypatch):
    """trained(route): the params of shared_run(route), with its directory the current one (to read from)."""
    def chdir_to(route):
        directory, params = shared_run(route)
        monkeypatch.chdir(directory)
        return params
    return chdir_to


@pytest.fixture(scope="module")
def shipped(shared_run):
    """shipped(route): shared_run(route)'s models/model.keras loaded once, and its outputs on the val images in
    one pass: {"probs": class probabilities, "pool": the pooled features (pretrained entries only)}."""
    done = {}

    def load(route):
        if route not in done:
            directory, params = shared_run(route)
            model = keras.models.load_model(directory / "models/model.keras")
            x = load_npz(directory / "data/cifar10/val.npz")["x"]
            if REGISTRY[params["model"]].two_phase and not params["flip_tta"]:
                both = keras.Model(model.input, [model.get_layer("pool").output, model.output])
                outputs = dict(zip(("pool", "probs"), both.predict(x, verbose=0)))
            else:  # basecnn has no "pool" layer; a flip-TTA model calls its layers twice: "pool" has no single output
                outputs = {"probs": model.predict(x, verbose=0)}
            done[route] = model, outputs
        return done[route]
    return load


def same_run(a, b):
    """Params `a` and `b` train the same (conftest's `params` keeps downloads, which no test here makes, in
    each test's own directory)."""
    return {k: v for k, v in a.items() if k != "fetch"} == {k: v for k, v in b.items() if k != "fetch"}


def route_of(name):
    return name if name in ("basecnn", "mobilenetv2") else f"{name}-imagenet"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_entry_builds_and_trains(trained, shipped, name, machine_plan):
    """Each entry through features + train, and what it ships. basecnn from scratch; MobileNetV2 through both
    phases at 32 px; the other backbones through phase 1 on the default route (weights imagenet at 96 px,
    their phase 2 being the same core.models.unfreeze + fit: test_models checks that unfreeze opens layers
    of each)."""
    trained(route_of(name))
    info = json.loads(open("data/features/info.json").read())
    metrics = json.loads(open("metrics/train.json").read())
    conditions = json.loads(open("metrics/conditions/train.json").read())
    assert conditions["model"] == info["model"] == name and conditions["hardware"] == machine_plan
    # Where each stage's time went (docs/performance.md's per-stage table).
    extract = {"extract_train", "extract_val"} if REGISTRY[name].two_phase else set()
    assert set(json.loads(open("metrics/conditions/features.json").read())["wall_s"]) == {"build", "process"} | extract
    assert set(conditions["wall_s"]) == {"load", "recipe", "deploy", "val", "process"}
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # figures only: conditions are beside them
    if name == "mobilenetv2":
        assert metrics["frozen_epochs"] == metrics["fine_tune_epochs"] == 1 and metrics["unfrozen_layers"] > 0
    if REGISTRY[name].two_phase:
        assert load_npz("data/features/train.npz")["x"].shape[0] == 40 and metrics["frozen_epochs"] == 1
    else:
        assert not info["frozen_phase"] and metrics["scratch_epochs"] == 1
    for key in ("train_running_accuracy", "train_running_loss", "val_accuracy", "val_loss", "train_time_s"):
        assert np.isfinite(metrics[key])
    model, outputs = shipped(route_of(name))
    # The file is weights + architecture, without optimizer state (which would add 2x the trainable weights).
    weight_bytes = sum(w.numpy().nbytes for w in model.weights)
    assert os.path.getsize("models/model.keras") < weight_bytes * 1.05 + 500_000
    # The saved model takes the raw images, and its val accuracy on them is the one reported. (Keras' accuracy
    # from the predictions: model.evaluate on a loaded file is test_the_saved_model_loads_without_a_warning's.)
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, 32, 32, 3)
    accuracy = np.mean(outputs["probs"].argmax(axis=1) == load_npz("data/cifar10/val.npz")["y"])
    assert accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    steps = open("plots/train/plots/metrics/eval/accuracy.tsv").read().strip().splitlines()
    assert len(steps) == 1 + (2 if name == "mobilenetv2" else 1)  # header + one row per epoch, both phases' on one axis


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "float32"])
def test_recorded_compute_dtype_is_the_one_asked_for_on_this_machine(trained, machine_plan, precision):
    """From scratch, train computes in what core.hardware picks for this machine's plan and the setting
    (`auto`: bfloat16 only on a CPU that has it natively), and says so in its conditions."""
    params = trained({"auto": "basecnn-auto", "float32": "basecnn"}[precision])
    assert params["train"]["scratch"]["precision"] == precision
    conditions = json.loads(open("metrics/conditions/train.json").read())
    assert conditions["hardware"] == machine_plan
    assert conditions["compute_dtype"] == hardware.compute_policy(precision, machine_plan)


@pytest.mark.slow
def test_the_saved_model_loads_without_a_warning_and_evaluates(trained):
    """The shipped model (models.for_deployment) loads without any warning: compiled with an unbuilt Adam,
    every load warned "Skipping variable loading for optimizer"; and model.evaluate works on it. Trained
    in bfloat16 (forced, so on any CPU), it is shipped computing in float32, the mirror pass's layers too."""
    assert trained("basecnn-bfloat16")["train"]["scratch"]["precision"] == "mixed_bfloat16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.models.load_model("models/model.keras")
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert json.loads(open("metrics/conditions/train.json").read())["compute_dtype"] == "mixed_bfloat16"
    layers = [layer for part in (model, model.get_layer("backbone")) for layer in part.layers if layer.weights]
    assert layers and {layer.compute_dtype for layer in layers} == {"float32"}
    val = load_npz("data/cifar10/val.npz")
    metrics = json.loads(open("metrics/train.json").read())
    assert model.evaluate(val["x"], val["y"], verbose=0)[1] == pytest.approx(metrics["val_accuracy"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRETRAINED)
def test_saved_model_pools_exactly_the_cached_features(trained, shipped, standin_dir, name, machine_plan):
    """The default route, `weights: imagenet` at 96 px (images resized inside the model), through Keras'
    own loader on stand-in files: with phase 2 off, the shipped model's pooled output on the val images
    is the cached feature file, so phase 1's head was trained on the network users get. The conditions name
    the file Keras handed over, and its content."""
    import hashlib

    from standin_weights import OFFICIAL_NAMES
    params = trained(f"{name}-imagenet")
    conditions = json.loads(open("metrics/conditions/train.json").read())
    fetched = OFFICIAL_NAMES[name].format(rows=96)
    assert (conditions["weights"], conditions["weights_file"]) == ("imagenet", fetched)
    assert conditions["weights_sha256"] == hashlib.sha256((standin_dir / fetched).read_bytes()).hexdigest()
    assert (params["weights"], params["image_size"], params["train"]["fine_tune"]["epochs"]) == ("imagenet", 96, 0)
    metrics = json.loads(open("metrics/train.json").read())
    assert "fine_tune_epochs" not in metrics and metrics["frozen_epochs"] == 1
    model, outputs = shipped(f"{name}-imagenet")
    assert [layer.name for layer in model.layers][:2] == ["image", "resize"]
    pooled = outputs["pool"]
    cached = load_npz("data/features/val.npz")["x"]
    assert np.isfinite(cached).all() and np.abs(cached).max() > 0
    # The same network; computed in bfloat16 where `features.precision: auto` chose it for this backbone on this
    # CPU (conditions say so), within bfloat16's rounding (8 bits of mantissa), else to float32's.
    extracted_in = json.loads(open("metrics/conditions/features.json").read())["compute_dtype"]
    assert extracted_in == hardware.compute_policy(params["features"]["precision"], machine_plan,
                                                   REGISTRY[name].cpu_bfloat16)
    tolerance = 3e-2 if extracted_in == "mixed_bfloat16" else 1e-3
    assert np.abs(pooled - cached).max() <= tolerance * np.abs(cached).max()


@pytest.mark.slow
def test_efficientnet_gets_its_imagenet_architecture_from_a_weights_file(imagenet_standins):
    """Keras adds an input rescaling to EfficientNet only for weights="imagenet"; a local copy of
    the ImageNet weights (`weights: <file>`) must get that same network."""
    from core import models
    rescalings = lambda m: sum(isinstance(layer, keras.layers.Rescaling) for layer in m.layers)  # noqa: E731
    downloaded = models.build_backbone("efficientnetb0", 96, "imagenet")
    local = models.build_backbone("efficientnetb0", 96, str(imagenet_standins / "efficientnetb0_notop.h5"))
    random = models.build_backbone("efficientnetb0", 96, "none")
    assert rescalings(downloaded) == rescalings(local) == rescalings(random) + 1
    for a, b in zip(downloaded.weights, local.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.slow
def test_fine_tune_straight_away_with_a_fresh_head_and_the_whole_backbone_in_the_loop(workdir):
    """Phase 2 alone, the exact way (views 0: every epoch runs the whole backbone on fresh augmentations)."""
    workdir["model"] = "mobilenetv2"
    workdir["train"]["frozen"]["epochs"] = 0
    workdir["train"]["fine_tune"]["views"] = 0
    features.main(workdir)
    train.main(workdir)
    metrics = json.loads(open("metrics/train.json").read())
    assert "frozen_epochs" not in metrics and metrics["fine_tune_epochs"] == 1 and metrics["unfrozen_layers"] > 0
    assert "fine_tune_cache_time_s" not in metrics
    assert len(open("plots/train/plots/metrics/eval/accuracy.tsv").read().strip().splitlines()) == 2


@pytest.mark.slow
def test_cached_phase_2_in_bfloat16_trains_the_top_through_the_cache_and_ships_float32(workdir):
    """train.fine_tune.views: the frozen bottom once per view, the top trained on the cache (its layers are the
    model's, so the shipped model has the trained top and the untouched bottom); precision mixed_bfloat16 for
    the features and phase 2: the conditions say so, and what ships computes in float32."""
    workdir["model"] = "mobilenetv2"
    workdir["train"]["frozen"]["epochs"] = 0  # phase 2 ships (nothing to fall back to)
    workdir["train"]["fine_tune"].update(views=2, precision="mixed_bfloat16", learning_rate=1e-2)
    workdir["features"]["precision"] = "mixed_bfloat16"
    features.main(workdir)
    train.main(workdir)
    metrics = json.loads(open("metrics/train.json").read())
    assert metrics["fine_tune_epochs"] == 1 and 0 < metrics["fine_tune_cache_time_s"] < metrics["fine_tune_time_s"]
    assert not list(Path("data").glob(".views-*"))  # the cache's files went with phase 2
    conditions = json.loads(open("metrics/conditions/train.json").read())
    assert conditions["fine_tune_compute_dtype"] == "mixed_bfloat16" and conditions["compute_dtype"] == "float32"
    assert json.loads(open("metrics/conditions/features.json").read())["compute_dtype"] == "mixed_bfloat16"
    shipped = keras.models.load_model("models/model.keras").get_layer("backbone")
    start = keras.models.load_model("data/features/trunk.keras").get_layer("backbone")
    assert {w.dtype for w in shipped.weights} == {"float32"}
    assert {layer.dtype_policy.name for layer in shipped.layers if layer.weights} == {"float32"}
    opened = next(i for i, layer in enumerate(start.layers) if layer.name == "block_13_expand")  # params' 0.25
    moved = [not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(shipped.weights, start.weights)]
    layer_of = {id(w): i for i, layer in enumerate(shipped.layers) for w in layer.weights}
    assert any(m for w, m in zip(shipped.weights, moved) if layer_of[id(w)] >= opened)
    assert not any(m for w, m in zip(shipped.weights, moved) if layer_of[id(w)] < opened)


@pytest.mark.slow
def test_phase_2_that_never_beats_phase_1_falls_back_to_it(workdir):
    """Fine-tuning at a rate that wrecks the backbone: its best val loss stays above the head's, so the
    shipped model is phase 1's (the backbone as the features stage left it) and train.json says so."""
    workdir["model"] = "mobilenetv2"
    workdir["train"]["fine_tune"]["learning_rate"] = 1.0
    features.main(workdir)
    train.main(workdir)
    metrics = json.loads(open("metrics/train.json").read())
    assert metrics["fine_tune_epochs"] == 1 and metrics["fine_tune_kept"] is False
    shipped = keras.models.load_model("models/model.keras")
    trunk = keras.models.load_model("data/features/trunk.keras")
    backbone = {w.path.split("/", 1)[-1]: w.numpy() for w in shipped.get_layer("backbone").weights}
    frozen = {w.path.split("/", 1)[-1]: w.numpy() for w in trunk.get_layer("backbone").weights}
    assert backbone.keys() == frozen.keys() and all(np.array_equal(backbone[k], frozen[k]) for k in frozen)
    # The val figures are the shipped model's: its val loss is phase 1's (on cached features then, on images
    # now), below phase 2's.
    phase1, phase2 = [float(line.split("\t")[-1]) for line in
                      open("plots/train/plots/metrics/eval/loss.tsv").read().strip().splitlines()[1:]]
    assert phase2 > phase1 and metrics["val_loss"] == pytest.approx(phase1, rel=1e-3)


@pytest.mark.slow
def test_early_stopping_watching_from_the_end_watches_the_last_epoch(workdir):
    """`watch_from_fraction: 1.0` (allowed) watches the last epoch, whose weights ship, and says so; it used to
    watch nothing and report epoch 1 as best."""
    workdir["model"] = "basecnn"
    workdir["train"]["scratch"].update(epochs=2, watch_from_fraction=1.0)
    features.main(workdir)
    train.main(workdir)
    metrics = json.loads(open("metrics/train.json").read())
    assert metrics["scratch_epochs"] == metrics["scratch_best_epoch"] == 2


@pytest.mark.slow
def test_a_labelled_budget_trains_as_many_steps_per_epoch_as_the_full_set(workdir, monkeypatch):
    """download_cifar10 kept a quarter of each class (info.json's train_fraction): each epoch passes over those
    images 4 times (train.max_repeats 100), 10 steps of 16 from 40 images, what 160 images would give, and
    train.json records the budget."""
    import core.training
    write_json("data/cifar10/info.json", {"classes": [f"c{i}" for i in range(10)], "image_shape": [32, 32, 3],
                                          "train_fraction": 0.25})
    steps, real_fit = [], core.training.fit
    monkeypatch.setattr(core.training, "fit", lambda model, train, *a, **k: steps.append(int(train.cardinality()))
                        or real_fit(model, train, *a, **k))
    workdir["model"] = "basecnn"
    features.main(workdir)
    train.main(workdir)
    metrics = json.loads(open("metrics/train.json").read())
    assert steps == [10] and metrics["train_repeats"] == 4 and metrics["train_images_per_class"] == 4


@pytest.mark.parametrize("model, zeros, match", [
    ("mobilenetv2", ("frozen", "fine_tune"), "`train.frozen.epochs` and `train.fine_tune.epochs` are both 0"),
    ("basecnn", ("scratch",), "`train.scratch.epochs` is 0, but basecnn trains from scratch"),
])
def test_epochs_that_train_nothing_are_refused(workdir, model, zeros, match):
    workdir["model"] = model
    for phase in zeros:
        workdir["train"][phase]["epochs"] = 0
    with pytest.raises(StageError, match=match):
        train.main(workdir)


@pytest.mark.parametrize("key, value", [("optimizer", "adam"), ("precision", "bfloat16"), ("precision", True)])
def test_unknown_optimizer_or_precision_is_refused_before_any_work(workdir, key, value):
    workdir["model"] = "basecnn"
    workdir["train"]["scratch"][key] = value
    with pytest.raises(StageError, match=rf"`train.scratch.{key}` is {value!r}; allowed: "):
        train.main(workdir)
    assert not os.path.exists("metrics") and not os.path.exists("models")


@pytest.mark.slow
def test_search_runs_on_cached_features_and_sets_the_head(trained, shipped):
    """The search (tune: 3 trials of units 8 or 16), here on MobileNetV2's shared run on the default route (phase
    2 off: the head is set before it, and phase 2 keeps it)."""
    tune = trained("mobilenetv2-imagenet")["tune"]
    assert (tune["enabled"], tune["trials"], tune["epochs"], tune["units"]) == (True, 3, 1, [8, 16])
    metrics = json.loads(open("metrics/train.json").read())
    assert metrics["search_trials"] == 3 and metrics["search_time_s"] > 0
    best = metrics["search_best"]
    assert best["units"] in (8, 16) and 0.0 <= best["dropout"] <= 0.5
    head = shipped("mobilenetv2-imagenet")[0].get_layer("head")
    assert [layer.units for layer in head.layers if isinstance(layer, keras.layers.Dense)] == [best["units"], 10]


@pytest.mark.slow
def test_train_refuses_features_of_another_model(workdir):
    workdir["model"] = "mobilenetv2"
    features.main(workdir)
    workdir["model"] = "densenet121"
    with pytest.raises(StageError, match="holds features of mobilenetv2, not densenet121; run the features stage"):
        train.main(workdir)


@pytest.mark.parametrize("key, value, match", [
    ("train.frozen.epochs", -1, r"`train.frozen.epochs` is -1; must be in \[0, 10000\]"),
    ("train.head.dropout", 1.5, r"`train.head.dropout` is 1.5; must be in \[0.0, 0.9\]"),
    ("train.batch_size", "big", "`train.batch_size` must be an integer"),
])
def test_bad_training_params_name_the_key(workdir, key, value, match):
    workdir["model"] = "mobilenetv2"  # reads them all (basecnn reads no head or frozen-phase param)
    section, *rest = key.split(".")
    target = workdir[section]
    for part in rest[:-1]:
        target = target[part]
    target[rest[-1]] = value
    with pytest.raises(StageError, match=match):
        train.main(workdir)


@pytest.mark.slow
def test_same_params_and_seed_give_identical_metrics(shared_run, workdir):
    """Reproducibility on CPU: two runs of features + train give the same figures, timings aside. The first is
    shared_run's (in another directory, trained before whatever other tests ran in between)."""
    first, params = shared_run("mobilenetv2")
    workdir["model"] = "mobilenetv2"
    assert same_run(workdir, params)
    features.main(workdir)
    train.main(workdir)
    runs = []
    for directory in (first, Path.cwd()):
        metrics = json.loads((directory / "metrics/train.json").read_text())
        runs.append({k: v for k, v in metrics.items() if not k.endswith("_time_s")})
        runs[-1]["features"] = load_npz(directory / "data/features/train.npz")["x"]
    assert np.array_equal(runs[0].pop("features"), runs[1].pop("features"))
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_training_killed_mid_epoch_leaves_no_model_and_reruns(workdir, tmp_path):
    """SIGKILL during fit: no model file appears (it is written whole, at the end); a rerun finishes."""
    workdir["train"]["scratch"]["epochs"] = 50  # long enough to be killed mid-fit
    features.main(workdir)  # the trunk to train
    resolve_params.main(workdir)  # what `python -m stages.train` reads
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("Epoch 2/"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not Path("models/model.keras").exists() and not Path("metrics/train.json").exists()
    workdir["train"]["scratch"]["epochs"] = 1
    train.main(workdir)
    assert keras.models.load_model("models/model.keras").count_params() > 0
    assert [p.name for p in Path("models").iterdir()] == ["model.keras"]  # nothing left from the killed run


@pytest.mark.slow
def test_a_failed_run_keeps_the_previous_model_metrics_and_curves_together(shared_run, workdir, monkeypatch):
    """DVCLive writes into a temporary directory: a run that fails after training (here: saving the
    model) leaves model, metrics and curves of the previous run, one consistent set. The previous run is
    shared_run's, copied here."""
    previous, params = shared_run("basecnn")
    for key, value in ROUTES["basecnn"][1].items():
        set_key(workdir, key, value)
    assert same_run(workdir, params)  # params.yaml's model: basecnn, with the route's changes
    for part in ("data", "models", "metrics", "plots"):
        shutil.copytree(previous / part, part, dirs_exist_ok=True)
    files = ["models/model.keras", "metrics/train.json", *map(str, Path("plots/train").rglob("*.tsv"))]
    before = {f: Path(f).read_bytes() for f in files}
    workdir["train"]["scratch"]["epochs"] = 2

    def fails(model, **options):
        raise RuntimeError("disk gone")
    monkeypatch.setattr(train.models, "for_deployment", fails)
    with pytest.raises(RuntimeError, match="disk gone"):
        train.main(workdir)
    assert {f: Path(f).read_bytes() for f in files} == before
    assert sorted(map(str, Path("plots/train").rglob("*.tsv"))) == sorted(files[2:])
    assert [p.name for p in Path("plots").iterdir()] == ["train"]  # no temporary directory left


def test_scratch_schedule_warms_up_then_reaches_zero_at_the_last_step():
    """The rate rises linearly to the peak over warmup_fraction of the steps and ends at 0 on the last one.
    (Before, CosineDecay's decay steps counted from after the warm-up, so training stopped a tenth of the
    peak above 0.)"""
    from core.training import warmup_cosine
    peak, steps = 0.003, 1000
    schedule = warmup_cosine(peak, steps, 0.2)
    rate = [float(schedule(s)) for s in (0, 100, 200, 600, steps - 1, steps)]
    assert rate[0] == 0 and rate[1] == pytest.approx(peak / 2) and rate[2] == pytest.approx(peak)
    assert rate[3] == pytest.approx(peak / 2, rel=1e-3)  # halfway down the cosine
    assert rate[4] < peak * 1e-4 and rate[5] == pytest.approx(0, abs=1e-12)
    assert float(warmup_cosine(peak, steps, 0.0)(0)) == pytest.approx(peak)  # no warm-up: the peak at once
    # A run too short for a whole warm-up step still warms up for one: with a warm-up it never starts at the peak.
    short = warmup_cosine(peak, 3, 0.2)
    assert [float(short(s)) for s in (0, 1)] == [0, pytest.approx(peak)]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_scratch_weight_decay_shrinks_kernels_but_not_batchnorm_or_biases(optimizer):
    """One step with a large weight decay against the same step without: kernels end smaller by the decay,
    BatchNorm's scale and shift and the biases end where the decay-free step puts them."""
    from core.training import compile_from_scratch

    def one_step(weight_decay):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization(),
                                  keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
        scratch = {"optimizer": optimizer, "learning_rate": 0.1, "weight_decay": weight_decay, "epochs": 1,
                   "warmup_fraction": 0.0, "label_smoothing": 0.0}
        compile_from_scratch(model, scratch, 2)
        rng = np.random.default_rng(0)
        model.train_on_batch(rng.normal(size=(8, 4, 4, 3)).astype("float32"), rng.integers(0, 3, 8))
        return [(w.name, w.numpy()) for w in model.trainable_weights]

    plain, decayed = one_step(0.0), one_step(0.5)
    assert sorted({name for name, _ in plain}) == ["beta", "bias", "gamma", "kernel"]
    for (name, w), (_, d) in zip(plain, decayed):
        if name == "kernel":
            assert np.abs(d).sum() < np.abs(w).sum()
        else:
            np.testing.assert_array_equal(d, w)


def test_label_smoothing_loss_is_keras_categorical_on_one_hot_labels():
    from core.training import SmoothedSparseCrossentropy
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), 6).astype("float32")
    y = np.array([0, 3, 9, 1, 1, 5])
    want = keras.losses.categorical_crossentropy(np.eye(10)[y], probs, label_smoothing=0.1)
    np.testing.assert_allclose(SmoothedSparseCrossentropy(10, 0.1)(y[:, None], probs), np.mean(want), rtol=1e-6)
    plain = keras.losses.sparse_categorical_crossentropy(y, probs)
    np.testing.assert_allclose(SmoothedSparseCrossentropy(10, 0.0)(y, probs), np.mean(plain), rtol=1e-5)
    # Keras re-creates it from its config, as clone_model (models.for_deployment) and load_model do.
    again = keras.losses.deserialize(keras.losses.serialize(SmoothedSparseCrossentropy(10, 0.1)))
    assert (again.n_classes, again.label_smoothing) == (10, 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("route, flip_tta", [("basecnn", False), ("basecnn-bfloat16", True),
                                             ("densenet121-imagenet", False), ("densenet121-flip", True)])
def test_flip_tta_through_train_ships_both_views_or_one(trained, shipped, route, flip_tta):
    """`flip_tta` decides what ships, from scratch and two-phase alike: with it, the model averages each image
    and its mirror, so a mirrored image gets the same probabilities; without it, one view, and no single-view
    figure beside it. The conditions say which, for both recipes."""
    assert trained(route)["flip_tta"] is flip_tta
    metrics = json.loads(open("metrics/train.json").read())
    assert json.loads(open("metrics/conditions/train.json").read())["flip_tta"] is flip_tta
    assert ("val_accuracy_single_view" in metrics) is flip_tta
    model, outputs = shipped(route)
    x = load_npz("data/cifar10/val.npz")["x"]
    same = np.allclose(outputs["probs"], model.predict(x[:, :, ::-1], verbose=0), atol=1e-5)
    assert same is flip_tta


@pytest.mark.slow
def test_a_fine_tuned_backbone_with_flip_tta_ships_the_mean_of_both_views(trained, shipped):
    """A backbone through both phases with `flip_tta`: the shipped prediction on an image is the mean of the
    single view's on the image and on its mirror, the single view being the trunk with the shipped backbone's
    weights and the shipped head; `val_accuracy_single_view` is that single view's."""
    params = trained("densenet121-flip")
    assert params["flip_tta"] and json.loads(open("metrics/train.json").read())["fine_tune_epochs"] == 1
    model, outputs = shipped("densenet121-flip")
    trunk = keras.models.load_model("data/features/trunk.keras")
    trunk.get_layer("backbone").set_weights(model.get_layer("backbone").get_weights())  # phase 2 changed its top
    single = keras.Model(trunk.input, model.get_layer("head")(trunk.output))
    val = load_npz("data/cifar10/val.npz")
    plain, mirrored = (single.predict(x, verbose=0) for x in (val["x"], np.ascontiguousarray(val["x"][:, :, ::-1])))
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the views differ, so their mean is a real test
    np.testing.assert_allclose(outputs["probs"], (plain + mirrored) / 2, atol=1e-5)
    metrics = json.loads(open("metrics/train.json").read())
    assert metrics["val_accuracy_single_view"] == pytest.approx(np.mean(plain.argmax(1) == val["y"]), abs=1e-4)
