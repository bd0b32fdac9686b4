"""Networks built from the model registry (core.registry), and the two-phase transfer-learning recipe.

A model is `raw uint8 image -> resize -> preprocessing -> backbone -> global
average pooling ("pool") -> head`. Everything up to "pool" is the *trunk*: the
features stage builds it once, caches its outputs and saves it whole, and the
train stage puts a head on that very trunk, so the network that made the
cached features is the one that is fine-tuned, evaluated and shipped. The
head (dropout, dense, softmax) is the same for every entry: adding a Keras
application is one line of core.registry.REGISTRY.
"""
import contextlib
import math

import numpy as np

from core import StageError, hardware
from core.params import weights_source
from core.registry import REGISTRY, entry, input_size  # noqa: F401 (re-exported: models.entry(...))
from core.runtime import keras

BACKBONE = "backbone"  # layer names other code relies on (unfreeze, tests, users' feature extraction)
POOL = "pool"
WHITEN, WHITEN_FILTERS = "whiten", 24  # basecnn's first layer: 2 x 12 values of a 2x2 RGB patch


def base_cnn(include_top=False, weights=None, input_shape=(32, 32, 3), widths=(32, 128, 128)):
    """A small CNN trained from scratch, after airbench (Jordan 2024): a fixed 2x2 conv that whitens the image's
    patches (24 filters; fit_whitening sets them from training images before training), GELU, then per width a
    group of 3x3 conv -> 2x2 max-pool -> BatchNorm -> GELU -> 3x3 conv -> BatchNorm -> GELU, and a max-pool over
    the last 3x3 map. BatchNorm has no scale (the next conv's weights carry it) and follows the batches closely
    (momentum 0.4, as airbench's 0.6 in PyTorch's convention). 499k parameters, 0.066 GFLOPs per image. It
    replaced a residual CNN after Page's ResNet-9 at the same cost per epoch, on the validation split
    (docs/performance.md, section 11). Same signature as keras.applications so the registry treats it alike."""
    def norm_act(x):
        return keras.layers.Activation("gelu")(keras.layers.BatchNormalization(scale=False, momentum=0.4)(x))

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(WHITEN_FILTERS, 2, name=WHITEN, trainable=False)(inputs)
    x = keras.layers.Activation("gelu")(x)
    for filters in widths:
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = norm_act(keras.layers.MaxPooling2D()(x))
        x = norm_act(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x))
    x = keras.layers.MaxPooling2D(x.shape[1])(x)
    return keras.Model(inputs, x, name="basecnn")


def fit_whitening(model, x, images=5000, eps=5e-4):
    """Sets base_cnn's whitening conv from the first `images` of `x` (uint8, N x H x W x 3): the eigenvectors of
    the covariance of their 2x2 patches, scaled to unit variance, each also negated (GELU follows), with a bias
    that centres them. A pure function of the images, so the same images give the same network. A model
    without that layer is left alone."""
    layer = next((layer for layer in model.get_layer(BACKBONE).layers if layer.name == WHITEN), None)
    if layer is None:
        return
    x = np.asarray(x[:images], np.float64) / 255.0  # the trunk's preprocessing (scale_to_unit) feeds the backbone
    h, w = x.shape[1] - 1, x.shape[2] - 1
    patches = np.stack([x[:, i:i + h, j:j + w] for i in range(2) for j in range(2)], axis=3).reshape(-1, 12)
    values, vectors = np.linalg.eigh(np.cov(patches, rowvar=False))
    filters = vectors.T / np.sqrt(values + eps)[:, None]  # a row per filter over (row, column, channel)
    filters = np.concatenate([filters, -filters])
    layer.set_weights([filters.T.reshape(2, 2, 3, WHITEN_FILTERS).astype("float32"),
                       (-filters @ patches.mean(axis=0)).astype("float32")])


def scale_to_unit(x):
    """0-255 -> 0-1; returns a new array (never writes into `x`)."""
    return x / 255.0


