"""Benchmark: the from-scratch baseline's training recipes side by side, in one process.

Each recipe trains basecnn from the same seed on the same images (data/cifar10, as the download stage wrote
it; `--fraction` keeps a seeded share of each class of train for a shorter run), through the train stage's
own functions (core.training.train_from_scratch, core.pipeline), and is scored on val and on the test split.
Recipes alternate, `--repeats` times; times are medians.

  old  rotation 0.03 + zoom 0.1 + flip, no label smoothing, and the schedule as it was before issue 17:
       CosineDecay's decay steps counted from after the warm-up, so training stopped at about a tenth of the
       peak rate;
  new  params.yaml's train.scratch and train.augment (the train stage's defaults).

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
from core.training import predict_images, train_from_scratch, warmup_cosine

OLD = {"augment": {"flip": True, "translate": 0.0, "rotation": 0.03, "zoom": 0.1}, "label_smoothing": 0.0,
       "warmup_fraction": 0.2}


def old_schedule(peak, steps, warmup_fraction):
    """Before issue 17: decay_steps = all the steps, counted after the warm-up, so the cosine never finished."""
    return keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=peak,
                                                  warmup_steps=int(steps * warmup_fraction))


def train_once(recipe, t, data, seed):
    """Train basecnn with one recipe; its figures and wall time."""
    s = {**t["scratch"], **{k: recipe[k] for k in ("label_smoothing", "warmup_fraction")}}
    keras.utils.set_random_seed(seed)
    trunk = models.build_trunk("basecnn", data["train"]["x"].shape[1:], 32, "none")
    model, _ = models.build_model(trunk, 10, t["head"]["units"], t["head"]["dropout"])
    augment = augmenter(seed=seed, **recipe["augment"])
    train = image_batches(data["train"]["x"], data["train"]["y"], t["batch_size"], seed, augment)
    val = image_batches(data["val"]["x"], data["val"]["y"], t["batch_size"])
    h, seconds, best = train_from_scratch(model, s["learning_rate"], s["weight_decay"], train, val, s["epochs"],
                                          t["patience"], (), s["warmup_fraction"], s["watch_from_fraction"],
                                          s["label_smoothing"], recipe.get("schedule", warmup_cosine))
    accuracy = {split: float(np.mean(predict_images(model, data[split]["x"], 256).argmax(1) == data[split]["y"]))
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
    hardware.configure(seed)
    data = {split: load_images(f"data/cifar10/{split}.npz", 10) for split in ("train", "val", "test")}
    if args.fraction < 1:  # the download stage's train_fraction, on the arrays
        keep = split_stratified(data["train"]["y"], args.fraction, seed)[1]
        data["train"] = {k: v[keep] for k, v in data["train"].items()}
    recipes = {"old": {**OLD, "schedule": old_schedule},
               "new": {"augment": t["augment"], **{k: t["scratch"][k] for k in ("label_smoothing", "warmup_fraction")}}}
    runs = {name: [] for name in recipes}
    for _ in range(args.repeats):
        for name, recipe in recipes.items():
            runs[name].append(train_once(recipe, t, data, seed))
    write_json(args.out, {"args": vars(args), "train_images": len(data["train"]["y"]), "epochs": t["scratch"]["epochs"],
                          "recipes": {n: {k: v for k, v in r.items() if k != "schedule"} for n, r in recipes.items()},
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
