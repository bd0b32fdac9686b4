"""Stage train: two-phase transfer learning (Keras guide), or from scratch for basecnn.

Both recipes start from the trunk the features stage saved (data/features/trunk.keras)
and put a new head on it. Two-phase: phase 1 trains the head on the trunk's
cached outputs; phase 2 unfreezes the top of the backbone, BatchNorm kept in
inference mode, and fine-tunes on augmented images at a low learning rate.
Either phase can be switched off with `epochs: 0`. From scratch (basecnn): the
whole network, one phase. Both log to one DVCLive run on one step axis
(plots/train). Writes models/model.keras, which takes raw uint8 images (computing in float32, and averaged
over each image and its mirror if `flip_tta`, whatever the recipe), and metrics/train.json; model, metrics
and curves are replaced together, at the end.

Reads data/params/train.json (stage resolve_params): the shared training params and the selected model's
recipe only, so basecnn does not rerun for a head param, nor a backbone for a from-scratch one. The image
side and weights are the trunk's, read from data/features/info.json.
"""
import os

# The project's modules first: they import TensorFlow through core.runtime, which keeps its start-up
# output quiet; dvclive.keras would import it first, and loudly.
from core import StageError, hardware, models
from core.callbacks import StopOnNaN
from core.contracts import load_features, load_images, load_model, read_dataset_info, read_json
from core.io import atomic_dir, atomic_path, save_keras, write_json
from core.params import ParamError
from core.pipeline import augmenter, feature_batches, image_batches
from core.reads import params_path
from core.stage import start
from core.training import (epoch_repeats, fine_tune, fine_tune_cached, scratch_network, train_from_scratch, train_head,
                           tune_head)
from dvclive import Live
from dvclive.keras import DVCLiveCallback


def check_epochs(t, entry, name):
    if entry.two_phase and not (t["frozen"]["epochs"] or t["fine_tune"]["epochs"]):
        raise ParamError("params.yaml: `train.frozen.epochs` and `train.fine_tune.epochs` are both 0: nothing "
                         "would be trained. Frozen backbone only: fine_tune.epochs 0; fresh head fine-tuned "
                         "directly: frozen.epochs 0")
    if not entry.two_phase and not t["scratch"]["epochs"]:
        raise ParamError(f"params.yaml: `train.scratch.epochs` is 0, but {name} trains from scratch "
                         "and needs at least 1 epoch")


def load_trunk(name, features_dir):
    """The trunk the features stage built, checked to be this model's, and its info (image side, weights)."""
    info = read_json(f"{features_dir}/info.json", "features", keys=("model", "image_size", "weights"))
    if info["model"] != name:
        raise StageError(f"{features_dir} holds features of {info['model']}, not {name}; run the features stage "
                         "first (dvc repro)")
    return load_model(f"{features_dir}/trunk.keras", stage="features"), info


