"""Benchmark: from-scratch recipes for basecnn side by side in one process, on the same images.

Each --recipe is NAME[:key=value,...], overrides of params' train.scratch (values read as DVC reads params) and bench
knobs: `widths=32/128/128` (basecnn's widths), `net=resnet9` (the residual network basecnn had before the
whitened one), `decay_all=true` (weight decay on every weight, BatchNorm and biases included, as the recipe
did before it excluded them), `ema=0.9,ema_every=5` (Keras' moving average of the weights, written over them
every 5 steps: a lookahead, as airbench's), `batch_size=512` and `translate=0.0625` (any of train.augment's keys)
for this recipe. Each recipe trains as the train stage trains basecnn (core.training.scratch_network and
train_from_scratch, the stage's augmentation and batches, its precision rule), the recipes alternated `--repeats`
times so that a slower spell of the machine hits all alike, and is scored on val and test as the stage ships it
(core.models.for_deployment), single view and with flip TTA. After the data stage (data/cifar10):

  python -m bench.scratch --recipe now --recipe before:net=resnet9,decay_all=true,optimizer=adamw,\
      learning_rate=0.003,weight_decay=0.0005,label_smoothing=0.1 [--fraction 0.25] [--repeats 1]
"""
import argparse
import contextlib
import functools
import json
import statistics
import time
from unittest import mock

import numpy as np

from core import hardware, models, training
from core.contracts import load_images
from core.io import write_json
from core.params import load as load_params
from core.pipeline import augmenter, image_batches
from core.registry import REGISTRY
from core.runtime import keras


AUGMENT = ("flip", "translate", "rotation", "zoom")
KNOBS = ("widths", "decay_all", "net", "ema", "ema_every", "batch_size", *AUGMENT)


def parse_recipe(text):
    """"name:key=value,key=value" -> (name, {key: value read as DVC reads params, YAML 1.2: 3e-3 is a float}); a
    bare name is the params' recipe."""
    name, _, rest = text.partition(":")
    overrides = {}
    from dvc.utils.serialize import parse_yaml
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--recipe {text!r}: {item!r} is not key=value")
        overrides[key] = [int(w) for w in value.split("/")] if key == "widths" else parse_yaml(f"v: {value}", text)["v"]
    return name, overrides


def subset(data, fraction, seed):
    """A seeded share of each class (the whole set at 1)."""
    if fraction >= 1:
        return data
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(data["y"] == c))[:round(fraction * np.sum(data["y"] == c))]
                                   for c in np.unique(data["y"])]))
    return {"x": data["x"][keep], "y": data["y"][keep]}


def resnet9_cnn(include_top=False, weights=None, input_shape=(32, 32, 3), widths=(24, 48, 96, 192)):
    """basecnn before the whitened network: a residual CNN after Page's ResNet-9 at 3/8 of its width, each stage
    pooling before its conv, 929k parameters (the `before` recipe's network)."""
    def conv(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))

    inputs = keras.Input(input_shape)
    x = conv(inputs, widths[0])
    for filters, residual in zip(widths[1:], (True, False, True)):
        x = conv(keras.layers.MaxPooling2D()(x), filters)
        if residual:
            x = keras.layers.Add()([x, conv(conv(x, filters), filters)])
    x = keras.layers.MaxPooling2D(x.shape[1])(x)
    return keras.Model(inputs, x, name="basecnn")


def lookahead(make, momentum, every):
    """An optimizer factory like `make` whose optimizer keeps Keras' moving average of the weights and writes it
    over them every `every` steps."""
    def build(rate, weight_decay):
        optimizer = make(rate, weight_decay)
        return type(optimizer).from_config({**optimizer.get_config(), "use_ema": True, "ema_momentum": momentum,
                                            "ema_overwrite_frequency": every})
    return build


def train_one(overrides, params, data, plan):
    """One recipe trained and scored: its figures and training time."""
    t = params["train"]
    s = {**t["scratch"], **{k: v for k, v in overrides.items() if k not in KNOBS}}
    batch_size = overrides.get("batch_size", t["batch_size"])
    keras.utils.set_random_seed(params["seed"])
    net = resnet9_cnn if overrides.get("net") == "resnet9" else models.base_cnn
    if "widths" in overrides:
        net = functools.partial(net, widths=tuple(overrides["widths"]))
    augment = augmenter(seed=params["seed"], **{**t["augment"], **{k: overrides[k] for k in AUGMENT if k in overrides}})
    batches = lambda d, seed=None, aug=None: image_batches(d["x"], d["y"], batch_size, seed, aug)  # noqa: E731
    with contextlib.ExitStack() as patches:  # the stage's own functions, with the knobs patched in while they run
        patches.enter_context(mock.patch.object(models, "base_cnn", net))  # the registry looks it up by name
        if overrides.get("decay_all"):
            patches.enter_context(mock.patch.object(training, "NO_DECAY", []))
        if overrides.get("ema"):
            patches.enter_context(mock.patch.object(training, "OPTIMIZERS", {
                name: lookahead(make, overrides["ema"], overrides.get("ema_every", 5))
                for name, make in training.OPTIMIZERS.items()}))
        trunk = models.build_trunk("basecnn", data["train"]["x"].shape[1:], 32, "none")
        model = training.scratch_network(trunk, 10, s, plan, REGISTRY["basecnn"].cpu_bfloat16, data["train"]["x"])
        h, seconds, best = training.train_from_scratch(model, s, batches(data["train"], params["seed"], augment),
                                                       batches(data["val"]), t["patience"])
    out = {"train_time_s": round(seconds, 1), "epochs": len(h["loss"]), "best_epoch": best + 1,
           "params": model.count_params()}
    for tta in (False, True):
        shipped = models.for_deployment(model, flip_tta=tta)
        for split in ("val", "test"):
            out[f"{split}_accuracy{'_flip_tta' if tta else ''}"] = round(
                shipped.evaluate(batches(data[split]), verbose=0)[1], 4)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", action="append", required=True, help="NAME[:key=value,...] (see above)")
    ap.add_argument("--data", default="data/cifar10")
    ap.add_argument("--fraction", type=float, default=1.0, help="seeded share of each class of train")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="bench/results/scratch.json")
    args = ap.parse_args()
    params = load_params("params.yaml")
    plan = hardware.configure(params["seed"])
    data = {split: load_images(f"{args.data}/{split}.npz", 10) for split in ("train", "val", "test")}
    data["train"] = subset(data["train"], args.fraction, params["data_seed"])
    recipes = [parse_recipe(r) for r in args.recipe]
    runs = {name: [] for name, _ in recipes}
    for _ in range(args.repeats):
        for name, overrides in recipes:
            start = time.perf_counter()
            runs[name].append(train_one(overrides, params, data, plan))
            print(json.dumps({"recipe": name, **runs[name][-1], "wall_s": round(time.perf_counter() - start, 1)}),
                  flush=True)
    summary = {name: {"overrides": dict(recipes)[name], "runs": r,
                      "train_time_s_median": statistics.median(x["train_time_s"] for x in r)}
               for name, r in runs.items()}
    write_json(args.out, {"fraction": args.fraction, "train_images": len(data["train"]["y"]), "recipes": summary})


if __name__ == "__main__":
    main()
