"""TensorFlow and Keras, imported here, once, for every project module that uses
them (`from core.runtime import keras, tf`), so that a stage's output starts
with the stage and not with TensorFlow's start-up.

On a machine without a GPU, `import tensorflow` and its first device listing
print some ten lines to stderr from C++, most before any log level applies:
oneDNN and CPU-instruction notes, "Could not find cuda drivers", and an `E`
line, "failed call to cuInit: ... CUDA error", which reads as a failure but
only means there is no GPU. Those known lines are dropped (core.quiet.STARTUP_NOISE);
anything else printed meanwhile is written back to stderr. INFO lines after
start-up are off too (TF_CPP_MIN_LOG_LEVEL=1, unless the user set a level;
warnings and errors still show); TF_CPP_MIN_LOG_LEVEL=0 shows everything.
"""
import os

from core import quiet

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO off; read by TensorFlow's C++ logging at import

with quiet.filtered(quiet.STARTUP_NOISE, guard=True):  # a CPU without AVX aborts in here
    import keras
    import tensorflow as tf
    tf.config.list_physical_devices()  # the cuInit attempt, here rather than in the middle of a stage

__all__ = ["keras", "tf"]