def two_phase(trunk, params, data, n_classes, features_dir, images, log, job, repeats):
    """Head on cached features (optionally tuned), then the top of the backbone fine-tuned on images in
    train.fine_tune.precision, each epoch `repeats` passes over the training images. Phase 2 is kept only if its
    best validation loss beats phase 1's: otherwise phase 1's weights ship (Keras' early stopping starts afresh
    at each fit, so it cannot fall back across phases by itself). Returns (trained model, {phase: (history, best
    epoch)}, the phase whose weights ship, metrics, conditions: what phase 2 computed in)."""
    seed = job.seed
    t, tune = params["train"], params["tune"]
    features = {"train": load_features(f"{features_dir}/train.npz", n_classes)}
    features["val"] = load_features(f"{features_dir}/val.npz", n_classes, dim=features["train"]["x"].shape[1])
    train_f = feature_batches(features["train"]["x"], features["train"]["y"], t["batch_size"], seed, repeats)
    val_f = feature_batches(features["val"]["x"], features["val"]["y"], t["batch_size"])
    metrics, phases, conditions = {}, {}, {}

    hp = {**t["head"], "learning_rate": t["frozen"]["learning_rate"]}
    if tune["enabled"]:
        hp, metrics["search_time_s"] = tune_head(
            features["train"]["x"], features["train"]["y"], features["val"]["x"], features["val"]["y"],
            n_classes, tune, tune["trials"], tune["epochs"], t["batch_size"], seed)
        metrics["search_trials"], metrics["search_best"] = tune["trials"], hp
    model, head = models.build_model(trunk, n_classes, hp["units"], hp["dropout"])

    done = 0  # epochs so far, so both phases share one step axis in the curves
    if t["frozen"]["epochs"]:
        h, metrics["frozen_time_s"], best = train_head(
            head, hp["learning_rate"], train_f, val_f, t["frozen"]["epochs"], t["patience"],
            [log, StopOnNaN("train.frozen.learning_rate", "frozen")])
        phases["frozen"], done = (h, best), len(h["loss"])
    if t["fine_tune"]["epochs"]:
        ft = t["fine_tune"]
        # Phase 1's best weights (the head restored by early stopping, inside `model`), for phase 2 to beat.
        phase1 = [(v, v.numpy()) for v in model.weights] if phases else None
        # Phase 2 computes in train.fine_tune.precision (bfloat16 where the CPU has it, with `auto`) on a copy;
        # its weights come back to `model`, float32 as ever, which ships.
        net, conditions["fine_tune_compute_dtype"] = models.in_policy(model, ft["precision"], job.plan,
                                                                      job.entry.cpu_bfloat16)
        stop = [log, StopOnNaN("train.fine_tune.learning_rate", "fine_tune")]
        if ft["views"]:  # the frozen bottom once per image and view (core.training.fine_tune_cached)
            h, metrics["fine_tune_time_s"], best, metrics["unfrozen_layers"], metrics["fine_tune_cache_time_s"] = \
                fine_tune_cached(net, ft["unfreeze_fraction"], ft["learning_rate"],
                                 (images(data["train"], None, True), data["train"]["y"]),
                                 (images(data["val"]), data["val"]["y"]), ft["views"], t["batch_size"], seed,
                                 repeats, ft["epochs"], t["patience"], stop, initial_epoch=done,
                                 cache_dir=os.path.dirname(features_dir) or ".")  # on disk, beside the data
        else:
            h, metrics["fine_tune_time_s"], best, metrics["unfrozen_layers"] = fine_tune(
                net, ft["unfreeze_fraction"], ft["learning_rate"], images(data["train"], seed, True, repeats),
                images(data["val"]), ft["epochs"], t["patience"], stop, initial_epoch=done)
        if net is not model:
            models.copy_weights(net, model)
        phases["fine_tune"] = (h, best)
        if phase1 is not None:
            frozen_h, frozen_best = phases["frozen"]
            metrics["fine_tune_kept"] = bool(h["val_loss"][best] < frozen_h["val_loss"][frozen_best])
            if not metrics["fine_tune_kept"]:  # fine-tuning never beat the head alone: phase 1 ships
                for variable, value in phase1:
                    variable.assign(value)
    shipped = "frozen" if metrics.get("fine_tune_kept") is False else list(phases)[-1]
    return model, phases, shipped, metrics, conditions


def from_scratch(trunk, params, data, n_classes, features_dir, images, log, job, repeats):
    """The whole network trained in one phase on augmented images (`repeats` passes per epoch) (SGD with Nesterov
    momentum or AdamW, warm-up + cosine to 0), its trunk computing in bfloat16 where the CPU has it natively
    (train.scratch.precision; the head stays float32). Returns (trained model, {"scratch": (history, best
    epoch)}, "scratch", metrics, conditions: none beyond the shipped model's compute_dtype)."""
    t, s = params["train"], params["train"]["scratch"]
    model = scratch_network(trunk, n_classes, s, job.plan, job.entry.cpu_bfloat16, data["train"]["x"])
    h, seconds, best = train_from_scratch(
        model, s, images(data["train"], job.seed, True, repeats), images(data["val"]), t["patience"],
        [log, StopOnNaN("train.scratch.learning_rate", "scratch")])
    return model, {"scratch": (h, best)}, "scratch", {"scratch_time_s": seconds}, {}


def deploy(model, flip_tta, val):
    """What ships (core.models.for_deployment), with the single view's val accuracy when the mirror pass is on:
    what that pass buys, beside the shipped model's."""
    metrics = {}
    if flip_tta:
        metrics["val_accuracy_single_view"] = models.for_deployment(model).evaluate(val, verbose=0)[1]
    return models.for_deployment(model, flip_tta=flip_tta), metrics


