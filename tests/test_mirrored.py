"""One model on several devices: core.hardware's MirroredStrategy path, run on a CPU split into two logical
devices. TensorFlow takes that split only before it initialises, so the stages run in a fresh process."""
import copy
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import ROOT
from core import hardware
from core.io import load_npz
from core.params import load
from test_train import one_epoch_setup

# In a fresh process: the CPU split in two before TensorFlow initialises, then features + train in the current
# directory, by the stages' own main (which configure TensorFlow through core.hardware, as ever). One process per
# model, as DVC runs each stage: two MirroredStrategy objects in one process would share collective instance keys.
SPLIT_AND_TRAIN = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from core.runtime import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from stages import features, train
params = json.load(open("params.json"))
features.main(params)
train.main(params)
"""


@pytest.mark.slow  # TensorFlow in a fresh process, two models trained
def test_both_recipes_train_mirrored_on_two_logical_cpus_and_ship_a_plain_model(tmp_path, monkeypatch):
    """basecnn from scratch and MobileNetV2 through both phases (random weights, 32 px, one epoch each) train
    under a MirroredStrategy of 2 replicas, and say so in their conditions; each shipped model loads here, in a
    process with one device, and gives the val accuracy train reported."""
    for name in ("basecnn", "mobilenetv2"):
        directory = tmp_path / name
        directory.mkdir()
        monkeypatch.chdir(directory)
        params = one_epoch_setup(copy.deepcopy(load(ROOT / "params.yaml")))
        params["model"] = name
        params["train"]["scratch"]["precision"] = "float32"  # as conftest's `params`
        (directory / "params.json").write_text(json.dumps(params))
        out = subprocess.run([sys.executable, "-c", SPLIT_AND_TRAIN], cwd=directory, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
        conditions = json.loads((directory / "metrics/conditions/train.json").read_text())
        assert (conditions["strategy"], conditions["replicas"]) == ("MirroredStrategy", 2), conditions
        assert (conditions["hardware"]["strategy"], conditions["hardware"]["devices"]) == ("mirrored", 2)
        metrics = json.loads((directory / "metrics/train.json").read_text())
        phases = ("frozen", "fine_tune") if name == "mobilenetv2" else ("scratch",)
        assert [metrics[f"{phase}_epochs"] for phase in phases] == [1] * len(phases)
        model = keras.models.load_model(directory / "models/model.keras")
        val = load_npz(directory / "data/cifar10/val.npz")
        probs = model.predict(val["x"], verbose=0)
        assert np.isfinite(probs).all() and probs.shape == (20, 10)
        assert np.mean(probs.argmax(axis=1) == val["y"]) == pytest.approx(metrics["val_accuracy"], abs=1e-4)
        assert model.evaluate(val["x"], val["y"], verbose=0)[1] == pytest.approx(metrics["val_accuracy"], abs=1e-4)


def test_this_machine_as_configured_trains_on_one_device(machine_plan):
    """Production picks MirroredStrategy for several GPUs only (tests/test_models.py::test_hardware_plan), unless a
    process split its CPU or a GPU into logical devices itself: nothing here did."""
    assert (machine_plan["devices"], machine_plan["strategy"]) == (1, "default")
    assert hardware.configured_devices([]) == 1
