"""Stage features: build the trunk (raw images -> resize -> preprocessing ->
backbone -> pooled features) once, save it whole (data/features/trunk.keras),
and for two-phase models keep its outputs on train and val
(data/features/{train,val}.npz), so head training and tuning never run the
backbone over the dataset again. The train stage puts its head on this very
trunk: the network that made the features is the one fine-tuned and shipped.
Keyed by DVC on (model, image_size, weights): head params do not invalidate it."""
import json
import time

from core import hardware, models
from core import params as P
from core.io import atomic_dir, load_npz, save_npz, write_json
from core.training import predict


def main(params, data_dir="data/cifar10", out_dir="data/features"):
    name = params["model"]
    entry = models.entry(name)
    size = models.input_size(name, P.number(params, "image_size", 32, 1024, integer=True))
    batch_size = P.number(params, "features.batch_size", 1, integer=True)
    hardware.configure(P.number(params, "seed", integer=True))
    image_shape = json.loads(open(f"{data_dir}/info.json").read())["image_shape"]
    info = {"model": name, "image_size": size, "weights": str(params["weights"]), "image_shape": image_shape,
            "frozen_phase": entry.pretrained}
    with atomic_dir(out_dir) as tmp:
        trunk = models.build_trunk(name, image_shape, size, params["weights"])
        trunk.save(tmp / "trunk.keras")
        if entry.pretrained:
            start = time.perf_counter()
            for split in ("train", "val"):
                data = load_npz(f"{data_dir}/{split}.npz")
                f = predict(trunk, data["x"], batch_size)
                save_npz(tmp / f"{split}.npz", x=f, y=data["y"])
                info[f"{split}_shape"] = list(f.shape)
            info["extract_time_s"] = round(time.perf_counter() - start, 2)
        write_json(tmp / "info.json", info)
    print(json.dumps(info))


if __name__ == "__main__":
    from core.cli import run
    run(main)
