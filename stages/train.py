"""Stage train: two-phase transfer learning (Keras guide), or end to end for basecnn.

Both recipes start from the trunk the features stage saved (data/features/trunk.keras)
and put a new head on it. Two-phase: phase 1 trains the head on the trunk's
cached outputs; phase 2 unfreezes the top of the backbone, BatchNorm kept in
inference mode, and fine-tunes on augmented images at a low learning rate.
Either phase can be switched off with `epochs: 0`. From scratch (basecnn): the
whole network, one phase. Both log to one DVCLive run on one step axis
(plots/train). Writes models/model.keras, which takes raw uint8 images, and
metrics/train.json; model, metrics and curves are replaced together, at the end.
"""
import keras
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from core import StageError, hardware, models, pipeline
from core import params as P
from core.callbacks import StopOnNaN
from core.contracts import load_features, load_images, load_model, read_dataset_info, read_json
from core.io import atomic_dir, atomic_path, write_json
from core.training import fit, tune_head


def check(params, entry):
    """Validate every training param up front, before any work (ranges: core/params.py NUMBERS)."""
    P.check_section(params, "train")
    P.check_section(params, "tune")
    t = params["train"]
    if entry.pretrained and not (t["frozen"]["epochs"] or t["fine_tune"]["epochs"]):
        raise P.ParamError("params.yaml: `train.frozen.epochs` and `train.fine_tune.epochs` are both 0: nothing "
                           "would be trained. Frozen backbone only: fine_tune.epochs 0; fresh head fine-tuned "
                           "directly: frozen.epochs 0")
    if not entry.pretrained and not t["scratch"]["epochs"]:
        raise P.ParamError(f"params.yaml: `train.scratch.epochs` is 0, but {params['model']} trains from scratch "
                           "and needs at least 1 epoch")


def load_trunk(params, name, size, features_dir):
    """The trunk the features stage built, checked to be the one these params ask for."""
    info = read_json(f"{features_dir}/info.json", "features", keys=("model", "image_size", "weights"))
    if (info["model"], info["image_size"], info["weights"]) != (name, size, str(params["weights"])):
        raise StageError(f"{features_dir} holds features of {info['model']} at {info['image_size']} px; "
                         "run the features stage first (dvc repro)")
    return load_model(f"{features_dir}/trunk.keras", stage="features")


def two_phase(model, head, head_lr, t, data, features, images, log, metrics, seed):
    """Phase 1 on cached features, then phase 2 on images; either may have 0 epochs."""
    phases, done = {}, 0
    if t["frozen"]["epochs"]:
        # The backbone is frozen, so training the head on the trunk's cached outputs trains this same model.
        models.compile_model(head, head_lr)
        h, metrics["frozen_time_s"], best = fit(
            head, pipeline.features(features["train"]["x"], features["train"]["y"], t["batch_size"], seed),
            pipeline.features(features["val"]["x"], features["val"]["y"], t["batch_size"]),
            t["frozen"]["epochs"], t["patience"], [log, StopOnNaN("train.frozen.learning_rate", "frozen")])
        phases["frozen"], done = (h, best), len(h["loss"])
    if t["fine_tune"]["epochs"]:
        metrics["unfrozen_layers"] = models.unfreeze(model, t["fine_tune"]["unfreeze_fraction"],
                                                     t["fine_tune"]["learning_rate"])
        h, metrics["fine_tune_time_s"], best = fit(
            model, images(data["train"], shuffle_seed=seed, augment=True), images(data["val"]),
            t["fine_tune"]["epochs"], t["patience"], [log, StopOnNaN("train.fine_tune.learning_rate", "fine_tune")],
            initial_epoch=done)
        phases["fine_tune"] = (h, best)
    return phases


