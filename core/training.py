"""Training steps shared by the features and train stages."""
import tempfile
import time

import keras
import numpy as np

from core import pipeline
from core.models import build_head, compile_model


def predict(model, x, batch_size):
    """The model's outputs for uint8 images (N, H, W, 3); float32."""
    return model.predict(pipeline.images(x, np.zeros(len(x), np.uint8), batch_size), verbose=1).astype(np.float32)


def fit(model, train, val, epochs, patience, callbacks=(), initial_epoch=0, watch_from=0):
    """model.fit with early stopping on val loss (best weights restored).

    Early stopping only counts from epoch `watch_from` of this fit: a warm-up
    + cosine schedule's early, high-rate epochs are too noisy to stop on.
    Returns (history dict, wall time in seconds, best epoch index within this fit).
    """
    stop = keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True,
                                         start_from_epoch=initial_epoch + watch_from)
    start = time.perf_counter()
    # shuffle=False: the tf.data pipelines shuffle (seeded) themselves.
    history = model.fit(train, validation_data=val, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                        callbacks=[stop, *callbacks], shuffle=False, verbose=2).history
    seconds = time.perf_counter() - start
    return history, seconds, stop.best_epoch - initial_epoch  # the epoch whose weights were restored


def tune_head(train_f, train_y, val_f, val_y, n_classes, space, trials, epochs, batch_size, seed):
    """Random search over head units, dropout and learning rate on cached
    features, scored on the validation split. Returns (best values, seconds)."""
    import keras_tuner as kt  # only needed when tuning

    def build(hp):
        head = build_head(train_f.shape[1], n_classes, hp.Choice("units", space["units"]),
                          hp.Float("dropout", *space["dropout"], step=0.1))
        compile_model(head, hp.Float("learning_rate", *space["learning_rate"], sampling="log"))
        return head

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=trials, seed=seed,
                                directory=workdir, project_name="head", overwrite=True)
        tuner.search(pipeline.features(train_f, train_y, batch_size, seed),
                     validation_data=pipeline.features(val_f, val_y, batch_size), epochs=epochs, verbose=1)
        best = tuner.get_best_hyperparameters(1)[0].values
    return {k: best[k] for k in ("units", "dropout", "learning_rate")}, time.perf_counter() - start
