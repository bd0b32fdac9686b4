"""Shared core of the pipeline: small functions that the stages in stages/ compose."""


class StageError(Exception):
    """A problem the user can fix (bad param, bad download, bad dataset).

    Stages report it as one line naming the key or file and the fix, and exit
    non-zero, without a traceback.
    """