def preprocessing_layer(preprocess):
    """`preprocess` (a Keras preprocess_input) as one Rescaling layer, or None if it is the identity.

    Every registry family's preprocess_input is a per-channel affine map
    (x * scale + offset), so reading it off at a few points gives an exact
    equivalent that saves and loads as a plain Keras layer (no Lambda, so
    `load_model` in safe mode needs none of this project's code). A function
    that is not per-channel affine (e.g. "caffe" mode's RGB->BGR swap) is refused.
    """
    probe = lambda v: np.asarray(preprocess(np.array([[v]], np.float64)), np.float64)[0, 0]  # noqa: E731
    offset = probe([0.0, 0.0, 0.0])
    scale = (np.array([probe(255.0 * unit)[c] for c, unit in enumerate(np.eye(3))]) - offset) / 255.0
    for point in ([255.0, 128.0, 7.0], [3.0, 250.0, 99.0]):
        if not np.allclose(probe(point), np.asarray(point) * scale + offset, rtol=1e-5, atol=1e-5):
            raise ValueError(f"{preprocess.__module__}.{preprocess.__name__} is not a per-channel affine map")
    if np.allclose(scale, 1.0) and np.allclose(offset, 0.0):
        return None
    return keras.layers.Rescaling(scale.tolist(), offset.tolist(), name="preprocess")


@contextlib.contextmanager
def _keras_weights_from(find):
    """keras.applications build a backbone's ImageNet architecture only for weights="imagenet" (EfficientNet
    then adds an input rescaling that its ImageNet weights expect), and fetch that file with
    file_utils.get_file(fname, origin, ...): in the block, `find(get_file, fname, origin, ...)` gives the local
    path instead (Keras' own get_file is passed for the download route), so a local copy of ImageNet weights
    gets the same network as the download. Yields the list of paths handed to Keras."""
    from keras.src.utils import file_utils
    fetch, handed = file_utils.get_file, []

    def get_file(*args, **kwargs):
        handed.append(str(find(fetch, *args, **kwargs)))
        return handed[-1]
    file_utils.get_file = get_file
    try:
        yield handed
    finally:
        file_utils.get_file = fetch


def _in_directory(directory, name, size):
    """A `find` for _keras_weights_from: the file Keras asks for, by Keras' own name, in `directory` (a copy of
    ~/.keras/models), or a one-line StageError naming it."""
    def find(fetch, fname=None, origin=None, *args, **kwargs):
        fname = fname or str(origin).rsplit("/", 1)[-1]
        path = directory / fname
        if not path.is_file():
            raise StageError(f"params.yaml: `weights` directory {directory} has no {fname}, the file Keras downloads "
                             f"for {name} at {size} px: copy it there from ~/.keras/models/ of a machine where "
                             f"`weights: imagenet` ran online, or download it from {origin}")
        return path
    return find


def build_backbone(name, image_size, weights):
    """The registry entry's backbone without its top, as the layer named "backbone". `weights` is "imagenet",
    "none", a weights file (ImageNet weights kept locally) or a directory of Keras' weights files (a copy of
    ~/.keras/models: the file Keras would download for this model is taken from it); a relative path is read
    against the project's root (core.params.weights_source)."""
    return backbone_and_weights_file(name, image_size, weights)[0]


