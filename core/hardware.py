"""Hardware set-up: threads on CPU, mixed precision on GPU, MirroredStrategy on several GPUs, and which
precision training computes in."""
import os
from pathlib import Path

from core.runtime import keras, tf


def plan(gpus, cores, native_bfloat16=False):
    """What to do on a machine with these GPUs and usable CPU cores, whose CPU computes bfloat16 natively
    or not (pure, testable)."""
    return {
        "gpus": len(gpus),
        "native_bfloat16": native_bfloat16,
        "strategy": "mirrored" if len(gpus) > 1 else "default",
        "mixed_precision": bool(gpus),
        # On CPU, TensorFlow's defaults count the host's cores, not this process's share of them.
        "intra_op_threads": 0 if gpus else cores,
        "inter_op_threads": 0 if gpus else min(2, cores),
    }


# CPU flags (/proc/cpuinfo) of bfloat16 arithmetic in hardware: AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake+) and
# AMX (Intel Sapphire Rapids+). Without them TensorFlow emulates bfloat16 and it is slower than float32.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags, empty where /proc/cpuinfo does not exist (macOS, Windows)."""
    path = Path(cpuinfo)
    if not path.exists():
        return set()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def compute_policy(setting, p):
    """The Keras dtype policy training computes in: `setting` is params' train.scratch.precision, `p` a plan.
    auto: bfloat16 compute (float32 weights) on a CPU that has it natively, the plan's policy elsewhere
    (mixed_float16 on GPU, float32 on other CPUs)."""
    if setting != "auto":
        return setting
    return "mixed_bfloat16" if p["native_bfloat16"] and not p["gpus"] else global_policy(p)


def global_policy(p):
    """The dtype policy every stage computes in by default: mixed float16 on GPU, float32 on CPU."""
    return "mixed_float16" if p["mixed_precision"] else "float32"


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def configure(seed):
    """Apply the plan for this machine and seed everything. Call before TensorFlow's first op."""
    p = plan(tf.config.list_physical_devices("GPU"), usable_cores(), bool(cpu_flags() & set(BFLOAT16_FLAGS)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(p["intra_op_threads"])
        tf.config.threading.set_inter_op_parallelism_threads(p["inter_op_threads"])
    except RuntimeError:  # TensorFlow already ran an op in this process (tests); it keeps its threads
        pass
    keras.mixed_precision.set_global_policy(global_policy(p))
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
