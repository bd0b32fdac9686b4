"""core.quiet: native output caught at the file descriptor, known noise dropped, the rest kept.
Each case runs in a child process that writes with os.write, as C++ code does (below sys.stderr)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795668885.262646   27745 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1795668885.263249   27745 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1795668885.360225   27745 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
]
CUINIT = ("E0000 00:00:1795668887.827981   27745 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)")
REAL = [
    "E0000 00:00:1795668887.900000   27745 some_kernel.cc:12] a real error nobody listed",
    "W0000 00:00:1795668887.900000   27745 port.cc:153] oneDNN something else",  # a listed file, another message
    "UserWarning: a Python warning",
]

CHILD = """
import os, sys
from core import quiet
lines = sys.argv[1].split("\\n")
print("before", flush=True)
try:
    with quiet.filtered(quiet.STARTUP_NOISE):
        for line in lines:
            os.write(2, (line + "\\n").encode())
        if sys.argv[2] == "raise":
            raise SystemExit(3)
finally:
    os.write(2, b"after\\n")
"""


def child(lines, *, then="", env=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run([sys.executable, "-c", CHILD, "\n".join(lines), then], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def test_known_startup_noise_is_dropped_and_every_other_line_kept_in_order():
    out = child([NOISE[0], REAL[0], *NOISE[1:3], CUINIT, REAL[1], *NOISE[3:], REAL[2]])
    assert out.returncode == 0 and out.stdout == "before\n"
    assert out.stderr.splitlines() == [*REAL, "after"]


def test_a_failed_cuinit_is_kept_where_a_cuda_driver_exists():
    """Dropped only beside "Could not find cuda drivers" (a CPU machine); on a GPU machine it is a real error."""
    out = child([NOISE[0], CUINIT])
    assert out.stderr.splitlines() == [CUINIT, "after"]


def test_what_was_caught_is_written_back_when_the_block_raises():
    out = child([NOISE[0], REAL[0]], then="raise")
    assert out.returncode == 3 and out.stderr.splitlines() == [REAL[0], "after"]


def test_tf_cpp_min_log_level_0_shows_everything_as_it_comes():
    out = child([*NOISE, CUINIT], env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert out.stderr.splitlines() == [*NOISE, CUINIT, "after"]


CAPTURE = """
import json, os, sys
from core import quiet
print("out before", flush=True)
sys.stderr.write("err before, unflushed")
with quiet.captured((1, 2)) as got:
    print("python stdout")
    os.write(1, b"C stdout\\n")
    sys.stderr.write("python stderr\\n")
    os.write(2, b"C stderr\\n")
print("out after")
sys.stderr.write("|" + json.dumps(got.lines()) + "\\n")
"""


def test_captured_takes_both_descriptors_in_order_and_lets_nothing_through():
    out = subprocess.run([sys.executable, "-c", CAPTURE], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "1"})
    assert out.stdout == "out before\nout after\n"
    before, lines = out.stderr.split("|")
    assert before == "err before, unflushed"  # written before the block: not caught
    assert json.loads(lines) == ["python stdout", "C stdout", "python stderr", "C stderr"]


LOGGER_CHILD = """
import logging, sys
from core import quiet
with quiet.filtered(quiet.STARTUP_NOISE):
    logger = logging.getLogger("made_inside")  # as TensorFlow's logger is, at import
    logger.addHandler(logging.StreamHandler(sys.stderr))
logger.warning("a warning after the block")
"""


def test_a_logging_handler_made_inside_the_block_still_writes_after_it():
    """TensorFlow makes its logger's handler with the sys.stderr of the moment (inside runtime's block); a
    warning it logs later (e.g. tf.function retracing) must reach stderr, not a closed temporary stream."""
    out = subprocess.run([sys.executable, "-c", LOGGER_CHILD], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stderr == "a warning after the block\n", out.stderr


ABORT_CHILD = """
import os, resource, sys
from core import quiet
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
with quiet.{block}:
    os.write(2, b"{line}\\n")
    os.abort()
"""
# What TensorFlow prints before it aborts on a CPU without AVX: the one line that says why.
NO_AVX = ("The TensorFlow library was compiled to use AVX instructions, but these aren't available on your "
          "machine.")


@pytest.mark.parametrize("block", ["filtered(quiet.STARTUP_NOISE, guard=True)", "captured((1, 2), guard=True)"])
def test_a_process_that_dies_inside_the_block_still_shows_what_it_printed(tmp_path, block):
    """The block's own clean-up never runs in a process killed by SIGABRT (or SIGILL): the line that says why
    must reach the parent's stderr all the same."""
    import signal
    out = subprocess.run([sys.executable, "-c", ABORT_CHILD.format(block=block, line=NO_AVX)], capture_output=True,
                         text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "1"})
    assert out.returncode == -signal.SIGABRT
    assert out.stderr.splitlines() == [NO_AVX]


def test_only_a_guarded_block_starts_a_guardian(monkeypatch):
    """A guardian is a Python start-up per block: TensorFlow's import has one, the blocks around each TFLite
    conversion and interpreter (which cannot abort the process at start-up) do not."""
    from core import quiet
    started = []
    monkeypatch.setattr(quiet, "_guardian", lambda caught: started.append(caught) or None)
    with quiet.filtered(quiet.XNNPACK_INFO):
        pass
    with quiet.captured((1, 2)):
        pass
    assert started == []
    with quiet.captured((1, 2), guard=True):
        pass
    assert len(started) == 1


def test_tensorflow_aborting_at_import_shows_why(tmp_path):
    """core.runtime's import block is the guarded one: a Keras/TensorFlow that aborts while importing (a
    stand-in package that prints TensorFlow's no-AVX line and aborts) still shows its line."""
    import signal
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras/__init__.py").write_text(f"import os\nos.write(2, {(NO_AVX + chr(10)).encode()!r})\nos.abort()\n")
    child = "import resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); import core.runtime"
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "TF_CPP_MIN_LOG_LEVEL": "1"},
                         timeout=60)
    assert out.returncode == -signal.SIGABRT
    assert out.stderr.splitlines() == [NO_AVX]


@pytest.mark.slow
@pytest.mark.parametrize("given, level", [(None, "1"), ("3", "3"), ("0", "0")])
def test_tensorflow_log_level_defaults_to_1_and_a_users_level_is_kept(given, level):
    """core.runtime turns TensorFlow's INFO lines off unless the user chose a level, which it keeps."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {"PYTHONPATH": str(ROOT)}
    if given is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = given
    out = subprocess.run([sys.executable, "-c", "import os, core.runtime; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == level
