"""What a model costs to run, measured as MLPerf and timm do (docs/measuring.md says why each rule):
compiled calls, warm-up excluded, percentiles over many single calls, one
fixed input tensor, conditions recorded with every figure."""
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
from tqdm import tqdm

from core import quiet
from core.hardware import cpu_quota, op_determinism, queue_workers, usable_cores
from core.metrics import percentiles_ms
from core.runtime import keras, tf

MB = 1e6  # sizes are in megabytes of 10^6 bytes


def rss_mb():
    return psutil.Process().memory_info().rss / MB


def maxrss_bytes(ru_maxrss, platform=None):
    """getrusage's ru_maxrss in bytes: macOS reports bytes, Linux kibibytes."""
    return ru_maxrss if (platform or sys.platform) == "darwin" else ru_maxrss * 1024


def peak_rss_mb():
    """High-water mark of this process's RSS; cannot be reset."""
    import resource  # POSIX only: imported here so that on Windows a stage reaches core.cli's one-line refusal
    return maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / MB


def conditions(model=None):
    """The machine and software figures are measured under; `dtype_policy` is what `model` computes in (the
    global policy, which a GPU sets to mixed_float16, says only what layers built next get), or without a
    model the global policy."""
    from core.models import backbone_policy
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d"),  # a sidecar no stage reads: dates are fine here
        "usable_cores": usable_cores(),  # this experiment's share when several run at once (queue_workers)
        "queue_workers": queue_workers(),  # experiments sharing the host while these figures were measured
        "cpu_quota_cores": cpu_quota(),  # the cgroup's CPU limit (null: none), already within usable_cores
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "dtype_policy": keras.mixed_precision.global_policy().name if model is None else backbone_policy(model),
        "op_determinism": op_determinism(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "xla": False,  # tf.function without jit_compile; Keras' "auto" also resolves to off on CPU
    }


def compiled_call(model):
    """Inference as a compiled graph (Keras 3 runs eager calls op by op)."""
    return tf.function(lambda x: model(x, training=False))


def time_calls(fn, x, runs, warmup, desc):
    """Per-call wall times (s) of fn(x) with its result materialised; warm-up calls excluded."""
    for _ in range(warmup):
        np.asarray(fn(x))
    samples = []
    for _ in tqdm(range(runs), desc=desc, leave=False):
        start = time.perf_counter()
        np.asarray(fn(x))
        samples.append(time.perf_counter() - start)
    return samples


def fixed_input(model, batch):
    """One fixed batch of random images of the model's input shape and dtype (raw uint8 images)."""
    shape, dtype = (batch, *model.input_shape[1:]), np.dtype(model.input.dtype)
    return np.random.default_rng(0).integers(0, 256, shape).astype(dtype)


def backbone_size(model):
    """The side (px) the backbone runs at, after the model's own resizing."""
    from core.models import BACKBONE
    return int(model.get_layer(BACKBONE).inputs[0].shape[1])


def latency(model, runs, warmup):
    """Batch-1 latency percentiles (ms) of the compiled model on one fixed input."""
    x = tf.constant(fixed_input(model, 1))
    samples = time_calls(compiled_call(model), x, runs, warmup, "batch-1 latency")
    return {f"latency_{k}_ms": v for k, v in percentiles_ms(samples).items()}, samples


def throughput(model, batch, runs, warmup):
    """Images per second at `batch` (median over runs) and CPU use during the runs (% of usable cores)."""
    x = tf.constant(fixed_input(model, batch))
    fn = compiled_call(model)
    for _ in range(warmup):
        np.asarray(fn(x))
    proc = psutil.Process()
    cpu0, wall0 = proc.cpu_times(), time.perf_counter()
    samples = time_calls(fn, x, runs, 0, f"throughput batch {batch}")
    cpu1, wall = proc.cpu_times(), time.perf_counter() - wall0
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"throughput_ips": batch / float(np.median(samples)),
            "cpu_utilisation_pct": 100.0 * busy / wall / usable_cores()}


def flops_per_image(model):
    """FLOPs of one batch-1 forward pass (a multiply-add counts 2), from the frozen graph."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph
    from tensorflow.python.util import deprecation

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *model.input_shape[1:]), model.input.dtype))
    _, graph_def = convert_variables_to_constants_v2_as_graph(fn)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        # The v1 profiler is the FLOPs counter TensorFlow has; its own use of a v1 API is not the user's to fix.
        with deprecation.silence():
            info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                                 options=opts)
    return int(info.total_float_ops)


def weights_mb(model):
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights) / MB


def size_report(model, path):
    """Parameter counts and sizes: what must agree between a model in memory and its file."""
    return {
        "params_total": int(model.count_params()),
        "params_trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "weights_mb": weights_mb(model),
        "size_mb": os.path.getsize(path) / MB,
    }


CONVERTER_TAIL_LINES = 30  # of the converter's output, added to its error when a conversion fails


# TFLite: float32, float16 weights, dynamic-range int8 weights.
def tflite_export(model, kind):
    """The model as a TFLite flatbuffer. The converter prints ~100 lines per model (Keras'
    export lists every captured variable, MLIR and SavedModel-loader logs): they are caught
    and dropped, and on a failure their last lines are added to the error raised."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind in ("fp16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    failure = None
    with quiet.captured((1, 2)) as out:
        try:
            content = converter.convert()
        except Exception as e:  # noqa: BLE001 (re-raised below, with what the converter printed)
            failure = e
    if failure is not None:
        if out.text.strip():
            failure.add_note(f"TFLite {kind} conversion output (last {CONVERTER_TAIL_LINES} lines):\n"
                             f"{out.tail(CONVERTER_TAIL_LINES)}")
        raise failure
    return content


def tflite_interpreter(content, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter  # the maintained runtime
    except ImportError:  # pragma: no cover - falls back to TensorFlow's deprecated copy
        Interpreter = tf.lite.Interpreter
    with quiet.filtered(quiet.XNNPACK_INFO):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def tflite_runner(interpreter):
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)
    return run


def tflite_report(model, kind, x_eval, y_eval, runs, warmup, out_dir):
    """Size, batch-1 latency and accuracy on (x_eval, y_eval) of one TFLite variant."""
    content = tflite_export(model, kind)
    path = Path(out_dir) / f"model_{kind}.tflite"
    path.write_bytes(content)
    run = tflite_runner(tflite_interpreter(content, usable_cores()))
    x = fixed_input(model, 1)
    lat = percentiles_ms(time_calls(run, x, runs, warmup, f"tflite {kind} latency"))
    predicted = np.array([run(x_eval[i:i + 1]).argmax() for i in tqdm(range(len(x_eval)), desc=f"tflite {kind} accuracy",
                                                                       leave=False)])
    return {"size_mb": len(content) / MB, **{f"latency_{k}_ms": v for k, v in lat.items()},
            "accuracy": float(np.mean(predicted == y_eval))}
