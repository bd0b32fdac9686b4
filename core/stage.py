"""What every model stage (features, train, evaluate, profile) does first."""
from dataclasses import dataclass

from core import hardware
from core.reads import resolve_checked
from core.registry import Entry, entry


@dataclass(frozen=True)
class Start:
    name: str            # params' `model`
    entry: Entry         # its registry entry
    seed: int
    plan: dict           # core.hardware.plan for this machine
    params: dict         # the params this stage reads for this model, checked (core.reads.resolve)
    checked: dict        # the same, flat: {dotted key: checked value}


def start(params, stage):
    """Check the params `stage` reads for the selected model (unknown keys, ranges, choices) before any
    work, then seed and configure TensorFlow (before its first op). `params` is params.yaml or what
    resolve_params wrote for this stage (the same keys, the same shape)."""
    params, checked = resolve_checked(params, stage)
    return Start(params["model"], entry(params["model"]), checked["seed"], hardware.configure(checked["seed"]),
                 params, checked)
