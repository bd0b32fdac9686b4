"""One registry of models, and the two-phase transfer-learning recipe.

A model is `inputs -> backbone -> global average pooling -> head`. The
backbone comes from the registry; the head (dropout, dense, softmax) is the
same for every entry, so adding a Keras application is one REGISTRY line.
Inputs are images already resized and passed through the entry's
`preprocess` (done in the data pipeline, see core/pipeline.py).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import keras

from core import StageError


def base_cnn(include_top=False, weights=None, input_shape=(32, 32, 3)):
    """A small VGG-style CNN trained from scratch: three blocks of two
    3x3 conv + BatchNorm + ReLU, then max-pooling; 288k parameters.
    Same signature as keras.applications so the registry treats it alike."""
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (32, 64, 128):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    return keras.Model(inputs, x, name="basecnn")


def scale_to_unit(x):
    """0-255 -> 0-1; returns a new tensor (never writes into `x`)."""
    return x / 255.0


@dataclass(frozen=True)
class Entry:
    constructor: Callable          # keras.applications-style: (include_top, weights, input_shape) -> Model
    preprocess: Callable           # the model's own preprocess_input, on float 0-255 RGB
    min_size: int = 32             # smallest input side the architecture accepts (px)
    fixed_size: Optional[int] = None  # always this input side (px), whatever `image_size` says
    pretrained: bool = True        # False: no ImageNet weights; trained end to end in one phase


apps = keras.applications
REGISTRY = {
    "basecnn": Entry(base_cnn, scale_to_unit, fixed_size=32, pretrained=False),
    "mobilenetv2": Entry(apps.MobileNetV2, apps.mobilenet_v2.preprocess_input),
    "resnet50v2": Entry(apps.ResNet50V2, apps.resnet_v2.preprocess_input),
    "efficientnetb0": Entry(apps.EfficientNetB0, apps.efficientnet.preprocess_input),
    "densenet121": Entry(apps.DenseNet121, apps.densenet.preprocess_input),
}


def entry(name):
    if name not in REGISTRY:
        raise StageError(f"params.yaml: `model` is {name!r}; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def input_size(name, image_size):
    """The input side (px) `name` runs at when params ask for `image_size`."""
    e = entry(name)
    if e.fixed_size:
        return e.fixed_size
    if image_size < e.min_size:
        raise StageError(f"params.yaml: `image_size` is {image_size}; {name} needs at least {e.min_size} px")
    return image_size


def build_backbone(name, image_size, weights):
    """The registry entry's backbone without its top. `weights` is
    "imagenet", "none" or a weights file for this architecture."""
    e, size = entry(name), input_size(name, image_size)
    if weights == "none" or not e.pretrained:
        source = None
    elif weights == "imagenet":
        source = "imagenet"
    elif Path(str(weights)).is_file():
        source = str(weights)
    else:
        raise StageError(f"params.yaml: `weights` is {weights!r}; allowed: imagenet, none, or a weights file path")
    try:
        return e.constructor(include_top=False, weights=source, input_shape=(size, size, 3))
    except Exception as err:  # Keras raises a bare Exception for a failed download
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]  # Keras lists every layer below
        if source == "imagenet":
            raise StageError(
                f"could not get ImageNet weights for {name} ({first_line}). Offline, set `weights: none` (random "
                "initialisation), or `weights: <path>` to a no-top weights file for this model, or put that "
                "file in Keras' cache (~/.keras/models/)") from err
        if source is not None:
            raise StageError(f"params.yaml: `weights` file {source} does not fit {name} at {size} px: {first_line}") from err
        raise


def build_head(n_features, n_classes, units, dropout, name="head"):
    """Dropout -> Dense(units, relu) -> Dropout -> Dense(softmax). Softmax in float32 (mixed precision)."""
    layers = [keras.Input((n_features,)), keras.layers.Dropout(dropout)]
    if units:
        layers += [keras.layers.Dense(units, activation="relu"), keras.layers.Dropout(dropout)]
    layers.append(keras.layers.Dense(n_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(layers, name=name)


def build_model(name, n_classes, image_size, weights, units, dropout):
    """Phase 1 model: frozen backbone (BatchNorm in inference mode), new head.

    Returns (model, backbone, head): `head` is a sub-model that can be
    trained on its own on cached backbone features.
    """
    backbone = build_backbone(name, image_size, weights)
    size = input_size(name, image_size)
    pretrained = entry(name).pretrained
    backbone.trainable = not pretrained
    inputs = keras.Input((size, size, 3))
    # training=False keeps BatchNorm in inference mode even once unfrozen (Keras guide).
    x = backbone(inputs, training=False) if pretrained else backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    head = build_head(x.shape[-1], n_classes, units, dropout)
    model = keras.Model(inputs, head(x), name=name)
    return model, backbone, head


def unfreeze(model, backbone, fraction, learning_rate):
    """Phase 2: make the top `fraction` of the backbone's layers trainable,
    BatchNorm excepted, and recompile (a change of `trainable` only takes
    effect on compile). Returns the number of layers unfrozen."""
    backbone.trainable = True
    n_top = round(fraction * len(backbone.layers))
    for i, layer in enumerate(backbone.layers):
        top = i >= len(backbone.layers) - n_top
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)
    compile_model(model, learning_rate)
    return sum(layer.trainable for layer in backbone.layers)


def for_deployment(model):
    """The trained network without optimizer state, which `.keras` files
    otherwise carry (Adam's two moments per trainable weight: up to 3x the
    weights). What users ship and what the profile's size measures."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    compile_model(clone, 1e-3)  # loss and metrics for model.evaluate after loading; the optimizer stays unbuilt
    return clone


def compile_model(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
