"""Stage train: two-phase transfer learning (Keras guide), or end to end for basecnn.

Phase 1 trains a new head on the cached frozen-backbone features
(data/features); phase 2 unfreezes the top of the backbone, BatchNorm kept in
inference mode, and fine-tunes on augmented images at a low learning rate.
Both phases log to one DVCLive run on one step axis (plots/train). Writes
models/model.keras and metrics/train.json.
"""
import json
import time

import keras
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from core import StageError, hardware, models, pipeline
from core import params as P
from core.io import atomic_path, load_npz, write_json
from core.training import fit, tune_head


def check(params):
    """Validate every training param up front, before any work."""
    for key in ("train.batch_size", "train.patience", "train.frozen.epochs", "train.fine_tune.epochs",
                "train.scratch.epochs", "tune.trials", "tune.epochs"):
        P.number(params, key, 1 if "epochs" not in key else 0, integer=True)
    for key in ("train.frozen.learning_rate", "train.fine_tune.learning_rate", "train.scratch.learning_rate"):
        P.number(params, key, 1e-8, 1.0)
    P.number(params, "train.head.units", 0, integer=True)
    P.number(params, "train.head.dropout", 0.0, 0.9)
    P.number(params, "train.fine_tune.unfreeze_fraction", 0.0, 1.0)
    P.number(params, "train.scratch.weight_decay", 0.0, 1.0)
    P.number(params, "train.augment.rotation", 0.0, 0.5)
    P.number(params, "train.augment.zoom", 0.0, 0.9)


def main(params, data_dir="data/cifar10", features_dir="data/features", model_path="models/model.keras",
         metrics_path="metrics/train.json", live_dir="plots/train"):
    check(params)
    name, t = params["model"], params["train"]
    entry = models.entry(name)
    size = models.input_size(name, P.number(params, "image_size", 32, 1024, integer=True))
    seed = P.number(params, "seed", integer=True)
    plan = hardware.configure(seed)
    classes = json.loads(open(f"{data_dir}/info.json").read())["classes"]
    train, val = load_npz(f"{data_dir}/train.npz"), load_npz(f"{data_dir}/val.npz")
    augment = pipeline.augmenter(t["augment"]["flip"], t["augment"]["rotation"], t["augment"]["zoom"], seed)
    images = lambda d, **kw: pipeline.images(d["x"], d["y"], size, entry.preprocess, t["batch_size"], **kw)  # noqa: E731
    head_hp = {**t["head"], "learning_rate": t["frozen"]["learning_rate"]}
    metrics = {"model": name, "image_size": size, "weights": str(params["weights"]), "hardware": plan}

    if entry.pretrained:
        features = json.loads(open(f"{features_dir}/info.json").read())
        if (features["model"], features["image_size"], features["weights"]) != (name, size, str(params["weights"])):
            raise StageError(f"{features_dir} holds features of {features['model']} at {features['image_size']} px; "
                             "run the features stage first (dvc repro)")
        ftrain, fval = load_npz(f"{features_dir}/train.npz"), load_npz(f"{features_dir}/val.npz")
        if params["tune"]["enabled"]:
            tune = params["tune"]
            head_hp, metrics["search_time_s"] = tune_head(
                ftrain["x"], ftrain["y"], fval["x"], fval["y"], len(classes), tune, tune["trials"], tune["epochs"],
                t["batch_size"], seed)
            metrics["search_trials"], metrics["search_best"] = tune["trials"], head_hp

    # One DVCLive run around both fits: DVCLiveCallback would end it after the first.
    with hardware.strategy(plan).scope(), Live(live_dir, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        model, backbone, head = models.build_model(name, len(classes), size, "none",
                                                   head_hp["units"], head_hp["dropout"])
        log = DVCLiveCallback(live=live)
        if entry.pretrained:
            backbone.load_weights(f"{features_dir}/backbone.weights.h5")  # the backbone that made the features
            # Phase 1: the head alone on cached features (the backbone is frozen, so this is the same model).
            models.compile_model(head, head_hp["learning_rate"])
            h1, metrics["frozen_time_s"], best1 = fit(
                head, pipeline.features(ftrain["x"], ftrain["y"], t["batch_size"], seed),
                pipeline.features(fval["x"], fval["y"], t["batch_size"]), t["frozen"]["epochs"], t["patience"], [log])
            done = len(h1["loss"])
            # Phase 2: fine-tune the top of the backbone on augmented images.
            metrics["unfrozen_layers"] = models.unfreeze(model, backbone, t["fine_tune"]["unfreeze_fraction"],
                                                         t["fine_tune"]["learning_rate"])
            h2, metrics["fine_tune_time_s"], best2 = fit(
                model, images(train, shuffle_seed=seed, augment=augment), images(val),
                t["fine_tune"]["epochs"], t["patience"], [log], initial_epoch=done)
            phases = {"frozen": (h1, best1), "fine_tune": (h2, best2)}
        else:
            s = t["scratch"]
            steps = s["epochs"] * -(-len(train["y"]) // t["batch_size"])
            schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=s["learning_rate"],
                                                              warmup_steps=steps // 5)
            model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=s["weight_decay"]),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            h, metrics["scratch_time_s"], best = fit(model, images(train, shuffle_seed=seed, augment=augment),
                                                     images(val), s["epochs"], t["patience"], [log],
                                                     watch_from=s["epochs"] // 2)
            phases = {"scratch": (h, best)}

    for phase, (h, best) in phases.items():
        metrics[f"{phase}_epochs"] = len(h["loss"])
        metrics[f"{phase}_best_epoch"] = best + 1
    last_h, last_best = list(phases.values())[-1]
    # Train figures are Keras' running averages over the best epoch (dropout and augmentation on).
    metrics["train_accuracy"] = last_h["accuracy"][last_best]
    metrics["train_loss"] = last_h["loss"][last_best]
    metrics["val_loss"], metrics["val_accuracy"] = model.evaluate(images(val), verbose=0)
    metrics["train_time_s"] = sum(metrics.get(f"{p}_time_s", 0) for p in ("frozen", "fine_tune", "scratch"))
    metrics["params_total"] = model.count_params()

    with atomic_path(model_path) as tmp:
        models.for_deployment(model).save(tmp)
    write_json(metrics_path, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    print(f"{name}: val accuracy {metrics['val_accuracy']:.4f}, train time {metrics['train_time_s']:.0f} s")


if __name__ == "__main__":
    from core.cli import run
    run(main)
