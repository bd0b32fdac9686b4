"""Benchmark: from-scratch recipes for basecnn side by side in one process, on the same images.

Each --recipe is NAME[:key=value,...], overrides of params' train.scratch (values read as DVC reads params) and bench
knobs: `widths=32/128/128` (basecnn's widths), `net=resnet9` (the residual network basecnn had before the
whitened one), `decay_all=true` (weight decay on every weight, BatchNorm and biases included, as the recipe
did before it excluded them), `ema=0.9,ema_every=5` (Keras' moving average of the weights, written over them
every 5 steps: a lookahead, as airbench's), `ramp=true` (airbench's lookahead itself: every 5 steps an average
of all the network's weights, BatchNorm's statistics included, written over them, its decay rising as the cube of
the share of training done to 0.95^5), `alternate=true` (airbench's alternating flip instead of a random one),
`dirac=true` (airbench's partial identity initialisation of the 3x3 convs), `seed=43` (params' seed: the
initialisation, shuffling and augmentation; the images stay the same), `batch_size=512` and
`translate=0.0625` (any of train.augment's keys) for this recipe. Each recipe trains as the train stage trains
basecnn (core.training.scratch_network and train_from_scratch, the stage's augmentation and batches, its
precision rule), the recipes alternated `--repeats` times so that a slower spell of the machine hits all alike,
and is scored on val and test as the stage ships it (core.models.for_deployment), single view and with flip
TTA. After the data stage (data/cifar10):

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
from core.data import balanced_subset
from core.io import write_json
from core.params import load as load_params
from core.pipeline import augmenter, batched, image_batches
from core.registry import REGISTRY
from core.runtime import keras, tf


AUGMENT = ("flip", "translate", "rotation", "zoom")
KNOBS = ("seed", "widths", "decay_all", "net", "ema", "ema_every", "ramp", "alternate", "dirac", "batch_size",
         *AUGMENT)


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
    """A seeded share of each class (the whole set at 1): core.data.balanced_subset's images, as many of each
    class as `fraction` of the rarest."""
    if fraction >= 1:
        return data
    keep = balanced_subset(data["y"], round(fraction * np.bincount(data["y"]).min()), seed, "--fraction")
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


class RampedLookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps the running average of all the model's weights (BatchNorm's
    moving statistics too, which Keras' use_ema leaves out) moves towards them with decay
    `base` x (share of the `total_steps` done)^`power`, and is written over them."""

    def __init__(self, total_steps, every=5, base=0.95 ** 5, power=3):
        super().__init__()
        self.total_steps, self.every, self.base, self.power = total_steps, every, base, power

    def on_train_begin(self, logs=None):
        self.average, self.step = [w.numpy() for w in self.model.weights], 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            decay = self.base * (self.step / self.total_steps) ** self.power
            for average, weight in zip(self.average, self.model.weights):
                average[...] = decay * average + (1 - decay) * weight.numpy()
                weight.assign(average)


def alternating_flip_batches(x, y, batch_size, seed, augment):
    """image_batches' training batches with airbench's alternating flip instead of a random one: a seeded half of
    the images is mirrored in even epochs, the other half in odd ones, so each is seen both ways every two
    epochs. `augment` must not flip."""
    mirrored = np.random.default_rng(seed).random(len(x)) < 0.5
    epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
    images = tf.data.Dataset.from_tensor_slices((x, y, mirrored)).shuffle(len(x), seed=seed,
                                                                           reshuffle_each_iteration=True)

    def one_pass(_):
        odd = tf.cast(epoch.assign_add(1) % 2, tf.bool)  # once per iterator: Keras makes one per epoch
        return images.map(lambda xi, yi, mi: (tf.where(mi != odd, tf.reverse(xi, [1]), xi), yi))
    ds = tf.data.Dataset.from_tensors(0).flat_map(one_pass)
    return batched(ds.apply(tf.data.experimental.assert_cardinality(len(x))), batch_size, augment)


def identity_init(model):
    """airbench's partial identity initialisation: in each 3x3 conv of the backbone, the first min(in, out)
    filters start as a Dirac kernel, filter i passing input channel i through (an implicit residual at the
    start); the other filters keep their random initialisation."""
    for layer in model.get_layer(models.BACKBONE).layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3):
            kernel = layer.kernel.numpy()
            n = min(kernel.shape[2:])
            kernel[..., :n] = 0.0
            kernel[1, 1, np.arange(n), np.arange(n)] = 1.0
            layer.kernel.assign(kernel)


def train_one(overrides, params, data, plan):
    """One recipe trained and scored: its figures and training time."""
    t = params["train"]
    s = {**t["scratch"], **{k: v for k, v in overrides.items() if k not in KNOBS}}
    batch_size = overrides.get("batch_size", t["batch_size"])
    seed = overrides.get("seed", params["seed"])
    keras.utils.set_random_seed(seed)
    net = resnet9_cnn if overrides.get("net") == "resnet9" else models.base_cnn
    if "widths" in overrides:
        net = functools.partial(net, widths=tuple(overrides["widths"]))
    augment = {**t["augment"], **{k: overrides[k] for k in AUGMENT if k in overrides}}
    alternate = overrides.get("alternate") and augment["flip"]
    augment = augmenter(seed=seed, **{**augment, "flip": augment["flip"] and not alternate})

    def batches(d, shuffle_seed=None, aug=None):
        return image_batches(d["x"], d["y"], batch_size, shuffle_seed, aug)

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
        if overrides.get("dirac"):
            identity_init(model)
        train = alternating_flip_batches(data["train"]["x"], data["train"]["y"], batch_size, seed, augment) \
            if alternate else batches(data["train"], seed, augment)
        callbacks = [RampedLookahead(s["epochs"] * int(train.cardinality()))] if overrides.get("ramp") else []
        h, seconds, best = training.train_from_scratch(model, s, train, batches(data["val"]), t["patience"], callbacks)
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
