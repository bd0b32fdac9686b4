"""What every model stage (features, train, evaluate, profile) does first."""
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

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
    wall_s: dict = field(default_factory=dict)  # {step: seconds}: where the stage's time went (conditions files)

    @contextmanager
    def timed(self, step):
        """Record the wall time of the block under `step` (docs/performance.md's per-stage table reads them)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.wall_s[step] = round(time.perf_counter() - began, 2)

    def timings(self):
        """The steps' wall times, and the process's since it started (imports included: the whole stage when DVC
        runs it)."""
        return {**self.wall_s, "process": round(time.time() - psutil.Process().create_time(), 2)}


def start(params, stage):
    """Check the params `stage` reads for the selected model (unknown keys, ranges, choices) before any
    work, then seed and configure TensorFlow (before its first op). `params` is params.yaml or what
    resolve_params wrote for this stage (the same keys, the same shape)."""
    params, checked = resolve_checked(params, stage)
    return Start(params["model"], entry(params["model"]), checked["seed"], hardware.configure(checked["seed"]),
                 params, checked)
