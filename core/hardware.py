"""Hardware set-up: threads on CPU, mixed precision on GPU, MirroredStrategy on several GPUs (or on a CPU split
into several logical devices), and which precision training computes in."""
import math
import os
from pathlib import Path

from core import WORKERS_ENV, StageError
from core.runtime import keras, tf


def plan(gpus, cores, native_bfloat16=False, devices=None):
    """What to do on a machine with these GPUs and usable CPU cores, whose CPU computes bfloat16 natively
    or not (pure, testable). `devices`: the logical devices of the kind training runs on (the GPUs, else the
    CPU), by default one per GPU, or the one CPU; several only where TensorFlow was told to split a device
    (tf.config.set_logical_device_configuration, configured_devices). More than one: MirroredStrategy."""
    devices = (len(gpus) or 1) if devices is None else devices
    return {
        "gpus": len(gpus),
        "devices": devices,
        "native_bfloat16": native_bfloat16,
        "strategy": "mirrored" if devices > 1 else "default",
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


def compute_policy(setting, p, cpu_bfloat16=True):
    """The Keras dtype policy a stage computes in: `setting` is a params precision (float32 | auto |
    mixed_bfloat16), `p` a plan. auto: bfloat16 compute (float32 weights) on a CPU that has it natively, if the
    model gains from it there (`cpu_bfloat16`, its registry entry's), the plan's policy elsewhere
    (mixed_float16 on GPU, float32 on other CPUs)."""
    if setting != "auto":
        return setting
    return "mixed_bfloat16" if p["native_bfloat16"] and not p["gpus"] and cpu_bfloat16 else global_policy(p)


def global_policy(p):
    """The dtype policy every stage computes in by default: mixed float16 on GPU, float32 on CPU."""
    return "mixed_float16" if p["mixed_precision"] else "float32"


CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path):
    try:
        return Path(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None


def _ratio(quota, period):
    """quota / period for the texts of a cgroup file, None for no limit ("max", -1) or anything unreadable."""
    try:
        quota, period = int(quota), int(period)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(root=None):
    """The CPU time a cgroup quota grants (`docker --cpus 2`, a Kubernetes CPU limit), in cores: 2.0 for
    200000 us per 100000 us. None without a quota or without cgroups (macOS, Windows).

    Affinity does not show a quota: a `--cpus 2` container on a 64-core host sees 64 CPUs, and 64 threads
    sharing 2 cores' worth of time get throttled in bursts, which distorts every latency figure."""
    root = Path(root or CGROUP_ROOT)
    v2 = _read(root / "cpu.max")  # cgroup v2: "<quota|max> <period>"
    if v2 is not None:
        return _ratio(*v2) if len(v2) == 2 else None
    for controller in ("cpu", "cpu,cpuacct"):  # cgroup v1 mounts it under either name
        quota, period = _read(root / controller / "cpu.cfs_quota_us"), _read(root / controller / "cpu.cfs_period_us")
        if quota and period:
            return _ratio(quota[0], period[0])
    return None


def cores_allowed(affinity, quota):
    """Cores this process can keep busy: those it may run on, no more than its quota rounded up, at least 1."""
    cores = max(1, affinity or 1)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def queue_workers(environ=None):
    """How many experiments run at once on this host: BENCHMARK_WORKERS (a whole number >= 1), else 1."""
    value = (os.environ if environ is None else environ).get(WORKERS_ENV, "1")
    try:
        return max(1, int(value))
    except ValueError:
        raise StageError(f"{WORKERS_ENV}={value!r}: the number of experiments sharing this host must be a whole "
                         "number (make benchmark JOBS=N sets it)") from None


def usable_cores(cgroup_root=None, environ=None):
    """Cores this process can keep busy (cores_allowed), shared among the experiments running at once: N x all
    of them would oversubscribe the CPU."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores_allowed(affinity, cpu_quota(cgroup_root)) // queue_workers(environ))


def configure(seed):
    """Apply the plan for this machine and seed everything. Call before TensorFlow's first op."""
    gpus = tf.config.list_physical_devices("GPU")
    p = plan(gpus, usable_cores(), bool(cpu_flags() & set(BFLOAT16_FLAGS)), configured_devices(gpus))
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


def configured_devices(gpus):
    """The logical devices of the kind training runs on (the GPUs, else the CPU): one per physical device unless
    tf.config.set_logical_device_configuration split some. Read without initialising TensorFlow."""
    physical = gpus or tf.config.list_physical_devices("CPU")[:1]
    return sum(len(tf.config.get_logical_device_configuration(d) or [d]) for d in physical)


def strategy(p):
    """TensorFlow's default strategy (one device), or a MirroredStrategy over every logical device of the kind
    training runs on: the GPUs (MirroredStrategy's default), or the logical CPUs a process split its CPU into
    (its default would take CPU:0 alone)."""
    if p["strategy"] != "mirrored":
        return tf.distribute.get_strategy()
    cpus = None if p["gpus"] else [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(cpus)
