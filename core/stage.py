"""What every model stage (features, train, evaluate, profile) does first."""
from dataclasses import dataclass

from core import hardware, models
from core.params import check_section, spec_number


@dataclass(frozen=True)
class Start:
    name: str            # params' `model`
    entry: models.Entry  # its registry entry
    image_size: int      # the side (px) the backbone runs at (basecnn: always 32)
    seed: int
    plan: dict           # core.hardware.plan for this machine
    checked: dict        # the stage's params sections, checked: {dotted key: value}


def start(params, *sections):
    """Check the model and the stage's params sections (unknown keys, ranges)
    before any work, then seed and configure TensorFlow (before its first op)."""
    checked = {}
    for section in sections:
        checked.update(check_section(params, section))
    name = params["model"]
    entry = models.entry(name)
    size = models.input_size(name, spec_number(params, "image_size"))
    seed = spec_number(params, "seed")
    return Start(name, entry, size, seed, hardware.configure(seed), checked)
