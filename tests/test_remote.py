"""Beyond one machine (docs/sharing.md): machine A, README's tiny project after both of its experiments
(`route_copy`), pushes its commit to a Git remote (a bare repository) and its experiments, their data and
DVC's run cache to an S3 remote (moto's server on 127.0.0.1). Machine B clones the Git remote, configures
the same DVC remote with its credentials out of Git, pulls the experiments, and then, with the S3 server
gone, compares them (the same reports as A's) and reproduces one from the run cache without training: the
docs' commands alone, as a user runs them."""
import hashlib
import logging
import os
import shlex
import sys
from types import SimpleNamespace

import pytest
import yaml

from conftest import run_cmd
from test_dvc_reruns import ran
from test_readme_commands import NOT_RUN, readme_commands
from tiny_repo import USER_LEVEL, dvc

NAMES = ("basecnn", "mobilenetv2")  # README's two experiments, which route_copy has
# The docs' lines (README, "Share experiments"), run here as written.
REMOTE = "dvc remote add --local -d storage s3://my-bucket/dvc-store"
GIT_PUSH = "git push origin HEAD"
PUSH = f"dvc exp push origin {' '.join(NAMES)} --run-cache"
PULL = f"dvc exp pull origin {' '.join(NAMES)} --run-cache"
COMPARE = f"python -m compare {' '.join(NAMES)}"
RERUN = f"dvc exp run -S model={NAMES[0]}"
BUCKET, PREFIX = "my-bucket", "dvc-store"
KEY, SECRET = "moto-key-id", "moto-secret-key"  # moto takes any credentials
REGION = "us-east-1"
TIMEOUT = 300  # s, for a push, a pull, a comparison or a run (each takes seconds here)


@pytest.fixture
def s3(monkeypatch):
    """An S3 server (moto's) on a free port of 127.0.0.1, holding one empty bucket. `.stop()` ends it early;
    the test's end does in any case. The AWS clients of this process and of DVC's: none of the machine's
    AWS_* variables (a profile, an endpoint, keys), one region, and never the instance metadata service,
    which botocore asks for what nothing else gave."""
    import boto3
    from moto.server import ThreadedMotoServer
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    quiet = logging.getLogger("werkzeug")  # the server's line per request: hundreds here
    monkeypatch.setattr(quiet, "level", logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stopped = []

    def stop():
        if not stopped:
            stopped.append(True)
            server.stop()
            server._server.server_close()  # stop() leaves the listening socket open

    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=KEY,
                              aws_secret_access_key=SECRET)
        client.create_bucket(Bucket=BUCKET)
        yield SimpleNamespace(url=url, client=client, stop=stop)
    finally:
        stop()


def run(repo, command, env, timeout=TIMEOUT):
    """A command line of the docs, as written, with this interpreter's dvc and python."""
    args = shlex.split(command)
    args = {"dvc": [sys.executable, "-m", "dvc"], "python": [sys.executable]}.get(args[0], args[:1]) + args[1:]
    return run_cmd(args, repo, env=env, timeout=timeout)


def git(repo, *args):
    return run_cmd(["git", *args], repo, timeout=60)


def stored(s3):
    """The keys of the S3 remote's objects."""
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def metrics_objects(repo, refs):
    """The objects of dvc.yaml's metrics files (metrics/<stage>.json) in the dvc.lock of each experiment of `refs`."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    metrics = {path for stage in stages.values() for path in stage.get("metrics", [])}
    assert metrics and all(isinstance(path, str) for path in metrics)  # no options: cached, as every output
    locks = [yaml.safe_load(git(repo, "show", f"{ref}:dvc.lock").stdout)["stages"] for ref in refs]
    return {o["md5"] for lock in locks for stage in lock.values() for o in stage.get("outs", [])
            if o["path"] in metrics}


def exp_refs(repo):
    """{name: ref} of the repo's experiments."""
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    return {ref.rsplit("/", 1)[-1]: ref for ref in refs}


def on_remote(keys, objects):
    return {h for h in objects if f"{PREFIX}/files/md5/{h[:2]}/{h[2:]}" in keys}


