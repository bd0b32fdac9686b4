import os
import tempfile

# Before anything imports Keras (it reads KERAS_HOME once, at import, and writes keras.json there) or starts
# DVC, and in os.environ so every subprocess inherits them: nothing read from or written to the user's home
# (Keras' cache, DVC's global config and analytics id, Matplotlib's font cache, git's ~/.gitconfig, which
# may sign every commit or run hooks) or left under /var/tmp/dvc (DVC's per-repo site cache). HOME itself
# is a directory of the session's, for whatever else reads it (git, DVC's git libraries).
# Subprocesses given an environment of their own take SESSION_ENV into it. A process of the session that
# imports this module (a probe) keeps the session's directory; the session that made it removes it.
_OWN_STATE = "PYTEST_SESSION_STATE" not in os.environ
_SESSION_STATE = os.environ.get("PYTEST_SESSION_STATE") or tempfile.mkdtemp(prefix="pytest-hermetic-")
SESSION_ENV = {
    "PYTEST_SESSION_STATE": _SESSION_STATE,
    "DVC_NO_ANALYTICS": "1",  # `dvc init` runs before `dvc config core.analytics false` can
    "DVC_GLOBAL_CONFIG_DIR": os.path.join(_SESSION_STATE, "dvc-global"),
    "DVC_SITE_CACHE_DIR": os.path.join(_SESSION_STATE, "dvc-site-cache"),
    "KERAS_HOME": os.path.join(_SESSION_STATE, "keras"),
    "MPLCONFIGDIR": os.path.join(_SESSION_STATE, "matplotlib"),
    "HOME": os.path.join(_SESSION_STATE, "home"),
    "GIT_CONFIG_NOSYSTEM": "1",  # nor /etc/gitconfig
}
os.environ.update(SESSION_ENV)
os.makedirs(SESSION_ENV["HOME"], exist_ok=True)
# The identity `dvc exp run` commits experiments with (it refuses to run without one): here, not the user's.
with open(os.path.join(SESSION_ENV["HOME"], ".gitconfig"), "w") as _f:
    _f.write("[user]\n\tname = pytest\n\temail = pytest@localhost\n")

