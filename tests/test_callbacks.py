"""core.callbacks.StopOnNaN on a tiny model: a loss that becomes NaN or infinite stops the fit with a StageError."""
import keras
import numpy as np
import pytest

from core.callbacks import NonFiniteLossError, StopOnNaN


def tiny_fit(learning_rate, x, callbacks):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy")
    y = np.arange(len(x)) % 3
    return model, model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=callbacks).history


X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


@pytest.mark.parametrize("learning_rate, x", [
    pytest.param(float("nan"), X, id="nan-learning-rate"),
    pytest.param(1e30, X * 1e6, id="exploding-learning-rate"),
    pytest.param(0.01, np.where(np.arange(X.size).reshape(X.shape) == 9, np.nan, X).astype(np.float32),
                 id="nan-in-the-data"),
])
def test_non_finite_loss_stops_training_with_the_key(learning_rate, x):
    with pytest.raises(NonFiniteLossError, match=r"scratch: loss became (nan|inf) at epoch 1, batch \d+; training "
                                                 r"stopped and no model was written. Lower `train.scratch."
                                                 r"learning_rate`") as e:
        tiny_fit(learning_rate, x, [StopOnNaN("train.scratch.learning_rate", "scratch")])
    assert "\n" not in str(e.value)


def test_finite_training_is_untouched():
    _, history = tiny_fit(0.01, X, [StopOnNaN("train.scratch.learning_rate", "scratch")])
    assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
