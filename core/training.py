"""The training recipes, written once: the train stage and the benchmarks call these.

Two-phase transfer (Keras guide): `train_head` on the frozen trunk's cached
outputs, then `fine_tune` with the top of the backbone unfrozen. From scratch:
`train_from_scratch`. Each returns fit's (history, seconds, best epoch).
"""
import contextlib
import tempfile
import time

from core import pipeline
from core.models import (build_head, build_model, compile_model, fit_whitening, in_policy, split_at_trainable,
                         unfreeze)
from core.runtime import keras, tf


def fit(model, train, val, epochs, patience, callbacks=(), initial_epoch=0, watch_from=0):
    """model.fit with early stopping on val loss (best weights restored).

    Early stopping only counts from epoch `watch_from` of this fit: a warm-up
    + cosine schedule's early, high-rate epochs are too noisy to stop on.
    Returns (history dict, wall time in seconds, best epoch index within this fit).
    """
    stop = keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True,
                                         start_from_epoch=initial_epoch + watch_from)
    start = time.perf_counter()
    # shuffle=False: the tf.data pipelines shuffle (seeded) themselves.
    history = model.fit(train, validation_data=val, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                        callbacks=[stop, *callbacks], shuffle=False, verbose=2).history
    seconds = time.perf_counter() - start
    return history, seconds, stop.best_epoch - initial_epoch  # the epoch whose weights were restored


def train_head(head, learning_rate, train, val, epochs, patience, callbacks=()):
    """Phase 1: the new head alone, on batches of the trunk's cached outputs. The
    backbone is frozen, so this trains the whole model's head at a fraction of the cost."""
    compile_model(head, learning_rate)
    return fit(head, train, val, epochs, patience, callbacks)


def fine_tune(model, unfreeze_fraction, learning_rate, train, val, epochs, patience, callbacks=(), initial_epoch=0):
    """Phase 2: the top `unfreeze_fraction` of the backbone trainable (BatchNorm stays
    in inference mode), recompiled at a low learning rate, on image batches.
    Returns fit's (history, seconds, best epoch) and the number of layers unfrozen."""
    unfrozen = unfreeze(model, unfreeze_fraction, learning_rate)
    return (*fit(model, train, val, epochs, patience, callbacks, initial_epoch), unfrozen)


def fine_tune_cached(model, unfreeze_fraction, learning_rate, train, val, views, batch_size, seed, repeats, epochs,
                     patience, callbacks=(), initial_epoch=0, cache_dir=None):
    """Phase 2 as fine_tune, but the frozen layers below the unfrozen top run once per image and view, not every
    epoch. `train`, `val`: (image batches in a fixed order, their labels); each pass over the training batches
    (augmenting afresh) gives a view. Each epoch every image passes `repeats` times through the trainable top,
    each time in one of its `views` cached views drawn at random (core.pipeline.view_batches, shuffled by `seed`).
    Exact for those views (BatchNorm in inference mode, no dropout below the top); the difference from
    fine_tune is that training sees `views` augmentations of an image, not a fresh one every epoch. Returns
    fine_tune's (history, seconds, best epoch, layers unfrozen), the seconds including the cache's, and the
    seconds the cache took. `cache_dir`: the cache is held in files in a temporary folder there, deleted at the end
    (pipeline.frozen_outputs); None: in memory."""
    unfrozen = unfreeze(model, unfreeze_fraction, learning_rate)
    bottom, top = split_at_trainable(model)
    compile_model(top, learning_rate)
    with (contextlib.nullcontext() if cache_dir is None
          else tempfile.TemporaryDirectory(prefix=".views-", dir=cache_dir)) as folder:
        start = time.perf_counter()
        (train_images, train_y), (val_images, val_y) = train, val
        train_views = pipeline.view_batches(pipeline.frozen_outputs(bottom, train_images, len(train_y), views, folder),
                                            train_y, batch_size, seed, repeats)
        val_views = pipeline.view_batches(pipeline.frozen_outputs(bottom, val_images, len(val_y), 1, folder), val_y,
                                          batch_size)
        cache_seconds = time.perf_counter() - start
        history, seconds, best = fit(top, train_views, val_views, epochs, patience, callbacks, initial_epoch)
    return history, seconds + cache_seconds, best, unfrozen, cache_seconds


def epoch_repeats(train_fraction, max_repeats):
    """Passes over the training images per epoch: 1/train_fraction, rounded, at most `max_repeats`. A labelled
    budget then trains the same optimizer steps per epoch as the full set, so the schedule, the patience and
    the validation rhythm (all counted in epochs) are the same at every budget: otherwise 1 % of the labels
    would get 1 % of the steps, and a label-efficiency curve would measure the schedule, not the backbone."""
    return max(1, min(int(max_repeats), round(1 / train_fraction)))