def backbone_and_weights_file(name, image_size, weights):
    """build_backbone's backbone, and the path of the weights file loaded into it (None: random initialisation)."""
    e, size = entry(name), input_size(name, image_size)
    source = weights_source(weights) if e.two_phase else "none"
    if source == "none":
        return _named(e.constructor(include_top=False, weights=None, input_shape=(size, size, 3))), None
    if source == "imagenet":
        find = lambda fetch, *args, **kwargs: fetch(*args, **kwargs)  # noqa: E731 (Keras' download and cache)
    elif source.is_dir():
        find = _in_directory(source, name, size)
    else:
        find = lambda fetch, *args, **kwargs: source  # noqa: E731
    try:
        with _keras_weights_from(find) as handed:
            backbone = e.constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
    except StageError:
        raise
    except Exception as err:  # Keras raises a bare Exception for a failed download
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]  # Keras lists every layer below
        if source == "imagenet" and not handed:
            raise StageError(
                f"could not get ImageNet weights for {name} ({first_line}). Offline, set `weights: none` (random "
                "initialisation), or `weights: <path>` to a no-top weights file for this model or to a copy of "
                "~/.keras/models from an online machine, or put that file in Keras' cache (~/.keras/models/)") from err
        raise StageError(f"params.yaml: `weights` file {handed[-1] if handed else source} does not fit {name} at "
                         f"{size} px: {first_line}") from err
    return _named(backbone), handed[-1] if handed else None


def _named(backbone):
    backbone.name = BACKBONE
    return backbone


def build_trunk(name, image_shape, image_size, weights):
    """Raw uint8 RGB images of `image_shape` (H, W, 3), the dataset's own, -> pooled
    backbone features (layer "pool"): resizing and the family's preprocessing are
    layers, so the saved model needs nothing but images. Frozen for two-phase entries."""
    return trunk_and_weights_file(name, image_shape, image_size, weights)[0]


def trunk_and_weights_file(name, image_shape, image_size, weights):
    """build_trunk's trunk, and the path of the weights file its backbone was loaded from (None: random)."""
    e, size = entry(name), input_size(name, image_size)
    backbone, weights_file = backbone_and_weights_file(name, size, weights)
    inputs = keras.Input(tuple(image_shape), dtype="uint8", name="image")
    x = inputs
    if tuple(image_shape[:2]) != (size, size):
        x = keras.layers.Resizing(size, size, name="resize")(x)  # bilinear, as tf.image.resize
    preprocess = preprocessing_layer(e.preprocess)
    if preprocess is not None:
        x = preprocess(x)
    # training=False keeps BatchNorm in inference mode even once unfrozen (Keras guide).
    x = backbone(x, training=False) if e.two_phase else backbone(x)
    # Averaged in float32 whatever the backbone computes in (mixed_float16 on a GPU): these are the features
    # the features stage caches and phase 1 learns on.
    with float32_layers():
        x = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
    backbone.trainable = not e.two_phase
    return keras.Model(inputs, x, name=f"{name}_trunk"), weights_file


