"""Hardware set-up: threads on CPU, mixed precision on GPU, MirroredStrategy on several GPUs."""
import os

from core.runtime import keras, tf


def plan(gpus, cores):
    """What to do on a machine with these GPUs and usable CPU cores (pure, testable)."""
    return {
        "gpus": len(gpus),
        "strategy": "mirrored" if len(gpus) > 1 else "default",
        "mixed_precision": bool(gpus),
        # On CPU, TensorFlow's defaults count the host's cores, not this process's share of them.
        "intra_op_threads": 0 if gpus else cores,
        "inter_op_threads": 0 if gpus else min(2, cores),
    }


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def configure(seed):
    """Apply the plan for this machine and seed everything. Call before TensorFlow's first op."""
    p = plan(tf.config.list_physical_devices("GPU"), usable_cores())
    try:
        tf.config.threading.set_intra_op_parallelism_threads(p["intra_op_threads"])
        tf.config.threading.set_inter_op_parallelism_threads(p["inter_op_threads"])
    except RuntimeError:  # TensorFlow already ran an op in this process (tests); it keeps its threads
        pass
    keras.mixed_precision.set_global_policy("mixed_float16" if p["mixed_precision"] else "float32")
    keras.utils.set_random_seed(seed)
    # Same params and seed, same figures: some kernels otherwise reduce in a
    # run-dependent order (tf.data's parallel map keeps its order regardless).
    tf.config.experimental.enable_op_determinism()
    return p


def op_determinism():
    """Whether op determinism is on (configure turns it on; tf.config's public API can only set it)."""
    from tensorflow.python.framework import config as tf_config
    return tf_config.is_op_determinism_enabled()


def strategy(p):
    return tf.distribute.MirroredStrategy() if p["strategy"] == "mirrored" else tf.distribute.get_strategy()