def warmup_cosine(peak, steps, warmup_fraction):
    """Linear warm-up to `peak` over a share of the steps, then a cosine to 0 at the last step.
    (CosineDecay counts its decay steps after the warm-up: they are the steps left.)"""
    # At least one warm-up step whenever there is a warm-up: a short run must not start at the peak.
    warmup = max(int(steps * warmup_fraction), 1 if warmup_fraction > 0 else 0)
    return keras.optimizers.schedules.CosineDecay(0.0, max(steps - warmup, 1), warmup_target=peak,
                                                  warmup_steps=warmup)


@keras.saving.register_keras_serializable(package="core")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing (Keras' sparse loss has no smoothing). A
    registered class, not a closure: Keras re-creates a model's loss from its config when it clones or
    loads the model (models.for_deployment clones it)."""

    def __init__(self, n_classes, label_smoothing, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes, self.label_smoothing = n_classes, label_smoothing

    def call(self, y_true, y_pred):
        one_hot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), self.n_classes)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "label_smoothing": self.label_smoothing}


# train.scratch.optimizer: the two the references use, each with decoupled weight decay (scaled by the rate).
OPTIMIZERS = {
    "sgd": lambda rate, weight_decay: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True,
                                                           weight_decay=weight_decay),
    "adamw": lambda rate, weight_decay: keras.optimizers.AdamW(rate, weight_decay=weight_decay),
}
# Weight decay shrinks kernels only: decaying BatchNorm's scale and shift, or a bias, only fights the
# normalisation (what a conv's scale is, BatchNorm undoes) and the head's class priors.
NO_DECAY = ["gamma", "beta", "bias"]


def scratch_network(trunk, n_classes, scratch, plan, cpu_bfloat16, train_images):
    """The from-scratch recipe's network, untrained: `trunk` computing in `scratch["precision"]` (params'
    train.scratch; a copy only if that is not the plan's global policy, core.models.in_policy) under a new float32
    head of `scratch["units"]` with `scratch["dropout"]`, its fixed first layer (basecnn's whitening) set from
    `train_images`. (The policy it computes in is on the network: core.models.backbone_policy.)"""
    model = build_model(in_policy(trunk, scratch["precision"], plan, cpu_bfloat16)[0], n_classes, scratch["units"],
                        scratch["dropout"])[0]
    fit_whitening(model, train_images)
    return model


def compile_from_scratch(model, scratch, steps_per_epoch):
    """`scratch` (params' train.scratch) names the optimizer, its peak rate on a warm-up + cosine schedule that
    reaches 0 at the end of training, weight decay and label smoothing."""
    rate = warmup_cosine(scratch["learning_rate"], scratch["epochs"] * steps_per_epoch, scratch["warmup_fraction"])
    loss = SmoothedSparseCrossentropy(model.output_shape[-1], scratch["label_smoothing"]) \
        if scratch["label_smoothing"] else "sparse_categorical_crossentropy"
    optimizer = OPTIMIZERS[scratch["optimizer"]](rate, scratch["weight_decay"])
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def train_from_scratch(model, scratch, train, val, patience, callbacks=()):
    """Everything trainable, one phase, by the recipe in `scratch` (params' train.scratch); early stopping
    watches from a share of the epochs on (the warm-up's and the high rate's epochs are too noisy to stop on)."""
    compile_from_scratch(model, scratch, int(train.cardinality()))
    epochs = scratch["epochs"]
    # At most the last epoch: from `epochs` on, early stopping would watch nothing, and report epoch 1 as best
    # while the weights are the last epoch's.
    watch_from = min(int(epochs * scratch["watch_from_fraction"]), epochs - 1)
    return fit(model, train, val, epochs, patience, callbacks, watch_from=watch_from)


def tune_head(train_f, train_y, val_f, val_y, n_classes, space, trials, epochs, batch_size, seed):
    """Random search over head units, dropout and learning rate on cached
    features, scored on the validation split. Returns (best values, seconds)."""
    import keras_tuner as kt  # only needed when tuning

    def build(hp):
        head = build_head(train_f.shape[1], n_classes, hp.Choice("units", space["units"]),
                          hp.Float("dropout", *space["dropout"], step=0.1))
        compile_model(head, hp.Float("learning_rate", *space["learning_rate"], sampling="log"))
        return head

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=trials, seed=seed,
                                directory=workdir, project_name="head", overwrite=True)
        tuner.search(pipeline.feature_batches(train_f, train_y, batch_size, seed),
                     validation_data=pipeline.feature_batches(val_f, val_y, batch_size), epochs=epochs, verbose=1)
        best = tuner.get_best_hyperparameters(1)[0].values
    return {k: best[k] for k in ("units", "dropout", "learning_rate")}, time.perf_counter() - start