def test_the_docs_give_the_sharing_commands_this_test_runs():
    commands = readme_commands()
    for command in (REMOTE, GIT_PUSH, PUSH, PULL, COMPARE, RERUN):
        assert command in commands and "tests/test_remote.py" in NOT_RUN[command], command


@pytest.mark.e2e
def test_machine_b_compares_and_reproduces_experiments_it_never_ran(route_copy, s3, tmp_path):
    a, b, origin = route_copy, tmp_path / "b", tmp_path / "origin.git"
    on_a = {**USER_LEVEL, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}  # as a CI job's, from secrets
    on_b = USER_LEVEL  # B's credentials are in its .dvc/config.local

    def same_remote(repo, env):
        run(repo, REMOTE, env, timeout=60)
        dvc(repo, "remote", "modify", "--local", "storage", "endpointurl", s3.url, env=env, timeout=60)

    # A: its own comparison; its commit to origin; the experiments to origin, their data and the run cache to S3.
    run(a, COMPARE, on_a)
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(a, "remote", "add", "origin", str(origin))
    run(a, GIT_PUSH, on_a, timeout=60)
    branch = git(a, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    same_remote(a, on_a)
    pushed = run(a, PUSH, on_a)
    said = [line for line in pushed.stdout.splitlines() if line.startswith("Pushed experiment")]
    assert len(said) == 1 and all(n in said[0] for n in NAMES) and "to Git remote 'origin'" in said[0], pushed.stdout
    keys = stored(s3)
    assert any(k.startswith(f"{PREFIX}/files/md5/") for k in keys) and any(
        k.startswith(f"{PREFIX}/runs/") for k in keys), keys[:20]
    # The metrics files are cached outputs (dvc.yaml), pushed with the experiments' other outputs.
    metrics = metrics_objects(a, [exp_refs(a)[name] for name in NAMES])
    assert len(metrics) >= 3 and on_remote(keys, metrics) == metrics

    # B: a clone of origin; the same remote, its credentials kept out of Git.
    git(tmp_path, "clone", "-q", "-b", branch, str(origin), str(b))
    same_remote(b, on_b)
    for option, value in (("access_key_id", KEY), ("secret_access_key", SECRET)):
        dvc(b, "remote", "modify", "--local", "storage", option, value, env=on_b, timeout=60)
    assert git(b, "status", "--porcelain").stdout == ""  # .dvc/config.local is git-ignored
    assert SECRET in (b / ".dvc/config.local").read_text() and "storage" not in (b / ".dvc/config").read_text()
    assert not (b / ".dvc/cache").exists()
    run(b, PULL, on_b)

    # Offline from here: what B reads (metrics, the conditions sidecars and per-image predictions at each
    # experiment's commit, the run cache and the objects it names) was pulled.
    s3.stop()
    run(b, COMPARE, on_b)
    for name in ("comparison.csv", "pairwise.csv"):
        assert (b / "reports" / name).read_text() == (a / "reports" / name).read_text(), name
    out = run(b, RERUN, on_b)
    said = out.stdout + out.stderr
    stages = set(yaml.safe_load((b / "dvc.yaml").read_text())["stages"])
    assert ran(said) == (set(), stages), said  # every stage restored from the run cache, none ran
    assert "Epoch 1/" not in said, said
    # What it restored is A's experiment: every metric the same.
    diff = dvc(b, "metrics", "diff", NAMES[0], "--json", env=on_b, timeout=60)
    assert diff.stdout.strip() == "{}", diff.stdout
    print("\n".join(line for line in said.splitlines() if "Stage '" in line))
    # Or an experiment's outputs to the workspace, running nothing.
    ref = exp_refs(b)[NAMES[1]]
    assert not {"metrics/train.json", "metrics/evaluate.json", "metrics/profile.json"} & set(
        git(b, "ls-tree", "-r", "--name-only", ref).stdout.split())  # in DVC's cache, not in the Git commit
    dvc(b, "exp", "apply", NAMES[1], env=on_b, timeout=60)
    assert {hashlib.md5((b / path).read_bytes()).hexdigest() for path in ("metrics/train.json",
            "metrics/evaluate.json", "metrics/profile.json")} == metrics_objects(b, [ref])
    assert (b / "models/model.keras").is_file()
