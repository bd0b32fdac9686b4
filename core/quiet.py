"""Output of native code caught at the file descriptor, so that a stage prints
what matters: its progress, real warnings and errors (standard library only).

TensorFlow's C++ side writes to file descriptors 1 and 2 directly, some of it
before its log level is read (absl's "before InitializeLog" lines), so neither
`TF_CPP_MIN_LOG_LEVEL` nor redirecting `sys.stderr` reaches it. `captured`
points the descriptors at a temporary file for the length of a block;
`filtered` then writes back every line that is not on an explicit list of
known noise, so a line nobody listed, a real warning or error, still shows.

If the process dies inside a block (TensorFlow aborts at start-up on a CPU
without AVX: SIGABRT, or SIGILL), none of its own code runs again, yet what it
printed on the way down is the reason; for a block that asks for it
(`guard=True`: TensorFlow's start-up), a small guardian process, started with the
block, writes everything caught back to stderr when that happens.

`TF_CPP_MIN_LOG_LEVEL=0` in the environment (TensorFlow's "log everything")
turns both off: everything is printed as it comes, e.g. to see why TensorFlow
aborted while starting.
"""
import contextlib
import logging
import os
import re
import subprocess
import sys
import tempfile


def _glog(source, message):
    """A line of TensorFlow's C++ logging (`I0000 00:00:1712.25  123 port.cc:153] message`)."""
    return re.compile(r"^[IWE]\d{4} [\d:.]+\s+\d+ " + re.escape(source) + r":\d+\] " + message)


# What `import tensorflow` and its first device listing print on a machine without a GPU, and nothing else.
STARTUP_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    _glog("port.cc", r"oneDNN custom operations are on\."),
    _glog("cudart_stub.cc", r"Could not find cuda drivers on your machine, GPU will not be used\."),
    _glog("cpu_feature_guard.cc", r"This TensorFlow binary is optimized to use available CPU instructions"),
    re.compile(r"^To enable the following instructions: .*, in other operations, rebuild TensorFlow with the "
               r"appropriate compiler flags\.$"),
)
NO_CUDA_DRIVER = STARTUP_NOISE[2]
# An error only where a GPU was expected: dropped when the same start-up said there is no CUDA driver at
# all (a CPU machine), kept otherwise (a GPU machine whose driver failed).
CUINIT_FAILED = _glog("cuda_platform.cc", r"failed call to cuInit: ")
# One INFO line per TFLite interpreter (printed by TFLite's own logger).
XNNPACK_INFO = (re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),)


def verbose():
    """The user asked TensorFlow to log everything: show its output as it comes."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0"


class Captured:
    text = ""  # everything written to the descriptors inside the block, set on leaving it

    def lines(self):
        return self.text.splitlines()

    def tail(self, n):
        return "\n".join(self.lines()[-n:])


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):  # a closed or replaced stream has nothing to flush
            stream.flush()


# Waits for one byte on the control pipe, the all-clear the block sends when it ends; end of file without
# it means the process died inside the block, and the guardian writes out the file of what was caught.
GUARDIAN = """
import os, sys
control, caught = int(sys.argv[1]), int(sys.argv[2])
if not os.read(control, 1):
    offset = 0
    while chunk := os.pread(caught, 1 << 16, offset):
        os.write(2, chunk)
        offset += len(chunk)
"""


def _guardian(caught):
    """Start the guardian of the file `caught` (writing to the stderr of the moment); returns the control
    pipe's write end and the process, or None where it cannot run (not POSIX, no Python executable)."""
    if os.name != "posix" or not sys.executable:
        return None
    read, write = os.pipe()
    try:
        # Its own session: Ctrl-C in the terminal is for the stage, not for the guardian.
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GUARDIAN, str(read), str(caught.fileno())],
                                pass_fds=(read, caught.fileno()), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(write)
        return None
    finally:
        os.close(read)
    return write, proc


def _all_clear(guardian):
    if guardian is not None:
        write, proc = guardian
        os.write(write, b"1")
        os.close(write)
        proc.wait()


@contextlib.contextmanager
def captured(fds=(2,), guard=False):
    """Point file descriptors `fds` (2: stderr, 1: stdout) at one temporary file
    for the block; yields a Captured whose `text` is set on leaving it (also when
    the block raises); `guard`: a guardian process shows the text if the process
    dies inside the block. Python's buffered streams are flushed on both sides, so
    nothing written before the block is caught and nothing inside escapes it, and
    sys.stdout / sys.stderr write to the file too for the block, even where they
    were not the descriptors' own (a notebook, pytest)."""
    result = Captured()
    if verbose():
        yield result
        return
    _flush()
    saved = {fd: os.dup(fd) for fd in fds}
    streams = {fd: name for fd, name in ((1, "stdout"), (2, "stderr")) if fd in fds}
    python = {name: getattr(sys, name) for name in streams.values()}
    with tempfile.TemporaryFile() as tmp:
        guardian = _guardian(tmp) if guard else None
        try:
            for fd in fds:
                os.dup2(tmp.fileno(), fd)
            for fd, name in streams.items():
                setattr(sys, name, open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                                        closefd=False))  # line-buffered: in order with C output
            yield result
        finally:
            for name, stream in python.items():
                _repoint_handlers(getattr(sys, name), stream)
                getattr(sys, name).close()  # flushes; the descriptor stays open (closefd=False)
                setattr(sys, name, stream)
            _flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            result.text = tmp.read().decode("utf-8", "replace")
            _all_clear(guardian)


def _repoint_handlers(old, new):
    """Logging handlers made inside the block hold the block's stream (TensorFlow's logger makes its handler
    with sys.stderr at import): point them at the stream that outlives it, or their next record fails."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for handler in (h for logger in loggers for h in logger.handlers):
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)


def without_noise(lines, noise):
    """`lines` less those matching a pattern of `noise`; a failed cuInit only if there is no CUDA driver."""
    no_driver = any(NO_CUDA_DRIVER.search(line) for line in lines)
    return [line for line in lines if not any(p.search(line) for p in noise)
            and not (no_driver and CUINIT_FAILED.search(line))]


@contextlib.contextmanager
def filtered(noise, fds=(2,), guard=False):
    """Run the block with `fds` captured, then write every captured line that is
    not noise to stderr (also when the block raises)."""
    out = Captured()
    try:
        with captured(fds, guard) as out:
            yield
    finally:
        kept = without_noise(out.lines(), noise)
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
            sys.stderr.flush()
