"""Stage profile: what the trained model costs to run, and what a mobile runtime changes.

Batch-1 latency percentiles of the compiled model, throughput at a larger
batch with CPU use, FLOPs, parameters, file and weight sizes, process memory,
and TFLite float32 / float16 / dynamic-range int8 exports with their size,
latency and accuracy on a fixed seeded subset of the CIFAR-10 test split.
Writes metrics/profile.json (units in key names), metrics/conditions/profile.json
(the machine, versions, input and run counts the figures were measured under)
and models/tflite/ (the exports and an info.json listing them).
"""
from core.profiling import rss_mb

RSS_AFTER_IMPORT_MB = rss_mb()  # baseline: the TensorFlow runtime alone, before any model is loaded

import numpy as np  # noqa: E402

from core import profiling as prof  # noqa: E402
from core.data import random_subset  # noqa: E402
from core.contracts import load_images, load_model, read_dataset_info  # noqa: E402
from core.io import atomic_dir, atomic_path, write_json  # noqa: E402
from core.params import TFLITE_KINDS, subset  # noqa: E402
from core.stage import start  # noqa: E402
from core.pipeline import predict_images  # noqa: E402


def run_costs(model, model_path, checked, timed):
    """Size, memory, batch-1 latency, throughput and FLOPs of the model as users run it (raw uint8 images in,
    resizing and preprocessing included). `timed(step)` times each measurement (Start.timed)."""
    warmup, runs = checked["profile.warmup_runs"], checked["profile.latency_runs"]
    rss_load = rss_mb()
    result = {**prof.size_report(model, model_path),
              "rss_after_import_mb": RSS_AFTER_IMPORT_MB, "rss_after_load_mb": rss_load,
              "rss_growth_on_load_mb": rss_load - RSS_AFTER_IMPORT_MB}
    with timed("latency"):
        result.update(prof.latency(model, runs, warmup)[0])
    with timed("throughput"):
        result.update(prof.throughput(model, checked["profile.batch_size"], checked["profile.throughput_runs"],
                                      warmup))
    # What a user's process needs: import, load and inference. Read before the FLOPs count,
    # which freezes the graph into constants (a second copy of the weights), and TFLite.
    result["peak_rss_mb"] = prof.peak_rss_mb()
    with timed("flops"):
        result["flops_per_image"] = prof.flops_per_image(model)
    result["gflops_per_image"] = result["flops_per_image"] / 1e9
    return result


def tflite_exports(model, name, kinds, eval_set, checked, out_dir, timed):
    """Each TFLite variant's size, latency and accuracy on a fixed seeded subset of the test split, beside the
    Keras model's accuracy on the same images; the exports and an info.json listing them go to `out_dir` (the
    temporary directory that replaces models/tflite with the metrics)."""
    x_eval, y_eval = eval_set["x"], eval_set["y"]
    with timed("keras_eval_images"):
        result = {"keras_accuracy_on_eval_images": float(np.mean(predict_images(model, x_eval, 64).argmax(1) == y_eval))}
    for kind in kinds:
        with timed(f"tflite_{kind}"):
            report = prof.tflite_report(model, kind, x_eval, y_eval, checked["profile.latency_runs"],
                                        checked["profile.warmup_runs"], out_dir)
        result.update({f"tflite_{kind}_{k}": v for k, v in report.items()})
    # What the directory holds, always: DVC warns about an empty output ("'models/tflite' is empty").
    info = {"model": name, "exports": {k: f"model_{k}.tflite" for k in kinds}}
    if not kinds:
        info["why_empty"] = "params.yaml: `profile.tflite` is []: no TFLite export asked for"
    write_json(out_dir / "info.json", info)
    return result


def main(params, data_dir="data/cifar10", model_path="models/model.keras", metrics_path="metrics/profile.json",
         conditions_path="metrics/conditions/profile.json", export_dir="models/tflite"):
    kinds = subset(params, "profile.tflite", TFLITE_KINDS)
    job = start(params, "profile")
    name, checked = job.name, job.checked
    model = load_model(model_path)
    result = run_costs(model, model_path, checked, job.timed)
    test = load_images(f"{data_dir}/test.npz", len(read_dataset_info(data_dir)["classes"]))
    eval_set = random_subset(test, checked["profile.tflite_eval_images"], checked["data_seed"])
    # The exports, metrics and conditions replace the previous ones together, once all are written: a run that
    # fails leaves the previous set, consistent.
    with atomic_dir(export_dir) as exports, atomic_path(metrics_path) as metrics_tmp, \
            atomic_path(conditions_path) as conditions_tmp:
        result.update(tflite_exports(model, name, kinds, eval_set, checked, exports, job.timed))
        conditions = {"model": name, "image_size": prof.backbone_size(model), **prof.conditions(model),
                      "input": f"uint8 {tuple(model.input_shape[1:])}, resized and preprocessed inside the model "
                      "(included in every timing)", "latency_batch_size": 1,
                      "latency_runs": checked["profile.latency_runs"], "warmup_runs": checked["profile.warmup_runs"],
                      "throughput_batch_size": checked["profile.batch_size"],
                      "throughput_runs": checked["profile.throughput_runs"], "tflite_eval_images": len(eval_set["y"]),
                      "wall_s": job.timings()}
        write_json(metrics_tmp, {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
        write_json(conditions_tmp, conditions)
    print(f"{name}: batch-1 p50 {result['latency_p50_ms']:.2f} ms, p90 {result['latency_p90_ms']:.2f} ms, "
          f"{result['throughput_ips']:.0f} img/s at batch {checked['profile.batch_size']}, {result['size_mb']:.2f} MB")


if __name__ == "__main__":
    from core.cli import run
    run(main)