def from_scratch(model, t, data, images, log, metrics, seed):
    """Everything trainable, AdamW with warm-up + cosine decay, one phase."""
    s = t["scratch"]
    steps = s["epochs"] * -(-len(data["train"]["y"]) // t["batch_size"])
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=s["learning_rate"],
                                                      warmup_steps=steps // 5)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=s["weight_decay"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h, metrics["scratch_time_s"], best = fit(model, images(data["train"], shuffle_seed=seed, augment=True),
                                             images(data["val"]), s["epochs"], t["patience"],
                                             [log, StopOnNaN("train.scratch.learning_rate", "scratch")],
                                             watch_from=s["epochs"] // 2)
    return {"scratch": (h, best)}


def main(params, data_dir="data/cifar10", features_dir="data/features", model_path="models/model.keras",
         metrics_path="metrics/train.json", live_dir="plots/train"):
    name, t = params["model"], params["train"]
    entry = models.entry(name)
    check(params, entry)
    size = models.input_size(name, P.spec_number(params, "image_size"))
    seed = P.spec_number(params, "seed")
    plan = hardware.configure(seed)
    classes = read_dataset_info(data_dir)["classes"]
    data = {split: load_images(f"{data_dir}/{split}.npz", len(classes)) for split in ("train", "val")}
    augmenter = pipeline.augmenter(t["augment"]["flip"], t["augment"]["rotation"], t["augment"]["zoom"], seed)

    def images(d, shuffle_seed=None, augment=False):
        return pipeline.images(d["x"], d["y"], t["batch_size"], shuffle_seed, augmenter if augment else None)

    head_hp = {**t["head"], "learning_rate": t["frozen"]["learning_rate"]}
    metrics = {"model": name, "image_size": size, "weights": str(params["weights"]), "hardware": plan}
    features = None
    if entry.pretrained:
        features = {"train": load_features(f"{features_dir}/train.npz", len(classes))}
        features["val"] = load_features(f"{features_dir}/val.npz", len(classes), dim=features["train"]["x"].shape[1])
        if params["tune"]["enabled"]:
            tune = params["tune"]
            head_hp, metrics["search_time_s"] = tune_head(
                features["train"]["x"], features["train"]["y"], features["val"]["x"], features["val"]["y"],
                len(classes), tune, tune["trials"], tune["epochs"], t["batch_size"], seed)
            metrics["search_trials"], metrics["search_best"] = tune["trials"], head_hp

    # The curves are written to a temporary directory and replace plots/train only once
    # training has succeeded, right after the model and metrics: the three stay one set.
    with atomic_dir(live_dir) as curves:
        # One DVCLive run around both fits: DVCLiveCallback would end it after the first.
        with hardware.strategy(plan).scope(), Live(str(curves), dvcyaml=None, save_dvc_exp=False,
                                                   report=None) as live:
            trunk = load_trunk(params, name, size, features_dir)
            model, head = models.build_model(trunk, len(classes), head_hp["units"], head_hp["dropout"])
            log = DVCLiveCallback(live=live)
            if entry.pretrained:
                phases = two_phase(model, head, head_hp["learning_rate"], t, data, features, images, log, metrics, seed)
            else:
                phases = from_scratch(model, t, data, images, log, metrics, seed)
            deployed = models.for_deployment(model)

        for phase, (h, best) in phases.items():
            metrics[f"{phase}_epochs"] = len(h["loss"])
            metrics[f"{phase}_best_epoch"] = best + 1
        last_h, last_best = list(phases.values())[-1]
        # Train figures are Keras' running averages over the best epoch (dropout and augmentation on).
        metrics["train_accuracy"] = last_h["accuracy"][last_best]
        metrics["train_loss"] = last_h["loss"][last_best]
        metrics["val_loss"], metrics["val_accuracy"] = deployed.evaluate(images(data["val"]), verbose=0)
        metrics["train_time_s"] = sum(metrics.get(f"{p}_time_s", 0) for p in ("frozen", "fine_tune", "scratch"))
        metrics["params_total"] = deployed.count_params()
        # Both files are complete before either is renamed into place; the curves follow.
        with atomic_path(model_path) as model_tmp, atomic_path(metrics_path) as metrics_tmp:
            deployed.save(model_tmp)
            write_json(metrics_tmp, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    print(f"{name}: val accuracy {metrics['val_accuracy']:.4f}, train time {metrics['train_time_s']:.0f} s")


if __name__ == "__main__":
    from core.cli import run
    run(main)