def build_head(n_features, n_classes, units, dropout, name="head"):
    """Dropout -> Dense(units, relu) -> Dropout -> Dense(softmax). Softmax in float32 (mixed precision)."""
    layers = [keras.Input((n_features,)), keras.layers.Dropout(dropout)]
    if units:
        layers += [keras.layers.Dense(units, activation="relu"), keras.layers.Dropout(dropout)]
    layers.append(keras.layers.Dense(n_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(layers, name=name)


def build_model(trunk, n_classes, units, dropout):
    """Phase 1 model: the trunk (backbone frozen, BatchNorm in inference mode) and a new head.

    Returns (model, head): `head` is a sub-model that can be trained on its
    own on the trunk's cached outputs.
    """
    head = build_head(trunk.output.shape[-1], n_classes, units, dropout)
    return keras.Model(trunk.input, head(trunk.output), name=trunk.name.removesuffix("_trunk")), head


def unfreeze(model, fraction, learning_rate):
    """Phase 2: make the top `fraction` of the backbone's layers trainable,
    BatchNorm excepted, and recompile (a change of `trainable` only takes
    effect on compile). Returns the number of layers unfrozen."""
    backbone = model.get_layer(BACKBONE)
    backbone.trainable = True
    n_top = round(fraction * len(backbone.layers))
    for i, layer in enumerate(backbone.layers):
        top = i >= len(backbone.layers) - n_top
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)
    compile_model(model, learning_rate)
    return sum(layer.trainable for layer in backbone.layers)


def _frontier(layers, cut):
    """The tensors that layers[:cut] produce and layers[cut:] take: what the layers from `cut` on need."""
    below, frontier = {id(layer) for layer in layers[:cut]}, []
    for layer in layers[cut:]:
        for node in layer._inbound_nodes:  # Keras 3 keeps each call's input tensors on its node
            for t in node.input_tensors:
                if id(t._keras_history[0]) in below and not any(t is f for f in frontier):
                    frontier.append(t)
    return frontier


def split_at_trainable(model):
    """(bottom, top) of a phase-2 model (after `unfreeze`), sharing its layers: `bottom` maps raw images to the
    tensors inside the backbone that feed its first layer with trainable weights (the frontier: one tensor, or
    two where a skip connection crosses it), computed by layers with none; `top` maps those tensors to the
    model's output. top(bottom(x)) is model(x): the frozen layers (BatchNorm in inference mode) compute the same
    thing every epoch for the same image, so phase 2 can compute them once per augmented view (core.training.
    fine_tune_cached). Without trainable backbone layers the frontier is the backbone's output."""
    backbone = model.get_layer(BACKBONE)
    layers = backbone.layers
    # Any cut at or below the first layer with trainable weights is exact; from where unfreeze opened the top
    # (the first layer it made trainable, weights or not, and the BatchNorm it kept frozen just below) to there,
    # the one whose frontier holds the fewest values per image: the cache's size. (ResNet50V2's first trainable
    # conv also needs its block's skip input; the block's first layer, a BatchNorm, needs only that.)
    weighted = next((i for i, layer in enumerate(layers) if layer.trainable_weights), len(layers))
    opened = min(weighted, next((i for i, layer in enumerate(layers) if layer.trainable), weighted))
    while opened and isinstance(layers[opened - 1], keras.layers.BatchNormalization):
        opened -= 1
    # From the top down, so that of equal sizes the highest cut wins (the most layers cached).
    frontier = min((_frontier(layers, c) for c in range(weighted, opened - 1, -1)),
                   key=lambda f: sum(math.prod(t.shape[1:]) for t in f))
    above = bool(frontier)  # no frontier: nothing in the backbone is trained, the cut is at its output
    frontier = frontier or [backbone.output]
    x = model.input
    for layer in model.layers[1:model.layers.index(backbone)]:  # resize and preprocessing, as the model has them
        x = layer(x)
    bottom = keras.Model(model.input, keras.Model(backbone.input, frontier)(x, training=False), name="bottom")
    inputs = [keras.Input(t.shape[1:], dtype=t.dtype) for t in frontier]
    y = keras.Model(frontier, backbone.output)(inputs, training=False) if above else inputs[0]
    for layer in model.layers[model.layers.index(backbone) + 1:]:  # pooling and the head
        y = layer(y)
    return bottom, keras.Model(inputs, y, name="top")


def with_dtype_policy(model, policy):
    """A copy of `model` (weights copied) whose layers, nested models' included, compute in the Keras dtype
    policy `policy` ("float32", "mixed_bfloat16", ...). Input layers keep their dtype (uint8 images).
    Weights are float32 under every policy, so only the arithmetic changes."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": policy}}
            # The architecture only: a compiled sub-model (the head, trained alone in phase 1) would come back
            # compiled, and its optimizer's moments would be saved inside the shipped file.
            return {k: walk(v) for k, v in node.items() if k != "compile_config"}
        return [walk(v) for v in node] if isinstance(node, list) else node
    copy = keras.saving.deserialize_keras_object(walk(keras.saving.serialize_keras_object(model)))
    copy.set_weights(model.get_weights())
    return copy


def in_policy(model, setting, plan, cpu_bfloat16=True):
    """(network, policy): `model` computing in the dtype policy `setting` gives on `plan`
    (core.hardware.compute_policy): the model itself where that is the plan's global policy, which every model
    is built in, else a with_dtype_policy copy, whose trained weights copy_weights carries back to `model`."""
    policy = hardware.compute_policy(setting, plan, cpu_bfloat16)
    return (model if policy == hardware.global_policy(plan) else with_dtype_policy(model, policy)), policy


def copy_weights(source, target):
    """Every weight of `source` into `target`, the same network in another dtype policy (with_dtype_policy's
    copy, whose weights come in the same order; a deserialized Sequential's paths lose their prefix, so order, not
    path, pairs them). A count or shape that differs is an error, never skipped."""
    pairs = list(zip(source.weights, target.weights))
    if len(source.weights) != len(target.weights) or any(a.shape != b.shape for a, b in pairs):
        raise ValueError(f"{source.name} and {target.name} do not hold the same weights")
    for a, b in pairs:
        b.assign(a)


def backbone_policy(model):
    """The dtype policy `model` computes in, read from its backbone's layers (nearly all its arithmetic):
    what conditions record, since the global policy only says what layers built next would get."""
    layers = [layer for layer in model.get_layer(BACKBONE).layers if layer.weights]
    return "+".join(sorted({layer.dtype_policy.name for layer in layers}))


@contextlib.contextmanager
def float32_layers():
    """Layers built in the block compute in float32, whatever the global policy (mixed_float16 on a GPU,
    core.hardware.configure). Where it is float32 already (CPU) it is left alone, so that layers keep sharing
    its one policy object and saved files keep their bytes."""
    before = keras.mixed_precision.global_policy()
    if before.name == "float32":
        yield
        return
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def for_deployment(model, flip_tta=False):
    """The trained network computing in float32, without optimizer state, which `.keras` files
    otherwise carry (Adam's two moments per trainable weight: up to 3x the
    weights). What users ship and what evaluate and profile measure: one
    network whatever precision it was trained in (core.hardware.compute_policy),
    averaged over each image and its mirror image if `flip_tta` (with_flip_tta).

    It is compiled with plain SGD, loss and accuracy, so `model.evaluate` works
    after loading; `fit` on it would train with SGD at Keras' default rate:
    recompile (core.models.compile_model) to fine-tune it further."""
    clone = with_dtype_policy(model, "float32")
    if flip_tta:
        clone = with_flip_tta(clone)
    # SGD without momentum keeps no per-weight state, so the file holds the same optimizer variables as
    # the model built at loading time. An unbuilt Adam saves 2 variables and is rebuilt with 2 per weight
    # at loading, and Keras warns "Skipping variable loading for optimizer" on every load.
    clone.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return clone


def with_flip_tta(model):
    """`model` averaged over each image and its mirror image (flip test-time augmentation), as one model: its
    latency, FLOPs and exports include the second pass. The mirror is a fixed permutation matrix on the width
    axis (a Dense layer), and both passes share `model`'s layers, which stay top-level layers (get_layer
    ("backbone") works), so the file loads in safe mode and holds each weight once. `model` must be a chain
    of layers, as build_model's are."""
    with float32_layers():
        return _with_flip_tta(model)


def _with_flip_tta(model):
    image = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="image")
    width = model.input.shape[2]
    x = keras.layers.Rescaling(1.0, name="to_float")(image)  # pixel values kept, uint8 -> float32
    x = keras.layers.Permute((1, 3, 2))(x)  # (H, W, C) -> (H, C, W): the width last, for Dense
    mirror = keras.layers.Dense(width, use_bias=False, trainable=False, name="mirror")
    x = keras.layers.Permute((1, 3, 2))(mirror(x))
    mirror.set_weights([np.eye(width, dtype="float32")[::-1]])

    def through(x):
        for layer in model.layers[1:]:
            x = layer(x)
        return x
    outputs = keras.layers.Average(name="flip_tta")([through(image), through(x)])
    return keras.Model(image, outputs, name=model.name)


def compile_model(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