import copy  # noqa: E402
import hashlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Hypothesis: no deadline anywhere (a loaded machine is slow, not wrong). On CI (CI is set, as .ci/run
# sets it) the examples are derandomized and no example database is kept: a red run is the code's,
# not the draw's, and the next run draws the same; elsewhere each run draws new examples.
settings.register_profile("dev", settings.get_profile("default"), deadline=None)
settings.register_profile("ci", settings.get_profile("default"), derandomize=True, deadline=None, database=None,
                          print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.params import load  # noqa: E402


class ArchiveServer:
    """A loopback HTTP server for test archives, with HTTP Range support.

    `files[path] = bytes` serves a file; `cut[path] = n` makes the next request
    for `path` send its full Content-Length but close after n bytes (a cut
    connection); a path in `unannounced` is sent without a Content-Length (the
    end of the body is the end of the connection); every request is logged as
    (path, Range header).
    """

    def __init__(self):
        self.files, self.cut, self.unannounced, self.log = {}, {}, set(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.log.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if self.path not in server.unannounced:  # HTTP/1.0: the connection closes after the body
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut.pop(self.path, None)
                self.wfile.write(body[:cut] if cut is not None else body)
                if cut is not None:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # shutdown() waits for the serving loop's next poll: 0.5 s by default, at every test's teardown.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path, data):
        self.files[path] = data
        return self.url(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def pytest_unconfigure(config):
    import shutil
    if _OWN_STATE:
        shutil.rmtree(_SESSION_STATE, ignore_errors=True)


@pytest.fixture
def server():
    s = ArchiveServer()
    yield s
    s.close()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session", autouse=True)
def machine_plan():
    """core.hardware's plan for this machine, applied once before the first test as every stage applies it
    first (core.stage.start): op determinism, seeds, threads, the global dtype policy. A test run alone
    (`-k`) then starts from the TensorFlow state it has in the full suite, after some stage has run."""
    from core import hardware
    return hardware.configure(load(ROOT / "params.yaml")["seed"])


@pytest.fixture
def params(tmp_path):
    """The project's params.yaml, with downloads kept in tmp_path and no waiting between retries.
    From-scratch training computes in float32: `auto` would pick bfloat16 on CPUs that have it natively
    (core.hardware.compute_policy), a path of its own on some machines; tests that want it ask for it."""
    p = copy.deepcopy(load(ROOT / "params.yaml"))
    p["fetch"].update(dir=str(tmp_path / "downloads"), backoff_s=0, timeout_s=5)
    p["train"]["scratch"]["precision"] = "float32"
    return p


def run_cmd(args, cwd, check=True, env=None, timeout=None):
    """Run a command with this interpreter's environment first on PATH (so DVC
    stages' `python` is the one running the tests); `env` adds variables (a
    None value removes one); past `timeout` seconds it is killed and the test fails."""
    import subprocess
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: a variable removed
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def project(tmp_path):
    """A temporary git + DVC repo holding a copy of the project's pipeline."""
    from tiny_repo import make_project
    return make_project(tmp_path / "repo")


@pytest.fixture(scope="session")
def readme_route(tmp_path_factory):
    """README's route on tiny data, run once for the whole session (tests/tiny_repo.py): read-only for the tests
    that use it; a test that runs more takes `route_copy`. Under pytest-xdist (make test) the first worker to
    need it runs it in the directory the workers share, the others wait for it and read its record, so the
    tests that use it spread over the workers instead of queueing in one."""
    import pickle

    from filelock import FileLock

    from tiny_repo import readme_route
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return readme_route(tmp_path_factory.mktemp("readme-route"))
    shared = tmp_path_factory.getbasetemp().parent  # this session's, above each worker's own
    record = shared / "readme-route.pickle"
    with FileLock(shared / "readme-route.lock"):
        if not record.exists():
            record.write_bytes(pickle.dumps(readme_route(shared / "readme-route")))
    return pickle.loads(record.read_bytes())


@pytest.fixture
def route_copy(readme_route, tmp_path):
    """A copy of readme_route's repo, after both README experiments (basecnn, mobilenetv2), for this test."""
    from tiny_repo import copy_repo
    return copy_repo(readme_route.repo, tmp_path / "repo")


STANDIN_SIZE = 96  # px: the default image_size, and one MobileNetV2 has ImageNet weights for


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory):
    """Stand-ins for the ImageNet weights files of every pretrained registry entry (tests/standin_weights.py)."""
    from core.models import REGISTRY
    from standin_weights import OFFICIAL_NAMES, write_standins
    directory = tmp_path_factory.mktemp("keras-imagenet-standins")
    written = write_standins(directory, {n: e.constructor for n, e in REGISTRY.items() if e.two_phase}, STANDIN_SIZE)
    # The files Keras asked for are the published ones: a Keras upgrade that renames them shows here.
    assert written == {n: f.format(rows=STANDIN_SIZE) for n, f in OFFICIAL_NAMES.items()}
    return directory


@pytest.fixture
def imagenet_standins(standin_dir, monkeypatch):
    """`weights: imagenet` works in this process, through Keras' own loading code, on the stand-ins."""
    from keras.src.utils import file_utils
    from standin_weights import serve_from
    monkeypatch.setattr(file_utils, "get_file", serve_from(standin_dir))
    return standin_dir


@pytest.fixture
def no_imagenet_weights(server, tmp_path, monkeypatch):
    """`weights: imagenet` as offline, whatever this machine's network and Keras cache: Keras' own get_file
    (tests/standin_weights.py's serve_nothing) fetches from `server`, which holds nothing, into an empty cache.
    In this process, and in subprocesses given `.env` (DVC and its stages). `.server.log` shows the requests."""
    from types import SimpleNamespace
    from keras.src.utils import file_utils
    from standin_weights import offline_subprocess_env, serve_nothing
    cache = tmp_path / "empty-keras-cache"
    monkeypatch.setattr(file_utils, "get_file", serve_nothing(server.url("/"), cache, file_utils.get_file))
    return SimpleNamespace(server=server, env=offline_subprocess_env(server.url("/"), cache, tmp_path / "offline-site"))
