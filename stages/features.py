"""Stage features: run the frozen backbone over train and val once and keep
its pooled outputs (data/features/{train,val}.npz), so head training and
tuning never run the backbone over the dataset again. Keyed by DVC on
(model, image_size, weights): head hyperparameters do not invalidate it.
The backbone's weights are kept beside the features (backbone.weights.h5),
so the train stage fine-tunes exactly the backbone that made them."""
import json
import time

from core import hardware, models
from core import params as P
from core.io import atomic_dir, load_npz, save_npz, write_json
from core.training import extract_features


def main(params, data_dir="data/cifar10", out_dir="data/features"):
    name = params["model"]
    entry = models.entry(name)
    size = models.input_size(name, P.number(params, "image_size", 32, 1024, integer=True))
    batch_size = P.number(params, "features.batch_size", 1, integer=True)
    hardware.configure(P.number(params, "seed", integer=True))
    info = {"model": name, "image_size": size, "weights": str(params["weights"]), "frozen_phase": entry.pretrained}
    with atomic_dir(out_dir) as tmp:
        if entry.pretrained:
            backbone = models.build_backbone(name, size, params["weights"])
            backbone.save_weights(tmp / "backbone.weights.h5")
            start = time.perf_counter()
            for split in ("train", "val"):
                data = load_npz(f"{data_dir}/{split}.npz")
                f = extract_features(backbone, data["x"], size, entry.preprocess, batch_size)
                save_npz(tmp / f"{split}.npz", x=f, y=data["y"])
                info[f"{split}_shape"] = list(f.shape)
            info["extract_time_s"] = round(time.perf_counter() - start, 2)
        write_json(tmp / "info.json", info)
    print(json.dumps(info))


if __name__ == "__main__":
    from core.cli import run
    run(main)
