"""What a model stage leaves when it fails, and the early stopping both training phases rely on.

docs/errors.md: every stage that fails leaves the previous outputs as they were, one consistent set; the
metrics are never those of one run beside the plots or exports of another. docs/models.md: both phases stop
early on validation loss and restore the best weights; from scratch, early stopping watches from
`watch_from_fraction` of the epochs on.
"""
import errno
from pathlib import Path

import numpy as np
import pytest


from core.data import CIFAR10_CLASSES
from core.io import DiskFullError, save_npz, write_json
from stages import corrupt_cifar10
from test_bad_inputs import listing, snapshot


def outputs(paths):
    """{path: its bytes, or for a directory test_bad_inputs.snapshot's {file: bytes}}."""
    return {p: snapshot(Path(p)) if Path(p).is_dir() else Path(p).read_bytes() for p in paths}


def save_model(seed):
    """An untrained basecnn, shipped as the train stage ships it; another seed gives other predictions."""
    import keras

    from core import models
    keras.utils.set_random_seed(seed)
    model, _ = models.build_model(models.build_trunk("basecnn", (32, 32, 3), 32, "none"), 10, 0, 0.0)
    Path("models").mkdir(exist_ok=True)
    models.for_deployment(model).save("models/model.keras")


@pytest.fixture
def workdir(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for split, n in (("val", 20), ("test", 150)):  # 15 per class: each of the 15 corruptions its own image
        save_npz(f"data/cifar10/{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=(np.arange(n) % 10).astype(np.uint8))
    write_json("data/cifar10/info.json", {"classes": CIFAR10_CLASSES, "image_shape": [32, 32, 3]})
    save_npz("data/cinic10/sample.npz", x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y=(np.arange(20) % 10).astype(np.uint8), origin=np.array(["imagenet", "cifar10"] * 10))
    write_json("data/cinic10/info.json", {"source": "test", "classes": CIFAR10_CLASSES})
    params["corruptions"].update(per_class=1, names=["gaussian_noise", "pixelate"])
    corrupt_cifar10.main(params)
    params.update(model="basecnn", image_size=32)
    params["profile"].update(warmup_runs=1, latency_runs=20, batch_size=2, throughput_runs=3, tflite=[],
                             tflite_eval_images=10)
    save_model(0)
    return params


def failing_last_write(module, monkeypatch):
    """The stage's last file, its conditions, cannot be written: the disk is full."""
    real = module.write_json

    def write_json(path, data):
        if Path(path).parent.name == "conditions":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(module, "write_json", write_json)


# stage, its outputs, and what makes the second run write other bytes into each of them
STAGES = {
    "evaluate": (["data/predictions", "plots/evaluate", "metrics/evaluate.json", "metrics/conditions/evaluate.json"],
                 {}),
    "profile": (["models/tflite", "metrics/profile.json", "metrics/conditions/profile.json"], {"tflite": ["fp32"]}),
}


@pytest.mark.slow  # builds and runs a model; profile converts one to TFLite (~10 s each on 2 cores)
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_failed_run_keeps_the_previous_outputs_together(workdir, monkeypatch, stage):
    import importlib
    module = importlib.import_module(f"stages.{stage}")
    paths, profile_change = STAGES[stage]
    module.main(workdir)
    before = outputs(paths)
    dirs = sorted({Path(p).parent for p in paths} | {Path(paths[0])})
    names = [listing(d) for d in dirs]

    save_model(1)  # the next run's model computes other figures
    workdir["profile"].update(profile_change)
    with monkeypatch.context() as m:
        failing_last_write(module, m)
        with pytest.raises(DiskFullError, match="disk full while writing it"):
            module.main(workdir)
    assert outputs(paths) == before
    assert [listing(d) for d in dirs] == names  # no temporary file or directory left beside them

    # The same run, not failing, changes the plots or exports and the metrics, which the failed one kept
    # together (the conditions, which record the settings, may stay the same).
    module.main(workdir)
    after = outputs(paths)
    assert [p for p in paths[:2] if after[p] != before[p]] == paths[:2]


def history_of_weights(model):
    """A callback keeping the model's weights at the end of each epoch."""
    import keras
    kept = []

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kept.append([w.copy() for w in model.get_weights()])
    return Keep(), kept


def worsening_fit(watch_from, patience=2, epochs=12):
    """core.training.fit on a task whose validation labels are the training labels inverted: each epoch of
    learning makes the validation loss worse, so the best epoch is the first one early stopping watches."""
    import keras

    from core.runtime import tf
    from core.training import fit
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x, 1 - y)).batch(16)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keep, kept = history_of_weights(model)
    history, _, best = fit(model, train, val, epochs, patience, callbacks=[keep], watch_from=watch_from)
    return model, history, best, kept


@pytest.mark.parametrize("watch_from", [0, 4])
def test_early_stopping_watches_from_its_epoch_and_restores_the_best_weights(watch_from):
    model, history, best, kept = worsening_fit(watch_from)
    val_loss = history["val_loss"]
    assert all(b > a for a, b in zip(val_loss, val_loss[1:]))  # the task does what it says
    assert best == watch_from  # the first epoch watched: none before it counts, however good
    assert len(val_loss) == watch_from + 1 + 2  # then `patience` epochs without improvement, and it stops
    restored = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(restored, kept[best]))
    assert not all(np.array_equal(a, b) for a, b in zip(restored, kept[-1]))  # not the last epoch's
