"""tf.data input pipelines: raw uint8 images (augmented for training) and cached features, in batches."""
import os
import tempfile

import numpy as np
from tqdm import tqdm

from core.hardware import op_determinism, usable_cores
from core.runtime import keras, tf

PREFETCH_BATCHES = 2


def _options():
    """tf.data's autotuner off, fixed parallelism instead. Its background
    thread re-plans at 10 ms, 20 ms, 40 ms... after an iterator starts, and on
    this TF (2.21) the iterator's teardown often waits for the next such tick:
    a fit or predict then ends at 2.55, 10.23 or 20.47 s whatever its work
    (one epoch on 8,192 images: 20.47 s against 11.7 s; docs/performance.md).
    With 2-4 cores there is little for it to tune."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def augmenter(flip, rotation, zoom, seed, translate=0.0):
    """Random flip / shift (fraction of the side, reflected at the border: CIFAR's pad-and-crop) / rotation
    (fraction of a turn) / zoom (fraction), applied in the pipeline so the saved model holds no augmentation
    layers."""
    layers = [keras.layers.RandomFlip("horizontal", seed=seed)] if flip else []
    if translate:
        layers.append(keras.layers.RandomTranslation(translate, translate, fill_mode="reflect",
                                                     interpolation="nearest", seed=seed))  # whole pixels, as a crop
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect", seed=seed))
    return keras.Sequential(layers) if layers else None


def _shuffled(ds, n, shuffle_seed, repeats):
    if shuffle_seed is not None:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    # Repeated before batching: the passes join without a short batch between them.
    return ds.repeat(repeats) if repeats > 1 else ds


def image_batches(x, y, batch_size, shuffle_seed=None, augment=None, repeats=1):
    """Batches of (uint8 images, labels) from uint8 arrays: the model resizes and
    preprocesses them itself, so training sees what a user gives it.

    Augmented images are rounded back to uint8, as a camera would deliver them
    (the model's input is uint8). Shuffling happens before batching, with a
    fixed seed, so two datasets of the same length see their examples in the
    same order. `repeats` passes over the images per epoch, each pass shuffled
    (and augmented) afresh. The source arrays are never modified.
    """
    return batched(_shuffled(tf.data.Dataset.from_tensor_slices((x, y)), len(x), shuffle_seed, repeats), batch_size,
                   augment)


def batched(ds, batch_size, augment=None):
    """image_batches' second half: a dataset of (uint8 image, label) pairs in batches, augmented if asked (rounded
    back to uint8), prefetched."""
    ds = ds.batch(batch_size)
    if augment is not None:
        def augmented(xb, yb):
            xb = augment(tf.cast(xb, tf.float32), training=True)
            return tf.cast(tf.clip_by_value(tf.round(xb), 0.0, 255.0), tf.uint8), yb
        # Random augmentation is a stateful function: under op determinism (core.hardware.configure) tf.data
        # rewrites a parallel map of it into a sequential one, and TF 2.21's rewrite logs an `E` line doing so
        # ("NodeDef mentions attribute use_unbounded_threadpool"). Ask for parallel calls only where they happen.
        ds = ds.map(augmented, num_parallel_calls=None if op_determinism() else usable_cores())
    return ds.prefetch(PREFETCH_BATCHES).with_options(_options())


def feature_batches(f, y, batch_size, shuffle_seed=None, repeats=1):
    """Batches of cached backbone features, shuffled and repeated like `images` would be."""
    ds = _shuffled(tf.data.Dataset.from_tensor_slices((f, y)), len(f), shuffle_seed, repeats)
    return ds.batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(_options())


def predict_images(model, x, batch_size):
    """The model's outputs for uint8 images (N, H, W, 3); float32 (Keras' progress bar on stdout)."""
    return model.predict(image_batches(x, np.zeros(len(x), np.uint8), batch_size), verbose=1).astype(np.float32)


def frozen_outputs(bottom, batches, n, views=1, directory=None):
    """`bottom`'s outputs (core.models.split_at_trainable) for `views` passes over `batches` (n images, in a fixed
    order; an augmenting pipeline draws afresh on each pass): one array (views, n, ...) per output, in the dtype
    bottom computes in (bfloat16 under mixed_bfloat16, so the cache is what the top would receive). With a
    `directory`, each array is a file there mapped into memory (np.memmap): the cache can outgrow RAM (ResNet50V2
    at 96 px: 6.6 GB per view in float32), the operating system keeps in RAM what fits; the files stay there, for
    the folder's owner to delete."""
    def array(t):
        shape, dtype = (views, n, *t.shape[1:]), tf.as_dtype(t.dtype).as_numpy_dtype
        if directory is None:
            return np.empty(shape, dtype)
        handle, path = tempfile.mkstemp(suffix=".bin", dir=directory)  # a new name: calls can share a folder
        os.close(handle)
        return np.memmap(path, dtype, "w+", shape=shape)
    arrays = [array(t) for t in bottom.outputs]
    call = tf.function(lambda x: bottom(x, training=False))
    with tqdm(total=views * n, desc="frozen layers, once per view", unit="img") as bar:
        for v in range(views):
            start = 0
            for x, _ in batches:
                outs = call(x)
                for array, out in zip(arrays, outs if isinstance(outs, (list, tuple)) else [outs]):
                    array[v, start:start + len(x)] = out.numpy()
                start += len(x)
                bar.update(len(x))
            if start != n:
                raise ValueError(f"the image batches held {start} images, not {n}")
    return arrays


def view_batches(arrays, y, batch_size, shuffle_seed=None, repeats=1):
    """Batches of (cached frozen outputs, labels) for the top of the network: every image once per pass,
    `repeats` passes per epoch, shuffled like image_batches, each time in one of its cached views drawn at
    random (seeded by shuffle_seed; view 0 without it). `arrays`: frozen_outputs' list, (views, n, ...) each."""
    views, n = arrays[0].shape[:2]
    rng = np.random.default_rng(shuffle_seed)
    dtypes = [tf.as_dtype(a.dtype) for a in arrays]

    def take(index):
        view = rng.integers(0, views, len(index)) if shuffle_seed is not None else np.zeros(len(index), int)
        return [a[view, index] for a in arrays]

    def gather(index):
        out = tf.numpy_function(take, [index], dtypes)
        for t, a in zip(out, arrays):
            t.set_shape((None, *a.shape[2:]))
        return (out[0] if len(out) == 1 else tuple(out)), tf.gather(y, index)
    y = tf.constant(y)
    ds = _shuffled(tf.data.Dataset.range(n), n, shuffle_seed, repeats).batch(batch_size)
    # Sequential map: the view draws come from one generator, in batch order, so a seed gives the same batches.
    return ds.map(gather).prefetch(PREFETCH_BATCHES).with_options(_options())