def summary(phases, shipped, recipe_metrics, deployed, val):
    """Epochs run and best epoch per phase, the train figures of the phase whose weights ship (`shipped`) at its
    best epoch, the shipped model's val figures and the total training time."""
    metrics = {}
    for phase, (h, best) in phases.items():
        metrics[f"{phase}_epochs"] = len(h["loss"])
        metrics[f"{phase}_best_epoch"] = best + 1
    h, best = phases[shipped]
    # Keras' running averages over the best epoch, of the training objective (augmentation, dropout and label
    # smoothing on): named for what they are, as they do not compare with val_loss, the plain cross-entropy
    # of the shipped model.
    metrics["train_running_accuracy"] = h["accuracy"][best]
    metrics["train_running_loss"] = h["loss"][best]
    metrics["val_loss"], metrics["val_accuracy"] = deployed.evaluate(val, verbose=0)
    metrics["train_time_s"] = sum(recipe_metrics.get(f"{p}_time_s", 0) for p in ("frozen", "fine_tune", "scratch"))
    return metrics


def main(params, data_dir="data/cifar10", features_dir="data/features", model_path="models/model.keras",
         metrics_path="metrics/train.json", conditions_path="metrics/conditions/train.json", live_dir="plots/train"):
    job = start(params, "train")
    params = job.params
    t = params["train"]
    check_epochs(t, job.entry, job.name)
    info = read_dataset_info(data_dir)
    classes = info["classes"]
    with job.timed("load"):
        data = {split: load_images(f"{data_dir}/{split}.npz", len(classes)) for split in ("train", "val")}
    augmentation = augmenter(seed=job.seed, **t["augment"])  # the section's keys are its arguments
    # A labelled budget (cifar10.train_fraction) is trained for the same optimizer steps as the full set.
    repeats = epoch_repeats(info["train_fraction"], t["max_repeats"])

    def images(d, shuffle_seed=None, augment=False, repeats=1):
        return image_batches(d["x"], d["y"], t["batch_size"], shuffle_seed, augmentation if augment else None,
                             repeats)

    recipe = two_phase if job.entry.two_phase else from_scratch
    # metrics/train.json holds the figures compared across experiments; what they were measured under
    # (the image side basecnn really ran at, the device and thread plan) goes beside it, out of `dvc exp show`.
    conditions = {"model": job.name, "hardware": job.plan}
    # The curves are written to a temporary directory and replace plots/train only once
    # training has succeeded, right after the model and metrics: the three stay one set.
    with atomic_dir(live_dir) as curves:
        # One DVCLive run around both fits: DVCLiveCallback would end it after the first.
        distribution = hardware.strategy(job.plan)
        # The strategy really used, and over how many devices (core.hardware: mirrored on several GPUs).
        conditions.update(strategy=type(distribution).__name__.lstrip("_"),
                          replicas=distribution.num_replicas_in_sync)
        with distribution.scope(), Live(str(curves), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            trunk, info = load_trunk(job.name, features_dir)
            conditions.update(image_size=info["image_size"], weights=info["weights"],
                              **{k: info.get(k) for k in ("weights_file", "weights_sha256")})
            with job.timed("recipe"):  # the phases' own times are in metrics/train.json
                model, phases, shipped, recipe_metrics, recipe_conditions = recipe(
                    trunk, params, data, len(classes), features_dir, images, DVCLiveCallback(live=live), job,
                    repeats)
            with job.timed("deploy"):
                deployed, view_metrics = deploy(model, params["flip_tta"], images(data["val"]))
        # The labelled budget trained on, and the passes over it per epoch (train.max_repeats): the comparison's
        # label-efficiency curve reads them.
        with job.timed("val"):
            metrics = {"train_images_per_class": round(len(data["train"]["y"]) / len(classes), 2),
                       "train_repeats": repeats, **recipe_metrics, **view_metrics,
                       **summary(phases, shipped, recipe_metrics, deployed, images(data["val"]))}
        # Recorded for both recipes: the comparison reads whether each model's figures include the mirror pass.
        conditions.update(**recipe_conditions, compute_dtype=models.backbone_policy(model),
                          flip_tta=params["flip_tta"], wall_s=job.timings())
        # The files are complete before any is renamed into place; the curves follow.
        with atomic_path(model_path) as model_tmp, atomic_path(metrics_path) as metrics_tmp, \
                atomic_path(conditions_path) as conditions_tmp:
            save_keras(deployed, model_tmp)
            write_json(metrics_tmp, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
            write_json(conditions_tmp, conditions)
    print(f"{job.name}: val accuracy {metrics['val_accuracy']:.4f}, train time {metrics['train_time_s']:.0f} s")


if __name__ == "__main__":
    from core.cli import run
    run(main, params_path("train"))
