"""Benchmark: the from-scratch baseline's training recipes side by side, in one process.

Each recipe trains basecnn from the same seed on the same images (data/cifar10, as the download stage wrote
it; `--fraction` keeps a seeded share of each class of train for a shorter run), through the train stage's
own functions (core.training.train_from_scratch, core.pipeline), and is scored on val and on the test split.
Recipes alternate, `--repeats` times; times are medians.

  old  the recipe before issue 17: the VGG-style basecnn (old_trunk) with a 256-unit head, 12 epochs of AdamW
       at 0.003, head dropout 0.3, float32, rotation 0.03 + zoom 0.1 + flip,
       no label smoothing, no test-time augmentation, and CosineDecay's decay steps counted from after the
       warm-up, so training stopped at about a tenth of the peak rate;
  new  params.yaml's train.scratch and train.augment (the train stage's defaults).

Both are scored as the train stage ships them (core.models.for_deployment: float32, flip TTA if the recipe
has it).

  python -m bench.scratch_recipes --fraction 0.25 --repeats 2
Prints a markdown table and writes bench/results/scratch_recipes.json.
"""
import argparse
import statistics

import numpy as np

from core import hardware, models
from core.contracts import load_images
from core.data import split_stratified
from core.io import write_json
from core.params import load as load_params
from core.pipeline import augmenter, image_batches
from core.profiling import conditions
from core.runtime import keras
from core.pipeline import predict_images
from core.training import scratch_model, train_from_scratch, warmup_cosine

# The recipe before issue 17, in full (params.yaml's train.scratch keys, plus augment).
OLD = {"augment": {"flip": True, "translate": 0.0, "rotation": 0.03, "zoom": 0.1},
       "scratch": {"epochs": 12, "learning_rate": 0.003, "weight_decay": 0.0005, "warmup_fraction": 0.2,
                   "watch_from_fraction": 0.5, "label_smoothing": 0.0, "optimizer": "adamw", "units": 256, "dropout": 0.3,
                   "precision": "float32", "flip_tta": False}}


def old_trunk():
    """basecnn's trunk before issue 17: a VGG-style CNN, three blocks of two 3x3 conv + BatchNorm + ReLU then a
    2x2 max-pool (32, 64, 128 filters; 324k parameters with its old head), average-pooled."""
    image = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255, name="preprocess")(image)
    for filters in (32, 64, 128):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.MaxPooling2D()(x)
    return keras.Model(image, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="basecnn_trunk")


def old_schedule(peak, steps, warmup_fraction):
    """Before issue 17: decay_steps = all the steps, counted after the warm-up, so the cosine never finished."""
    return keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=peak,
                                                  warmup_steps=int(steps * warmup_fraction))


def train_once(recipe, t, data, seed, plan):
    """Train basecnn with one recipe; its figures and wall time."""
    s = recipe["scratch"]
    keras.utils.set_random_seed(seed)
    trunk = recipe["trunk"]() if "trunk" in recipe else models.build_trunk("basecnn", (32, 32, 3), 32, "none")
    model = scratch_model(trunk, 10, s, hardware.compute_policy(s["precision"], plan))
    augment = augmenter(seed=seed, **recipe["augment"])
    train = image_batches(data["train"]["x"], data["train"]["y"], t["batch_size"], seed, augment)
    val = image_batches(data["val"]["x"], data["val"]["y"], t["batch_size"])
    h, seconds, best = train_from_scratch(model, s, train, val, t["patience"], (),
                                          recipe.get("schedule", warmup_cosine))
    shipped = models.for_deployment(model, s["flip_tta"])  # what the train stage ships: float32, maybe flip TTA
    accuracy = {split: float(np.mean(predict_images(shipped, data[split]["x"], 256).argmax(1) == data[split]["y"]))
                for split in ("val", "test")}
    epochs = len(h["loss"])
    return {**accuracy, "epochs": epochs, "best_epoch": best + 1, "seconds": seconds,
            "images_per_s": epochs * len(data["train"]["y"]) / seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=1.0, help="share of each class of train.npz trained on")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/results/scratch_recipes.json")
    args = ap.parse_args()
    params = load_params("params.yaml")
    t, seed = params["train"], params["seed"]
    plan = hardware.configure(seed)
    data = {split: load_images(f"data/cifar10/{split}.npz", 10) for split in ("train", "val", "test")}
    if args.fraction < 1:  # the download stage's train_fraction, on the arrays
        keep = split_stratified(data["train"]["y"], args.fraction, seed)[1]
        data["train"] = {k: v[keep] for k, v in data["train"].items()}
    recipes = {"old": {**OLD, "schedule": old_schedule, "trunk": old_trunk},
               "new": {"augment": t["augment"], "scratch": t["scratch"]}}
    runs = {name: [] for name in recipes}
    for _ in range(args.repeats):
        for name, recipe in recipes.items():
            runs[name].append(train_once(recipe, t, data, seed, plan))
    write_json(args.out, {"args": vars(args), "train_images": len(data["train"]["y"]),
                          "recipes": {n: {k: v for k, v in r.items() if k not in ("schedule", "trunk")} for n, r in recipes.items()},
                          "runs": runs, "conditions": conditions()})
    print(f"| recipe | test accuracy (%) | val accuracy (%) | epochs (best) | training time (s, median of "
          f"{args.repeats}) | train images/s, validation included |\n|---|---|---|---|---|---|")
    for name, r in runs.items():
        med = {k: statistics.median(x[k] for x in r) for k in ("seconds", "images_per_s")}
        first = r[0]  # op determinism: every repeat of a recipe gives the same figures on one machine
        print(f"| {name} | {100 * first['test']:.2f} | {100 * first['val']:.2f} | {first['epochs']} "
              f"({first['best_epoch']}) | {med['seconds']:.0f} | {med['images_per_s']:.0f} |")


if __name__ == "__main__":
    main()
