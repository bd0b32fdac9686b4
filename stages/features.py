"""Stage features: build the trunk (raw images -> resize -> preprocessing ->
backbone -> pooled features) once, save it whole (data/features/trunk.keras),
and for two-phase models keep its outputs on train and val
(data/features/{train,val}.npz), so head training and tuning never run the
backbone over the dataset again. The train stage puts its head on this very
trunk: the network that made the features is the one fine-tuned and shipped.
Keyed by DVC on (model, image_size, weights): head params do not invalidate it."""
import json
import time

from core import models
from core.contracts import load_images, read_dataset_info
from core.io import atomic_dir, save_npz, write_json
from core.stage import start
from core.training import predict_images


def main(params, data_dir="data/cifar10", out_dir="data/features"):
    job = start(params, "features")
    name, size, batch_size = job.name, job.image_size, job.checked["features.batch_size"]
    dataset = read_dataset_info(data_dir)
    image_shape = dataset["image_shape"]
    info = {"model": name, "image_size": size, "weights": str(params["weights"]), "image_shape": image_shape,
            "frozen_phase": job.entry.two_phase}
    with atomic_dir(out_dir) as tmp:
        trunk = models.build_trunk(name, image_shape, size, params["weights"])
        trunk.save(tmp / "trunk.keras")
        if job.entry.two_phase:
            began = time.perf_counter()
            for split in ("train", "val"):
                data = load_images(f"{data_dir}/{split}.npz", len(dataset["classes"]), image_shape=image_shape)
                f = predict_images(trunk, data["x"], batch_size)
                save_npz(tmp / f"{split}.npz", x=f, y=data["y"])
                info[f"{split}_shape"] = list(f.shape)
            info["extract_time_s"] = round(time.perf_counter() - began, 2)
        write_json(tmp / "info.json", info)
    print(json.dumps(info))


if __name__ == "__main__":
    from core.cli import run
    run(main)
