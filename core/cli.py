"""The `__main__` guard every stage shares: read params.yaml, run, report.

What becomes one `error:` line (exit 1) and what keeps its traceback:

- StageError: a problem the user can fix, raised by our own checks.
- OSError from the file system that names a file (permission denied, a
  read-only or full disk, a path that is a file where a directory should be,
  too many open files, an I/O error): the environment, not the code, so the
  file and the reason are what the user needs. Every such OSError is one line,
  whoever raised it (our writers, numpy, Keras, h5py), since the fix is always
  on the user's side of the file.
- Anything else (TypeError, KeyError, ValueError from our own code or a
  library we failed to guard) is a bug: it keeps its full traceback so it can
  be reported and fixed, instead of being dressed up as a user error.
"""
import contextlib
import errno
import sys

from core import StageError
from core.params import load

# OSErrors that the environment causes, with the fix for each.
ENVIRONMENT_ERRORS = {
    errno.EACCES: "check that you may write (or read) there",
    errno.EPERM: "check that you may write (or read) there",
    errno.EROFS: "that file system is read-only: run from a writable copy of the project",
    errno.ENOSPC: "free space on that disk and run again",
    errno.EDQUOT: "free space (disk quota) and run again",
    errno.ENOENT: "missing: run the stage that writes it (`dvc repro`), or check the path in params.yaml",
    errno.ENOTDIR: "a part of that path is a file where a directory is expected: move it away",
    errno.EISDIR: "that path is a directory where a file is expected: move it away",
    errno.EEXIST: "something already exists there: move it away",
    errno.EMFILE: "raise the limit on open files (`ulimit -n`)",
    errno.EIO: "the disk reported an I/O error: check it",
    errno.ELOOP: "that path is a symlink loop: fix the link",
    errno.ENAMETOOLONG: "shorten that path",
}


def one_line(text):
    """A message as one line (a library's message may span several)."""
    return " ".join(str(text).split())


def environment_error(e):
    """The one-line report for an OSError caused by the environment, or None for anything else."""
    if not isinstance(e, OSError) or e.errno not in ENVIRONMENT_ERRORS:
        return None
    where = f"{e.filename}: " if e.filename is not None else ""
    also = f"(and {e.filename2}) " if getattr(e, "filename2", None) else ""
    return one_line(f"{where}{also}{e.strerror or e}; {ENVIRONMENT_ERRORS[e.errno]}; the previous outputs are "
                    "unchanged")


def report(e):
    """The `error:` line for an exception, or None if it is a bug that should keep its traceback."""
    if isinstance(e, StageError):
        return f"error: {one_line(e)}"
    line = environment_error(e)
    return f"error: {line}" if line else None


# sys.platform values the stages run on. Windows lacks what core.io's atomic directory swap and the memory
# figures rely on (flock on a directory, renaming a directory onto an existing one, getrusage).
SUPPORTED_PLATFORMS = {"linux": "Linux", "darwin": "macOS"}


def unsupported_platform(platform=None):
    """The `error:` line for a system the stages do not run on, or None."""
    platform = platform or sys.platform
    if platform in SUPPORTED_PLATFORMS:
        return None
    return (f"error: this system ({platform}) is not supported: the stages run on "
            f"{' and '.join(SUPPORTED_PLATFORMS.values())} (on Windows, run them in WSL 2)")


def close_progress_bars():
    """Close the tqdm bars a failed stage left open, so that the line printed next starts a line of its own
    and stays the last one: an open bar is closed at exit and redraws itself below it otherwise."""
    tqdm = sys.modules.get("tqdm")  # no module, no bar
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):  # a bar that cannot close must not hide the error itself
            bar.close()


def run(main, params_path="params.yaml"):
    """Call `main(params)` with params.yaml (or, for the features and train stages, what resolve_params wrote
    for them) read as DVC reads it; a user-fixable problem becomes one line on stderr and exit 1 (see the
    module docstring)."""
    refusal = unsupported_platform()
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(1)
    try:
        main(load(params_path) if params_path == "params.yaml" else
             load(params_path, "run `dvc repro` (its resolve_params stage writes it from params.yaml)"))
    except KeyboardInterrupt:
        close_progress_bars()
        print("interrupted; outputs were left as they were before this run", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 (re-raised below unless it is the user's to fix)
        close_progress_bars()
        line = report(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(1)
