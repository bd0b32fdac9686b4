"""The data stages through DVC itself, in a temporary git + DVC repo, against
archives served from a loopback HTTP server."""
import json
import sys

import pytest
import yaml

from builders import cifar10_binary, cinic10
from conftest import run_cmd, sha256
from core.params import load as load_params  # DVC's YAML 1.2 reading: 1e-05 is a float

pytestmark = pytest.mark.e2e


def dvc(repo, *args, check=True, env=None):
    return run_cmd([sys.executable, "-m", "dvc", *args], repo, check=check, env=env)


def saved_model_accuracy(project):
    """The accuracy the run's saved model gives on the run's test split, computed here, apart from evaluate."""
    import numpy as np

    from core.contracts import load_model
    from core.io import load_npz
    test = load_npz(project / "data/cifar10/test.npz")
    model = load_model(project / "models/model.keras")
    return float(np.mean(model.predict(test["x"], verbose=0).argmax(axis=1) == test["y"]))


def test_dvc_repro_data_stages(project, server, tmp_path):
    cifar10_binary(tmp_path / "cifar.tar.gz", per_batch=10, n_test=10)
    cinic10(tmp_path / "cinic.tar.gz", imagenet=3, cifar=2, splits=("train", "test"))
    params = load_params(project / "params.yaml")
    for section, name in (("cifar10", "cifar.tar.gz"), ("cinic10", "cinic.tar.gz")):
        data = (tmp_path / name).read_bytes()
        params[section].update(urls=[server.serve(f"/{name}", data)], checksum=sha256(data), size_bytes=len(data))
    params["cinic10"]["per_class"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dvc(project, "repro", "sample_cinic10", "download_cifar10")

    info = json.loads((project / "data/cifar10/info.json").read_text())
    assert {split: sum(c.values()) for split, c in info["counts"].items()} == {"train": 40, "val": 10, "test": 10}  # 5 per class, 10 % rounded half up
    assert json.loads((project / "data/cinic10/info.json").read_text())["counts"]["ship"] == 2
    assert (project / "data/cinic10/manifest.csv").read_text().count("\n") == 21
    assert "up to date" in dvc(project, "status", "download_cifar10", "sample_cinic10").stdout
    assert "/cifar10" in (project / "data/.gitignore").read_text()
    # Unchanged inputs: nothing runs again and nothing is downloaded again.
    served = len(server.log)
    assert "didn't change, skipping" in dvc(project, "repro", "sample_cinic10", "download_cifar10").stdout
    assert len(server.log) == served


def test_dvc_repro_fails_cleanly_on_bad_checksum(project, server, tmp_path):
    cifar10_binary(tmp_path / "cifar.tar.gz")
    params = load_params(project / "params.yaml")
    params["cifar10"].update(urls=[server.serve("/c.tar.gz", (tmp_path / "cifar.tar.gz").read_bytes())],
                             checksum="sha256:" + "0" * 64, size_bytes=None)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(project, "repro", "download_cifar10", check=False)
    assert result.returncode != 0
    assert "error: could not get a verified copy" in result.stderr and "expected 0000" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data/cifar10").exists()


def tiny_pipeline_params(project, tmp_path, **top):
    """params.yaml of the temporary repo: a tiny class-folder dataset, one epoch, 32 px, no downloads,
    two corruptions of one image per class, the shortest profile params allow and no TFLite export
    (`-S profile.tflite=[fp32]` where a test checks one); `top` overrides top-level keys (model, weights,
    image_size)."""
    from builders import class_folders
    class_folders(tmp_path / "images", classes=("cat", "dog", "ship"), per_class=(8, 4))
    params = load_params(project / "params.yaml")
    params.update({"weights": "none", "image_size": 32, **top})
    params["cifar10"].update(format="folders", urls=[str(tmp_path / "images")], checksum=None, size_bytes=None,
                             val_fraction=0.25)
    params["cinic10"]["urls"] = "none"
    # Every model predicts each corrupted image at 5 severities: 450 images at 96 px took DenseNet121 ~40 s.
    params["corruptions"].update(per_class=1, names=["gaussian_noise", "pixelate"])
    t = params["train"]
    t["batch_size"] = 8
    for phase in ("frozen", "fine_tune", "scratch"):
        t[phase]["epochs"] = 1
    t["scratch"]["precision"] = "float32"  # `auto` is bfloat16 on some CPUs only (tests/conftest.py's params)
    params["profile"].update(warmup_runs=1, latency_runs=20, batch_size=2, throughput_runs=3, tflite=[],
                             tflite_eval_images=10)  # the minimum of each (core.params.NUMBERS)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_cmd(["git", "add", "-A"], project)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], project)


def test_default_route_imagenet_weights_for_every_backbone(project, tmp_path, standin_dir, no_imagenet_weights):
    """`weights: imagenet` (params.yaml's default) through `dvc exp run`, for each pretrained backbone,
    at 96 px so the 32 px images are resized inside the model. Keras' own download-and-load code runs in
    the stage processes, on stand-in files (tests/standin_weights.py: the fetch is the only thing replaced)."""
    from core.models import REGISTRY
    from standin_weights import subprocess_env
    tiny_pipeline_params(project, tmp_path, weights="imagenet", image_size=96)
    env = subprocess_env(standin_dir, tmp_path / "site")
    for name in (n for n, e in REGISTRY.items() if e.two_phase):
        # One TFLite conversion (~30 s for the big ones); every run sets it, as the workspace keeps the last -S.
        exports = "[fp32]" if name == "mobilenetv2" else "[]"
        out = dvc(project, "exp", "run", "-n", name, "-S", f"model={name}", "-S", f"profile.tflite={exports}", env=env)
        assert "could not get ImageNet weights" not in out.stderr
        train = json.loads((project / "metrics/train.json").read_text())
        conditions = {stage: json.loads((project / f"metrics/conditions/{stage}.json").read_text())
                      for stage in ("train", "profile")}
        assert [conditions["train"][k] for k in ("model", "weights", "image_size")] == [name, "imagenet", 96]
        assert train["frozen_epochs"] == train["fine_tune_epochs"] == 1
        evaluate = json.loads((project / "metrics/evaluate.json").read_text())
        profile = json.loads((project / "metrics/profile.json").read_text())
        assert evaluate["test"]["accuracy"] == pytest.approx(saved_model_accuracy(project), abs=1e-6), name
        assert conditions["profile"]["image_size"] == 96
        if name == "mobilenetv2":  # the export takes the same raw images and computes the same function
            assert profile["tflite_fp32_accuracy"] == pytest.approx(profile["keras_accuracy_on_eval_images"])
        assert "uint8 (32, 32, 3)" in conditions["profile"]["input"]
    # Without the stand-ins (and offline) the same run stops at once with the fix, and no traceback.
    failed = dvc(project, "exp", "run", "-S", "model=densenet121", "-S", "seed=7", check=False,
                 env=no_imagenet_weights.env)
    assert failed.returncode != 0 and "could not get ImageNet weights for densenet121" in failed.stderr
    assert [path for path, _ in no_imagenet_weights.server.log] == [
        "/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"]


def test_dvc_exp_run_switches_the_backbone(project, tmp_path):
    tiny_pipeline_params(project, tmp_path)
    first = dvc(project, "exp", "run", "-n", "base")
    assert "Running stage 'train'" in first.stdout
    # Every output directory holds a file (models/tflite an info.json, as profile.tflite is []): no DVC warning.
    assert "is empty" not in first.stdout + first.stderr
    assert json.loads((project / "models/tflite/info.json").read_text())["exports"] == {}
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["scratch_epochs"] == 1
    assert json.loads((project / "metrics/conditions/train.json").read_text())["model"] == "basecnn"
    accuracy = json.loads((project / "metrics/evaluate.json").read_text())["test"]["accuracy"]
    assert accuracy == pytest.approx(saved_model_accuracy(project), abs=1e-6)  # the model DVC kept is the one scored
    assert (project / "plots/train/plots/metrics/eval/accuracy.tsv").exists()

    second = dvc(project, "exp", "run", "-n", "mnv2", "-S", "model=mobilenetv2").stdout
    assert "Stage 'download_cifar10' didn't change, skipping" in second
    assert "Running stage 'features'" in second and "Running stage 'train'" in second
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["frozen_epochs"] == metrics["fine_tune_epochs"] == 1
    assert json.loads((project / "metrics/conditions/train.json").read_text())["model"] == "mobilenetv2"
    # Both phases on one DVCLive step axis.
    assert (project / "plots/train/plots/metrics/eval/accuracy.tsv").read_text().count("\n") == 3

    # A head-only change trains again without running the backbone over the data.
    third = dvc(project, "exp", "run", "-n", "head", "-S", "model=mobilenetv2", "-S", "train.head.units=32").stdout
    assert "Stage 'features' didn't change, skipping" in third and "Running stage 'train'" in third

    # dvc.lock matches the workspace after a run: nothing is stale.
    assert "up to date" in dvc(project, "status").stdout
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    names = {exp.get("name") for rev in shown for exp in (rev.get("experiments") or [])}
    assert {"base", "mnv2", "head"} <= names, names
