"""Stages evaluate and profile: figures that mean what their names say."""
import csv
import json
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, run_cmd
from core import hardware, metrics, models, profiling
from core.data import CIFAR10_CLASSES
from core.io import load_npz, save_npz, write_json
from core.params import load
from stages import corrupt_cifar10, evaluate, profile


# Metric functions on hand-checked inputs.

def test_percentiles_come_from_the_recorded_samples():
    samples_s = np.arange(1, 101) / 1000.0  # 1..100 ms, shuffled order must not matter
    got = metrics.percentiles_ms(np.random.default_rng(0).permutation(samples_s))
    assert got == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01})


def test_confusion_and_per_class_figures():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    assert metrics.confusion(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    precision, recall, f1 = metrics.per_class(y_true, y_pred, 3)
    assert precision.tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert recall.tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert f1.tolist() == pytest.approx([0.5, 0.8, 2 / 3])


def test_expected_calibration_error():
    y = np.array([0, 0, 0, 0])
    confident_right = np.array([[0.95, 0.05]] * 4)
    assert metrics.expected_calibration_error(y, confident_right) == pytest.approx(0.05)
    half_wrong = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])  # 90 % sure, 50 % right
    assert metrics.expected_calibration_error(y, half_wrong) == pytest.approx(0.4)


# Stages on a tiny saved model.

def saved_figures(monkeypatch):
    """{file name: [(title, cell texts, images shown) of each axes]} of every figure saved from now on: what
    a plot shows, read from the figure itself (a PNG's pixels would tie the test to fonts and renderer)."""
    import matplotlib.figure
    figures, savefig = {}, matplotlib.figure.Figure.savefig

    def recording(fig, path, *args, **kwargs):
        figures[Path(path).name] = [(ax.get_title(), [t.get_text() for t in ax.texts],
                                     [np.asarray(im.get_array()) for im in ax.get_images()]) for ax in fig.axes]
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    return figures


