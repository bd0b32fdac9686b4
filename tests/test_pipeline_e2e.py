"""The data stages through DVC itself, in a temporary git + DVC repo, against
archives served from a loopback HTTP server."""
import csv
import json
import re
import shutil
import sys

import pytest
import yaml

from builders import cifar10_binary, cinic10
from conftest import run_cmd, sha256
from core.params import load as load_params  # DVC's YAML 1.2 reading: 1e-05 is a float
from tiny_repo import USER_LEVEL, dvc, saved_model_accuracy

# One group (make test's --dist loadgroup hands the largest groups out first): its long tests, left in
# collection order, would start last and set the suite's wall time.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline-e2e")]


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


def stage_output_is_clean(said):
    """What the stages printed, as a user sees it by default: no line says error, no TensorFlow internals
    (a conversion listing, a traced spec, an optimizer warning, absl or CUDA start-up lines)."""
    said = said.replace("\r", "\n")
    assert [line for line in said.splitlines() if re.search("error", line, re.I)] == []
    for noise in ("TensorSpec", "Saved artifact", "Skipping variable loading", "cuInit", "absl::", "NodeDef"):
        assert noise not in said, noise


def test_default_route_imagenet_weights_through_dvc(route_copy, tmp_path, standin_dir, no_imagenet_weights):
    """`weights: imagenet` (params.yaml's default) through `dvc exp run`, Keras' own download-and-load code
    running in the stage processes on stand-in files (tests/standin_weights.py: the fetch is the only thing
    replaced): EfficientNetB0, whose ImageNet file carries part of its architecture (the input
    normalization's statistics), at 96 px so the 32 px images are resized inside the model, with a TFLite
    export. tests/test_train.py runs every pretrained entry on the stand-ins in-process."""
    from standin_weights import subprocess_env
    project = route_copy
    env = {**subprocess_env(standin_dir, tmp_path / "site"), **USER_LEVEL}
    out = dvc(project, "exp", "run", "-n", "efficientnetb0", "-S", "model=efficientnetb0", "-S", "weights=imagenet",
              "-S", "image_size=96", "-S", "profile.tflite=[fp32]", env=env)
    # The data stages come from README's runs; every model stage runs.
    assert set(re.findall(r"Running stage '(\w+)'", out.stdout)) == {
        "resolve_params", "features", "train", "evaluate", "profile"}
    assert "could not get ImageNet weights" not in out.stderr
    said = out.stdout + out.stderr
    stage_output_is_clean(said)
    assert "val accuracy" in said and "- val_loss: " in said  # train's epoch line
    assert "tflite fp32 latency" in said and "batch-1 p50" in said
    train = json.loads((project / "metrics/train.json").read_text())
    conditions = {stage: json.loads((project / f"metrics/conditions/{stage}.json").read_text())
                  for stage in ("train", "profile")}
    assert [conditions["train"][k] for k in ("model", "weights", "image_size")] == ["efficientnetb0", "imagenet", 96]
    assert train["frozen_epochs"] == train["fine_tune_epochs"] == 1
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())
    profile = json.loads((project / "metrics/profile.json").read_text())
    assert evaluate["test"]["accuracy"] == pytest.approx(
        saved_model_accuracy(project / "models/model.keras", project / "data/cifar10/test.npz"), abs=1e-6)
    assert conditions["profile"]["image_size"] == 96
    # The export takes the same raw images and computes the same function.
    assert profile["tflite_fp32_accuracy"] == pytest.approx(profile["keras_accuracy_on_eval_images"])
    assert (project / "models/tflite/model_fp32.tflite").stat().st_size > 0
    assert "uint8 (32, 32, 3)" in conditions["profile"]["input"]
    # Without the stand-ins (and offline) the same run stops at once with the fix, and no traceback.
    failed = dvc(project, "exp", "run", "-S", "model=densenet121", check=False, env=no_imagenet_weights.env)
    assert failed.returncode != 0 and "could not get ImageNet weights for densenet121" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert [path for path, _ in no_imagenet_weights.server.log] == [
        "/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"]


