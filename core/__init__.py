"""Shared core of the pipeline: small functions that the stages in stages/ compose."""


class StageError(Exception):
    """A problem the user can fix (bad param, bad download, bad dataset).

    Stages report it as one line naming the key or file and the fix, and exit
    non-zero, without a traceback.
    """


# Set by `make benchmark JOBS=N` (compare.benchmark) for its DVC queue workers: N experiments share this host,
# so each stage sizes its threads to its share of the cores (core.hardware.usable_cores). Here, without
# TensorFlow, for the comparison, which never loads it.
WORKERS_ENV = "BENCHMARK_WORKERS"