def stage_params():
    """The project's params.yaml as the `params` fixture gives it, set for the tiny model and data below."""
    import copy
    params = copy.deepcopy(load(ROOT / "params.yaml"))
    params["train"]["scratch"]["precision"] = "float32"
    # Each corruption its own 10 images (corruptions.distinct, the default): 15 per class in the test split.
    params["corruptions"].update(per_class=1, names=["gaussian_noise", "fog", "pixelate"])
    params.update(model="basecnn", image_size=32)
    params["profile"].update(warmup_runs=2, latency_runs=30, batch_size=4, throughput_runs=3, tflite=["fp32"],
                             tflite_eval_images=12)
    return params


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The stages' inputs, made once: CIFAR-10 test and CINIC-10 sample arrays, their CIFAR-10-C, and a tiny
    basecnn saved as the train stage saves it. Tests work on copies (workdir) or only read (evaluated)."""
    directory = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(directory)
        rng = np.random.default_rng(0)
        for split, n in (("val", 40), ("test", 150)):
            save_npz(f"data/cifar10/{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                     y=(np.arange(n) % 10).astype(np.uint8))
        write_json("data/cifar10/info.json", {"classes": CIFAR10_CLASSES, "image_shape": [32, 32, 3]})
        origin = np.array(["imagenet", "cifar10"] * 15)
        save_npz("data/cinic10/sample.npz", x=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
                 y=(np.arange(30) % 10).astype(np.uint8), origin=origin)
        write_json("data/cinic10/info.json", {"source": "test", "classes": CIFAR10_CLASSES})
        corrupt_cifar10.main(stage_params())
        keras.utils.set_random_seed(0)
        model, _ = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 0, 0.0)
        models.for_deployment(model).save("model.keras")  # as the train stage saves it
    return directory


@pytest.fixture
def workdir(made, tmp_path, monkeypatch):
    """A copy of `made` of this test's own, as the working directory; returns the stages' params."""
    import shutil
    shutil.copytree(made, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return stage_params()


@pytest.fixture(scope="module")
def evaluated_once(made, tmp_path_factory):
    """The evaluate stage run once on a copy of `made`: (its directory, the figures it saved)."""
    import shutil
    directory = tmp_path_factory.mktemp("evaluated")
    shutil.copytree(made, directory, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(directory)
        figures = saved_figures(monkeypatch)
        evaluate.main(stage_params(), model_path="model.keras")
    return directory, figures


@pytest.fixture
def evaluated(evaluated_once, monkeypatch):
    """The figures the evaluate stage saved, its outputs in the working directory (to read, not to change)."""
    directory, figures = evaluated_once
    monkeypatch.chdir(directory)
    return figures


@pytest.fixture(scope="module")
def evaluated_model(evaluated_once):
    return keras.models.load_model(evaluated_once[0] / "model.keras")


def test_evaluate_figures_equal_model_evaluate(evaluated, evaluated_model):
    figures, model = evaluated, evaluated_model
    m = json.loads(open("metrics/evaluate.json").read())
    for set_name, path in (("test", "data/cifar10/test.npz"), ("cinic10", "data/cinic10/sample.npz")):
        data = load_npz(path)
        loss, accuracy = model.evaluate(data["x"], data["y"], verbose=0)  # raw images: the model preprocesses
        assert m[set_name]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert m[set_name]["loss"] == pytest.approx(loss, rel=1e-4)
        with open(f"plots/evaluate/confusion/{set_name}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(data["y"]) and set(rows[0]) == {"actual", "predicted"}
        assert rows[0]["actual"] == "airplane"
        probs = model.predict(data["x"], verbose=0)
        assert m[set_name]["ece"] == pytest.approx(metrics.expected_calibration_error(data["y"], probs), abs=1e-6)
        assert m[set_name]["macro_f1"] == pytest.approx(metrics.per_class(data["y"], probs.argmax(1), 10)[2].mean())
    assert set(m["cinic10"]["accuracy_by_origin"]) == {"cifar10", "imagenet"}
    assert m["accuracy_drop"] == pytest.approx(m["test"]["accuracy"] - m["cinic10"]["accuracy"])
    with open("plots/evaluate/per_class/test.csv") as f:
        assert [r["class"] for r in csv.DictReader(f)] == CIFAR10_CLASSES
    # The grid: the first 24 misclassified CINIC-10 images, each titled with its truth and the model's guess.
    cinic = load_npz("data/cinic10/sample.npz")
    probs = model.predict(cinic["x"], verbose=0)
    wrong = np.flatnonzero(probs.argmax(1) != cinic["y"])[:24]
    assert len(wrong) > 0
    tiles = [(title, images[0]) for title, _, images in figures["cinic10_misclassified.png"] if images]
    assert [title.split("\n")[0] for title, _ in tiles] == [
        f"{CIFAR10_CLASSES[cinic['y'][i]]} → {CIFAR10_CLASSES[probs[i].argmax()]}" for i in wrong]
    assert all(np.array_equal(image, cinic["x"][i]) for (_, image), i in zip(tiles, wrong))
    from PIL import Image
    assert Image.open("plots/evaluate/cinic10_misclassified.png").format == "PNG"


def test_evaluate_keeps_every_images_prediction(evaluated, evaluated_model):
    """data/predictions/<set>.npz: per image the true class, the predicted class (uint8) and the probabilities
    (float16), the predictions the metrics count; for CIFAR-10-C with (corruption, severity) axes, the names
    in order and the images' places in the test split. Each file names its images by digest, so the
    comparison pairs two models' predictions only on the same images."""
    model = evaluated_model
    m = json.loads(open("metrics/evaluate.json").read())
    digests = set()
    for set_name, path in (("val", "data/cifar10/val.npz"), ("test", "data/cifar10/test.npz"),
                           ("cinic10", "data/cinic10/sample.npz")):
        data, kept = load_npz(path), load_npz(f"data/predictions/{set_name}.npz")
        assert set(kept) == {"y", "pred", "prob", "images_sha256"}
        assert kept["y"].dtype == kept["pred"].dtype == np.uint8 and kept["prob"].dtype == np.float16
        np.testing.assert_array_equal(kept["y"], data["y"])
        probs = model.predict(data["x"], verbose=0)
        np.testing.assert_array_equal(kept["pred"], probs.argmax(1))
        np.testing.assert_allclose(kept["prob"], probs, atol=1e-3)
        assert m[set_name]["accuracy"] == pytest.approx(np.mean(kept["pred"] == kept["y"]))
        digests.add(str(kept["images_sha256"]))
    assert len(digests) == 3
    c = load_npz("data/predictions/cifar10c.npz")
    assert list(c["corruptions"]) == ["gaussian_noise", "fog", "pixelate"]
    assert c["y"].shape == c["pred"].shape == (3, 5, 10) and c["prob"].shape == (3, 5, 10, 10)
    fog = load_npz("data/cifar10c/fog.npz")
    assert c["index"].shape == (3, 10) and len(set(c["index"].ravel().tolist())) == 30  # each corruption its own
    np.testing.assert_array_equal(c["index"][1], fog["index"])
    np.testing.assert_array_equal(c["y"][1, 4], fog["y"])
    np.testing.assert_array_equal(c["pred"][1, 4], model.predict(fog["x"][4], verbose=0).argmax(1))
    mean = json.loads(open("metrics/evaluate.json").read())["corruptions"]["mean_accuracy"]
    assert mean == pytest.approx(np.mean(c["pred"] == c["y"]))
    # val is scored for the comparison, not drawn: it is the selection set.
    assert not Path("plots/evaluate/confusion/val.csv").exists()


