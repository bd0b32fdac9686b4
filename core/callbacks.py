"""Keras callbacks the training stages share.

StopOnNaN: a loss that becomes NaN or infinite stops training with a
StageError (one `error:` line), so no model is written: Keras' own
TerminateOnNaN only stops the fit, and the stage would then save a model whose
weights are NaN and exit 0.
"""
import math

from core import StageError
from core.runtime import keras


class NonFiniteLossError(StageError):
    pass


class StopOnNaN(keras.callbacks.Callback):
    """Raise NonFiniteLossError as soon as a loss in the logs is NaN or infinite.

    `key` names the param most likely to blame (the phase's learning rate), for
    the fix in the message; `phase` names the phase.
    """

    def __init__(self, key, phase="training"):
        super().__init__()
        self.key, self.phase, self.epoch = key, phase, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {self.epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"epoch {epoch + 1}")

    def _check(self, logs, where):
        for name, value in (logs or {}).items():
            if "loss" not in name:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{self.phase}: {name} became {value} at {where}; training stopped and no model was written. "
                    f"Lower `{self.key}` in params.yaml (or check the data for NaN) and run again")
