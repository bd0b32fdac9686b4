"""Stage features: build the trunk (raw images -> resize -> preprocessing -> backbone -> pooled features)
once, save it whole (data/features/trunk.keras), and for two-phase models keep its outputs on train and val
(data/features/{train,val}.npz), so head training and tuning never run the backbone over the dataset again.
The train stage puts its head on this very trunk: the network that made the features is the one fine-tuned
and shipped.

Reads data/params/features.json (stage resolve_params): (model, image_size, weights, features.batch_size)
for a pretrained backbone, the model alone for basecnn, which always runs at 32 px from random weights, so
neither head params nor, for basecnn, image_size and weights rerun it. Its outputs are a function of those
params and the data: the extraction time goes to metrics/conditions/features.json. info.json names the weights
file loaded (weights_file, weights_sha256), which train records in its conditions."""
import hashlib
import json
from pathlib import Path

from core import models
from core.contracts import load_images, read_dataset_info
from core.io import atomic_dir, save_keras, save_npz, write_json
from core.params import weights_source
from core.pipeline import predict_images
from core.reads import params_path
from core.stage import start


def weights_record(path):
    """Which weights file the backbone was loaded from, by name and content, the same on any machine: the name
    Keras gives it (the file `weights: imagenet` downloads, or the one a `weights` directory supplied) or yours,
    and its sha256. None for both from random weights."""
    if path is None:
        return {"weights_file": None, "weights_sha256": None}
    with open(path, "rb") as f:
        return {"weights_file": Path(path).name, "weights_sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def main(params, data_dir="data/cifar10", out_dir="data/features",
         conditions_path="metrics/conditions/features.json"):
    job = start(params, "features")
    name, two_phase = job.name, job.entry.two_phase
    dataset = read_dataset_info(data_dir)
    image_shape = dataset["image_shape"]
    size = models.input_size(name, job.params.get("image_size"))  # not read for basecnn (fixed at 32 px)
    weights = str(job.params["weights"]) if two_phase else "none"
    weights_source(weights)  # a path that does not exist is refused before any work
    info = {"model": name, "image_size": size, "weights": weights, "image_shape": image_shape,
            "frozen_phase": two_phase}
    conditions = {"model": name, "hardware": job.plan}
    with atomic_dir(out_dir) as tmp:
        with job.timed("build"):
            trunk, weights_file = models.trunk_and_weights_file(name, image_shape, size, weights)
            info.update(weights_record(weights_file))
            save_keras(trunk, tmp / "trunk.keras")
        if two_phase:
            # features.precision: bfloat16 where the CPU has it natively (`auto`), on a copy; the trunk saved above,
            # which phase 2 fine-tunes and the model ships, stays float32.
            extractor, conditions["compute_dtype"] = models.in_policy(
                trunk, job.checked["features.precision"], job.plan, job.entry.cpu_bfloat16)
            for split in ("train", "val"):
                with job.timed(f"extract_{split}"):
                    data = load_images(f"{data_dir}/{split}.npz", len(dataset["classes"]),
                                       image_shape=image_shape)
                    f = predict_images(extractor, data["x"], job.checked["features.batch_size"])
                    save_npz(tmp / f"{split}.npz", x=f, y=data["y"])
                info[f"{split}_shape"] = list(f.shape)
        write_json(tmp / "info.json", info)
    conditions["wall_s"] = job.timings()
    write_json(conditions_path, conditions)
    print(json.dumps({**info, "wall_s": conditions["wall_s"]}))


if __name__ == "__main__":
    from core.cli import run
    run(main, params_path("features"))