def test_evaluate_without_shift_set_says_so(workdir):
    save_npz("data/cinic10/sample.npz", x=np.zeros((0, 32, 32, 3), np.uint8), y=np.zeros(0, np.uint8),
             origin=np.zeros(0, "<U8"))
    write_json("data/cinic10/info.json", {"source": "none", "classes": CIFAR10_CLASSES})
    evaluate.main(workdir, model_path="model.keras")
    m = json.loads(open("metrics/evaluate.json").read())
    assert "cinic10" not in m and "accuracy_drop" not in m  # no figure, so no `dvc exp show` column
    conditions = json.loads(open("metrics/conditions/evaluate.json").read())
    assert conditions["cinic10"] == {"available": False, "reason": "cinic10.urls is none: no shift set was sampled"}
    assert conditions["test"] == {"available": True, "images": len(load_npz("data/cifar10/test.npz")["y"])}
    assert set(conditions["wall_s"]) == {"sets", "cifar10c", "write", "process"}
    assert sorted(p.name for p in Path("data/predictions").iterdir()) == ["cifar10c.npz", "test.npz", "val.npz"]


def test_evaluate_reports_every_corruption_and_severity(evaluated, evaluated_model):
    figures, model = evaluated, evaluated_model
    c = json.loads(open("metrics/evaluate.json").read())["corruptions"]
    assert json.loads(open("metrics/conditions/evaluate.json").read())["corruptions"] == {
        "available": True, "images": 30, "images_per_corruption": 10, "corruptions": 3}
    assert {"available", "images", "corruptions", "table"}.isdisjoint(c)  # the metrics file holds figures only
    with open("plots/evaluate/corruption_severity.csv") as f:
        rows = list(csv.DictReader(f))
    table = {n: {r["severity"]: float(r[n]) for r in rows[1:]} for n in ("gaussian_noise", "fog", "pixelate")}
    assert all(float(rows[0][n]) == pytest.approx(c["clean_accuracy"], abs=1e-4) for n in table)  # 0: clean
    test = load_npz("data/cifar10/test.npz")
    fog = load_npz("data/cifar10c/fog.npz")
    # The model takes raw uint8 images (it preprocesses itself); severity s is fog["x"][s - 1].
    for severity in range(1, 6):
        predicted = model.predict(fog["x"][severity - 1], verbose=0).argmax(axis=1)
        assert table["fog"][str(severity)] == pytest.approx(np.mean(predicted == fog["y"]), abs=1e-4)
    # Clean: every corrupted image once, uncorrupted (each corruption has its own images).
    used = np.concatenate([load_npz(f"data/cifar10c/{n}.npz")["index"] for n in table])
    clean = model.predict(test["x"][used], verbose=0).argmax(axis=1)
    assert c["clean_accuracy"] == pytest.approx(np.mean(clean == test["y"][used]))
    grid = np.array([list(v.values()) for v in table.values()])
    assert c["mean_accuracy"] == pytest.approx(grid.mean(), abs=1e-4)
    assert c["accuracy_drop"] == pytest.approx(c["clean_accuracy"] - c["mean_accuracy"])
    assert c["by_severity"]["5"] == pytest.approx(grid[:, 4].mean(), abs=1e-4)
    assert c["by_corruption"]["pixelate"] == pytest.approx(grid[2].mean(), abs=1e-4)
    assert set(c["by_family"]) == {"noise", "weather", "digital"}
    with open("plots/evaluate/corruption_severity.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["severity"] for r in rows] == ["0", "1", "2", "3", "4", "5"] and rows[1]["blur"] == ""
    assert float(rows[5]["all"]) == pytest.approx(c["by_severity"]["5"], abs=1e-4)
    # The heatmap: a clean column, then severities 1 to 5, each cell the accuracy in % as the table has it.
    (_, cells, (shown,)), _colorbar = figures["corruption_heatmap.png"]
    want = 100 * np.array([[c["clean_accuracy"], *table[n].values()] for n in ("gaussian_noise", "fog", "pixelate")])
    assert shown == pytest.approx(want, abs=0.01) and cells == [f"{v:.1f}" for v in shown.ravel()]
    # The examples: every tile is titled with what the model predicts for the very image it shows.
    tiles = [(title, images[0]) for title, _, images in figures["corruption_examples.png"] if images]
    assert len(tiles) == 3 * 3 * 4  # per corruption 3 of its images, each clean and at 3 severities
    predicted = model.predict(np.stack([image for _, image in tiles]), verbose=0).argmax(1)
    assert [title for title, _ in tiles] == [CIFAR10_CLASSES[p] for p in predicted]
    from PIL import Image
    for png in ("corruption_heatmap.png", "corruption_examples.png"):
        assert Image.open(f"plots/evaluate/{png}").format == "PNG"


def test_evaluate_without_corruptions_says_so(workdir):
    workdir["corruptions"]["per_class"] = 0
    corrupt_cifar10.main(workdir)
    evaluate.main(workdir, model_path="model.keras")
    assert "corruptions" not in json.loads(open("metrics/evaluate.json").read())
    c = json.loads(open("metrics/conditions/evaluate.json").read())["corruptions"]
    assert c == {"available": False, "reason": "corruptions.per_class is 0: no corrupted images were made"}
    assert not any(p.name.startswith("corruption_") for p in Path("plots/evaluate").iterdir())
    assert not Path("data/predictions/cifar10c.npz").exists()


def test_latency_percentiles_are_of_the_timed_calls_only(monkeypatch):
    """On a fake clock (no real timing, so nothing here depends on the machine's load): the warm-up calls are
    not timed, each timed call runs until its result is materialised, and the percentiles (ms) are those of
    exactly the `runs` timed calls, all on one fixed batch-1 input of the model's shape and dtype."""
    clock, inputs = [0.0], []

    class Result:  # costs its time when materialised, as an eager tensor's values can
        def __init__(self, seconds):
            self.seconds = seconds

        def __array__(self, dtype=None, copy=None):
            clock[0] += self.seconds
            return np.zeros(1)

    def compiled_call(model):
        def call(x):
            inputs.append(x)
            k = len(inputs) - 3  # the first 3 are the warm-up: 1000 s each; timed call k takes k ms
            return Result(1000.0 if k <= 0 else k / 1000)
        return call

    monkeypatch.setattr(profiling, "compiled_call", compiled_call)
    monkeypatch.setattr(profiling, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    image = keras.Input((5, 4, 3), dtype="uint8")
    model = keras.Model(image, keras.layers.Flatten()(image))
    reported, samples = profiling.latency(model, runs=20, warmup=3)
    assert samples == pytest.approx([k / 1000 for k in range(1, 21)])
    assert reported == pytest.approx({"latency_p50_ms": 10.5, "latency_p90_ms": 18.1, "latency_p99_ms": 19.81})
    assert len(inputs) == 23 and all(x is inputs[0] for x in inputs)
    assert inputs[0].dtype == tf.uint8 and tuple(inputs[0].shape) == (1, 5, 4, 3)


def test_size_report_counts_the_models_weights_and_measures_the_file_it_is_given(workdir):
    """Parameter counts and weight bytes come from the model (trainable ones apart), the size from the file:
    a file of a known size stands in for the model's, so the two cannot be confused."""
    model = keras.models.load_model("model.keras")
    model.get_layer("backbone").trainable = False  # as in phase 1: only the head trains
    head = sum(int(np.prod(w.shape)) for w in model.get_layer("head").weights)
    Path("known.bin").write_bytes(bytes(1_234_567))
    assert profiling.size_report(model, "known.bin") == {
        "params_total": model.count_params(), "params_trainable": head,
        "weights_mb": pytest.approx(model.count_params() * 4 / 1e6),  # float32
        "size_mb": pytest.approx(1.234567)}
    assert 0 < head < model.count_params()


@pytest.mark.slow  # a TFLite conversion (~3 s)
def test_profile_stage_writes_every_figure(workdir, monkeypatch):
    """Each figure is what its name says, from the measurement it comes from: timings from a clock that
    advances a known step at each reading (so they are exact, not machine speed), sizes from the files."""
    step_s, clock = 0.0025, [0.0]

    def perf_counter():
        clock[0] += step_s
        return clock[0]

    monkeypatch.setattr(profiling, "time", types.SimpleNamespace(perf_counter=perf_counter))
    profile.main(workdir, model_path="model.keras", export_dir="tflite")
    m = json.loads(open("metrics/profile.json").read())
    # Every timed call spans one step: 2.5 ms at each percentile, batch 4 / 2.5 ms = 1600 images/s.
    for key in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "tflite_fp32_latency_p50_ms"):
        assert m[key] == pytest.approx(1000 * step_s), key
    assert m["throughput_ips"] == pytest.approx(workdir["profile"]["batch_size"] / step_s)
    assert m["cpu_utilisation_pct"] >= 0
    model = keras.models.load_model("model.keras")
    assert m["params_total"] == model.count_params()
    assert m["params_trainable"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert m["weights_mb"] == pytest.approx(sum(w.numpy().nbytes for w in model.weights) / 1e6, abs=1e-4)
    assert m["size_mb"] == pytest.approx(Path("model.keras").stat().st_size / 1e6, abs=1e-4)
    assert m["tflite_fp32_size_mb"] == pytest.approx(Path("tflite/model_fp32.tflite").stat().st_size / 1e6, abs=1e-4)
    assert m["rss_after_load_mb"] - m["rss_after_import_mb"] == pytest.approx(m["rss_growth_on_load_mb"], abs=2e-4)
    # A high-water mark of the process that loaded the model. Linux updates it lazily: read at once after a
    # reading of RSS it can be a fraction of a MB below it (0.07 MB seen), hence the 1 MB of slack.
    assert m["peak_rss_mb"] >= m["rss_after_load_mb"] - 1 and m["rss_after_import_mb"] > 0
    # fp32 TFLite computes the same function: same predictions as Keras on the same images.
    assert m["tflite_fp32_accuracy"] == pytest.approx(m["keras_accuracy_on_eval_images"])
    conditions = json.loads(open("metrics/conditions/profile.json").read())
    assert conditions["latency_runs"] == 30 and conditions["usable_cores"] >= 1 and conditions["image_size"] == 32
    # Where the stage's time went (docs/performance.md's per-stage table): each measurement's wall time.
    steps = conditions["wall_s"]
    assert set(steps) == {"latency", "throughput", "flops", "keras_eval_images", "tflite_fp32", "process"}, steps
    assert 0 <= max(v for k, v in steps.items() if k != "process") <= steps["process"]
    assert not any(isinstance(v, (dict, str)) for v in m.values())  # figures only: conditions are beside them
    # basecnn's convolutions and head do 33.07 M multiply-adds per 32 px image; one counts as 2 FLOPs (the rest:
    # BatchNorm, GELU, pooling).
    assert 66.1e6 < m["flops_per_image"] < 67.5e6
    assert open("tflite/model_fp32.tflite", "rb").read(8)[4:] == b"TFL3"


@pytest.mark.slow  # a TFLite conversion (~3 s)
def test_a_flip_tta_model_is_profiled_and_exported_whole(workdir):
    """With `flip_tta` the shipped model holds both passes: its FLOPs are twice the single view's
    (plus the mirror's 98 k multiply-adds), and its TFLite export computes the same averaged predictions."""
    single = keras.models.load_model("model.keras")
    models.for_deployment(single, flip_tta=True).save("model.keras")
    profile.main(workdir, model_path="model.keras", export_dir="tflite")
    m = json.loads(open("metrics/profile.json").read())
    assert 2 * 66.1e6 < m["flops_per_image"] < 2 * 67.5e6 + 1e6
    assert m["tflite_fp32_accuracy"] == pytest.approx(m["keras_accuracy_on_eval_images"])
    assert m["params_total"] == single.count_params() + 32 * 32  # the mirror's fixed 32 x 32 permutation


PEAK_PROBE = """
import json, sys
import numpy as np
from core import profiling
from stages import profile
count = profiling.flops_per_image

def flops_with_a_copy(model):
    copy = np.ones(1_500_000_000, np.uint8)  # written, so resident: 1.5 GB
    return count(model) + int(copy[0]) - 1

profiling.flops_per_image = flops_with_a_copy
profile.main(json.load(open("params.json")), model_path="model.keras", export_dir="tflite")
print(profiling.peak_rss_mb())
"""


@pytest.mark.slow  # a fresh process: imports TensorFlow and profiles
def test_peak_memory_is_load_and_inference_not_the_flops_count(workdir, machine_plan):
    """peak_rss_mb is what a user's process needs: import, load, inference. The FLOPs
    count freezes the graph (a second copy of the weights); here it also allocates
    1.5 GB, which must not show in peak_rss_mb. In a fresh process: the high-water
    mark cannot be reset. (RSS at the FLOPs count can be below the peak so far, by
    some hundred MB on a loaded run, hence the margins.) The conditions say what
    shaped the figures."""
    write_json("params.json", workdir)
    out = run_cmd([sys.executable, "-c", PEAK_PROBE], cwd=Path.cwd(), env={"PYTHONPATH": str(ROOT)})
    peak_at_exit_mb = float(out.stdout.strip().splitlines()[-1])
    m = json.loads(open("metrics/profile.json").read())
    assert m["rss_after_load_mb"] <= m["peak_rss_mb"] < m["rss_after_load_mb"] + 750
    assert peak_at_exit_mb > m["peak_rss_mb"] + 750  # the allocation did happen, after the reading
    conditions = json.loads(open("metrics/conditions/profile.json").read())
    assert conditions["op_determinism"] is True
    assert conditions["dtype_policy"] == hardware.global_policy(machine_plan)
    assert conditions["keras"] == keras.__version__ and conditions["tensorflow"] == tf.__version__


class NoisyConverter:
    """Stands in for TFLiteConverter: prints as the real one does (Python and C level), then fails or not."""
    optimizations, target_spec = [], types.SimpleNamespace(supported_types=[])

    def __init__(self, fail):
        self.fail = fail

    def convert(self):
        print("Saved artifact at '/tmp/x'. The following endpoints are available:")
        for i in range(40):
            print(f"  {i}: TensorSpec(shape=(), dtype=tf.resource, name=None)")
        import os
        os.write(2, b"W0000 00:00:1.0   1 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\n")
        if self.fail:
            os.write(2, b"error: 'tf.SomeOp' op is neither a custom op nor a flex op\n")
            raise RuntimeError("conversion failed")
        return b"TFL3"


@pytest.mark.parametrize("fail", [False, True])
def test_tflite_conversion_output_is_dropped_or_added_to_its_error(monkeypatch, capfd, fail):
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", lambda model: NoisyConverter(fail))
    if fail:
        with pytest.raises(RuntimeError, match="conversion failed") as e:
            profiling.tflite_export(None, "fp32")
        note = "\n".join(e.value.__notes__)
        assert "neither a custom op nor a flex op" in note and "TensorSpec" in note
        assert len(note.splitlines()) == 1 + profiling.CONVERTER_TAIL_LINES  # the tail only
    else:
        assert profiling.tflite_export(None, "fp16") == b"TFL3"
    assert capfd.readouterr() == ("", "")