def test_dvc_exp_run_switches_the_backbone(readme_route):
    """README's route (tests/tiny_repo.py): `dvc exp run` trains basecnn in the workspace, then
    `-S model=mobilenetv2` reruns only the model stages, each run scored on the model DVC kept."""
    project, first, kept = readme_route.repo, readme_route.first, readme_route.after_first
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'train'" in first.stdout
    stage_output_is_clean(first.stdout + first.stderr)
    assert "val accuracy" in first.stdout + first.stderr and "batch-1 p50" in first.stdout + first.stderr
    # Every output directory holds a file (models/tflite an info.json, as profile.tflite is []): no DVC warning.
    assert "is empty" not in first.stdout + first.stderr
    assert json.loads((kept / "models/tflite/info.json").read_text())["exports"] == {}
    assert json.loads((kept / "metrics/train.json").read_text())["scratch_epochs"] == 1
    assert json.loads((kept / "metrics/conditions/train.json").read_text())["model"] == "basecnn"
    accuracy = json.loads((kept / "metrics/evaluate.json").read_text())["test"]["accuracy"]
    test_split = project / "data/cifar10/test.npz"
    assert accuracy == pytest.approx(saved_model_accuracy(kept / "models/model.keras", test_split), abs=1e-6)
    assert (kept / "plots/train/plots/metrics/eval/accuracy.tsv").exists()

    second = readme_route.out["dvc exp run -n mobilenetv2 -S model=mobilenetv2"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Stage 'download_cifar10' didn't change, skipping" in second.stdout
    assert "Running stage 'features'" in second.stdout and "Running stage 'train'" in second.stdout
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["frozen_epochs"] == metrics["fine_tune_epochs"] == 1
    assert json.loads((project / "metrics/conditions/train.json").read_text())["model"] == "mobilenetv2"
    accuracy = json.loads((project / "metrics/evaluate.json").read_text())["test"]["accuracy"]
    assert accuracy == pytest.approx(saved_model_accuracy(project / "models/model.keras", test_split), abs=1e-6)
    # Both phases on one DVCLive step axis.
    assert (project / "plots/train/plots/metrics/eval/accuracy.tsv").read_text().count("\n") == 3

    # dvc.lock matches the workspace after README's commands (the corruptions stage run by hand among
    # them wrote the same bytes): nothing is stale.
    assert "up to date" in dvc(project, "status").stdout
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    names = {exp.get("name") for rev in shown for exp in (rev.get("experiments") or [])}
    assert {"basecnn", "mobilenetv2"} <= names, names


def exp_metrics(project):
    """{experiment name: its val, test and CIFAR-10-C accuracy} from `dvc exp show --json`."""
    out = {}
    for rev in json.loads(dvc(project, "exp", "show", "--json").stdout):
        for exp in rev.get("experiments") or []:
            data = exp["revs"][0]["data"]
            files = {path: f.get("data", {}) for path, f in (data.get("metrics") or {}).items()}
            out[exp.get("name")] = (files.get("metrics/train.json", {}).get("val_accuracy"),
                                    files.get("metrics/evaluate.json", {}).get("test", {}).get("accuracy"),
                                    files.get("metrics/evaluate.json", {}).get("corruptions", {}).get("mean_accuracy"))
    return out


def test_benchmark_of_two_models_at_two_budgets_with_two_workers_writes_the_comparison_and_the_curve(route_copy):
    """`make benchmark FRACTIONS=0.5 JOBS=2`'s runner on README's tiny project, with the run cache gone: both
    models at half of each class's training images and at all of them, four DVC experiments two at a time
    (each stage on half the cores). The full-data ones reach the accuracies README's one-at-a-time runs did.
    The comparison comes from the per-image predictions each experiment's evaluate stage left in DVC's cache:
    a pairwise row per set, accuracies equal to the experiments' own metrics, a recommendation that says
    whether the models are within noise of each other as the val row's interval does; and the label-efficiency
    curve, every budget on the same val and test images."""
    project = route_copy
    serial = exp_metrics(project)  # README's `dvc exp run -n basecnn` and `-n mobilenetv2`, one at a time
    shutil.rmtree(project / ".dvc/cache/runs")
    out = run_cmd([sys.executable, "-m", "compare.benchmark", "--models", "basecnn", "mobilenetv2", "--jobs", "2",
                   "--fractions", "0.5"], project, env=USER_LEVEL, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("Running stage 'train'") == 4
    now = exp_metrics(project)
    for model in ("basecnn", "mobilenetv2"):
        assert now[model] == serial[model] and None not in now[model], model

    rows = {r["model"]: r for r in csv.DictReader(open(project / "reports/comparison.csv"))}
    pairs = {r["set"]: r for r in csv.DictReader(open(project / "reports/pairwise.csv"))}
    assert list(pairs) == ["val", "test", "cifar10c"]  # CINIC-10 is off in the tiny project
    assert all((r["model_a"], r["model_b"]) == ("basecnn", "mobilenetv2") for r in pairs.values())
    counts = json.loads((project / "data/cifar10/info.json").read_text())["counts"]
    assert [int(pairs[name]["n"]) for name in ("val", "test")] == [sum(counts[name].values()) for name in ("val", "test")]
    for name, column in (("val", "val_accuracy_pct"), ("test", "test_accuracy_pct")):
        for model, key in (("basecnn", "accuracy_a"), ("mobilenetv2", "accuracy_b")):
            assert 100 * float(pairs[name][key]) == pytest.approx(float(rows[model][column]), abs=1e-2)
            low, high = (float(rows[model][f"{column[:-4]}_ci_{end}_pct"]) for end in ("low", "high"))
            assert low <= float(rows[model][column]) <= high
    val = pairs["val"]
    tied = float(val["ci_low"]) <= 0 <= float(val["ci_high"])
    assert ("are within noise on val" in out.stdout) == tied, (val, out.stdout[-3000:])
    assert ("A clear lead on val" in out.stdout) != tied, (val, out.stdout[-3000:])
    report = (project / "reports/comparison.md").read_text()
    assert "Recommended: " in out.stdout and "## Paired comparisons" in report
    shared = {r["model"]: float(r["queue_workers"])
              for r in csv.DictReader(open(project / "reports/comparison_conditions.csv"))}
    assert shared == {"basecnn": 2, "mobilenetv2": 2}
    assert "measured while 2 experiments ran at once" in report

    # The label-efficiency curve: the same val and test images at both budgets, the same optimizer steps
    # (half the images, passed over twice per epoch).
    curve = {(r["model"], r["train_fraction"]): r for r in csv.DictReader(open(project / "reports/label_efficiency.csv"))}
    assert sorted(curve) == [(m, f) for m in ("basecnn", "mobilenetv2") for f in ("0.5", "1.0")]
    train_counts = sum(counts["train"].values()) / len(counts["train"])
    for model in ("basecnn", "mobilenetv2"):
        assert float(curve[(model, "1.0")]["images_per_class"]) == train_counts
        assert float(curve[(model, "0.5")]["images_per_class"]) == pytest.approx(train_counts / 2, abs=0.5)
        assert curve[(model, "1.0")]["test_accuracy_pct"] == rows[model]["test_accuracy_pct"]
    from compare.predictions import exp_predictions
    from compare.report import exp_records
    records = {r["Experiment"]: r for r in exp_records(str(project))}
    assert {records[f"{m}-f0.5"].get("train_repeats") for m in ("basecnn", "mobilenetv2")} == {2}
    digests = {name: {s: str(a["images_sha256"]) for s, a in exp_predictions(records[name], str(project)).items()}
               for name in ("basecnn", "basecnn-f0.5", "mobilenetv2-f0.5")}
    assert digests["basecnn"] == digests["basecnn-f0.5"] == digests["mobilenetv2-f0.5"]
    gains = list(csv.DictReader(open(project / "reports/label_gains.csv")))
    assert sorted((g["train_fraction"], g["model"], g["set"]) for g in gains) == \
        [(f, "mobilenetv2", s) for f in ("0.5", "1.0") for s in ("cifar10c", "test", "val")]
    assert "## Label efficiency" in report and "| basecnn | " in report.split("## Label efficiency")[1]
    assert (project / "plots/labels/label_efficiency.png").stat().st_size > 10_000
    assert len(list(csv.DictReader(open(project / "plots/labels/label_efficiency.csv")))) == 4

@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning")  # Keras: 224's file at 32 px
def test_queued_experiment_takes_real_weights_from_a_copy_of_the_keras_cache(project, tmp_path, no_imagenet_weights):
    """The air-gapped route: a copy of ~/.keras/models (here a stand-in of the file Keras downloads for
    MobileNetV2 at 32 px, git-ignored as such a copy would be) named by a path relative to the project's root,
    through DVC's queue, whose experiment runs in a temporary copy of the repository without that folder. The
    experiment's conditions say which file was loaded, by name and content; nothing was fetched."""
    import hashlib

    from core.models import REGISTRY
    from standin_weights import OFFICIAL_NAMES, write_standins
    from tiny_repo import tiny_pipeline_params
    (project / ".gitignore").write_text((project / ".gitignore").read_text() + "keras-models/\n")
    tiny_pipeline_params(project, tmp_path, model="mobilenetv2")
    written = write_standins(project / "keras-models", {"mobilenetv2": REGISTRY["mobilenetv2"].constructor}, 32)
    expected = OFFICIAL_NAMES["mobilenetv2"].format(rows=224)  # Keras' choice below 96 px
    assert written == {"mobilenetv2": expected}
    env = {**no_imagenet_weights.env, **USER_LEVEL}
    dvc(project, "exp", "run", "--queue", "-n", "airgapped", "-S", "model=mobilenetv2", "-S", "weights=keras-models",
        env=env)
    ran = dvc(project, "exp", "run", "--run-all", "-j", "1", env=env, check=False)
    applied = dvc(project, "exp", "apply", "airgapped", check=False)  # the experiment's outputs, in the workspace
    if ran.returncode or applied.returncode:
        logs = dvc(project, "queue", "logs", "airgapped", check=False)
        pytest.fail("\n".join(p.stdout + p.stderr for p in (ran, applied, logs))[-6000:])
    conditions = json.loads((project / "metrics/conditions/train.json").read_text())
    assert (conditions["model"], conditions["weights"], conditions["weights_file"]) == (
        "mobilenetv2", "keras-models", expected)
    assert conditions["weights_sha256"] == hashlib.sha256((project / "keras-models" / expected).read_bytes()).hexdigest()
    assert no_imagenet_weights.server.log == []
