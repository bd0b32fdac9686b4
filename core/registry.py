"""One registry of models: what each one is, without importing TensorFlow.

Params checking and the resolve_params stage (which decides which params each model's stages read) need
these facts in a fraction of a second; core.models turns an entry into a network. Adding a Keras
application is one REGISTRY line.
"""
import importlib
from dataclasses import dataclass
from typing import Optional

from core import StageError
from core.params import MIN_IMAGE_SIZE


@dataclass(frozen=True)
class Entry:
    application: Optional[str]     # keras.applications constructor ("MobileNetV2"); None: core.models.base_cnn
    family: Optional[str]          # keras.applications module with its preprocess_input ("mobilenet_v2")
    min_size: int = MIN_IMAGE_SIZE  # smallest input side the architecture accepts (px)
    fixed_size: Optional[int] = None  # always this input side (px), whatever `image_size` says
    two_phase: bool = True         # ImageNet weights possible, trained by the two-phase recipe; False: from scratch
    cpu_bfloat16: bool = True      # `auto` precision computes in bfloat16 on a CPU that has it natively; False where
                                   #   that is slower than float32 (depthwise convolutions: bench/phase2.py)

    @property
    def recipe(self):
        """The training recipe, which decides the params its stages read (core.reads)."""
        return "two_phase" if self.two_phase else "scratch"

    @property
    def constructor(self):
        """keras.applications-style: (include_top, weights, input_shape) -> Model. Imports Keras."""
        models = importlib.import_module("core.models")
        return getattr(models.keras.applications, self.application) if self.application else models.base_cnn

    @property
    def preprocess(self):
        """The model's own preprocess_input, on float 0-255 RGB. Imports Keras."""
        models = importlib.import_module("core.models")
        if self.family is None:
            return models.scale_to_unit
        return getattr(models.keras.applications, self.family).preprocess_input


REGISTRY = {
    "basecnn": Entry(None, None, fixed_size=32, two_phase=False),
    "mobilenetv2": Entry("MobileNetV2", "mobilenet_v2", cpu_bfloat16=False),
    "resnet50v2": Entry("ResNet50V2", "resnet_v2"),
    "efficientnetb0": Entry("EfficientNetB0", "efficientnet", cpu_bfloat16=False),
    "densenet121": Entry("DenseNet121", "densenet"),
}


def entry(name):
    if isinstance(name, (dict, list)) or name not in REGISTRY:
        raise StageError(f"params.yaml: `model` is {name!r}; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def input_size(name, image_size):
    """The input side (px) `name` runs at when params ask for `image_size` (not read for a fixed-size model)."""
    e = entry(name)
    if e.fixed_size:
        return e.fixed_size
    if image_size < e.min_size:
        raise StageError(f"params.yaml: `image_size` is {image_size}; {name} needs at least {e.min_size} px")
    return image_size
