"""The shell commands of README and docs/, run as written.

Every command in a fenced ```bash block of README.md or a page of docs/ is either run here, in a
temporary git + DVC repo on tiny data, in a shell that has only what README says to do first
(`source .venv/bin/activate`), or listed in NOT_RUN with the reason (downloads, full-size runs, the
suite itself, hand-run benchmarks). A command added to the docs without a place in one of the two lists
fails the fast test below, and so does a `python -m` module or a `make` target that does not exist.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# Not run here: what each costs, and what runs instead.
RUN_OFFLINE = ("the full CIFAR-10 (about 15 min); here `dvc exp run` on a tiny class-folder dataset stands in for "
               "it, and tests/test_params.py applies its overrides to params.yaml")
BENCH = "a developer benchmark on the full CIFAR-10 (minutes to hours); tests/test_bench.py tests its pure parts"
# Sharing (docs/sharing.md) needs a Git remote, a DVC remote and a second clone: tests/test_remote.py has them.
SHARED = "run as written by tests/test_remote.py, on machine A or B with an S3 server on 127.0.0.1 (moto)"
REMOTES = "another kind of DVC remote, configured as tests/test_remote.py configures its S3 one"
NOT_RUN = {
    "make setup": "installs requirements.txt (2.7 GB): CI's .ci/run does, through make test; this test uses that .venv",
    "make run": "downloads CIFAR-10, CINIC-10 and ImageNet weights, which this machine cannot reach",
    "make test": "the suite this test is part of",
    "make test-fast": "part of the suite this test is part of",
    "dvc exp run -S 'cifar10.urls=[/data/cifar-10-binary.tar.gz]' -S 'cinic10.urls=[/data/CINIC-10.tar.gz]'":
        "an example of a site's own archive paths; tests/test_download_cifar10.py and tests/test_sample_cinic10.py "
        "read local archives of both formats",
    "make run-offline OFFLINE_CIFAR10=/data/cifar10-jpg.tar.gz": RUN_OFFLINE,
    "make run-offline OFFLINE_CIFAR10=data/downloads/cifar10-jpg.tar.gz OFFLINE_CHECKSUM=sha256:"
    "d34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965": RUN_OFFLINE,
    "make benchmark": "five backbones on the full data; tests/test_compare.py runs compare.benchmark on a stand-in "
                      "pipeline",
    'make benchmark BENCHMARK_ARGS="-S weights=none -S cinic10.urls=none"': "as make benchmark",
    "make benchmark JOBS=4": "as make benchmark; tests/test_pipeline_e2e.py runs compare.benchmark --jobs 2 on "
                             "README's tiny project, tests/test_compare.py checks the make line",
    "make benchmark SEEDS=3": "as make benchmark; tests/test_compare.py runs compare.benchmark --seeds 2 on the "
                              "stand-in pipeline and checks the make line",
    'make benchmark FRACTIONS="0.01 0.05 0.2 1"': "as make benchmark, four times over; tests/test_pipeline_e2e.py "
                                                  "runs compare.benchmark --fractions 0.5 on README's tiny project, "
                                                  "tests/test_compare.py checks the make line",
    "python -m compare.benchmark -S cifar10.format=folders -S 'cifar10.urls=[<abs path>/cifar10-jpg.tar.gz]' "
    "-S cifar10.checksum=sha256:d34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965 "
    "-S cifar10.size_bytes=null -S cinic10.urls=none -S weights=none": "as make benchmark",
    'make benchmark FRACTIONS="0.01 0.05 0.2 1" BENCHMARK_ARGS="--models basecnn -S cifar10.format=folders '
    '-S cifar10.urls=[<abs path>/cifar10-jpg.tar.gz] -S cifar10.checksum=sha256:'
    'd34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965 -S cifar10.size_bytes=null '
    '-S cinic10.urls=none -S weights=none -S profile.tflite=[fp32]"': "as make benchmark FRACTIONS=..., on the full "
                                                                       "CIFAR-10 (an hour)",
    "date +%s": "the clock, for the benchmark's start and end (docs/performance.md, sections 10 and 12)",
    'make benchmark BENCHMARK_ARGS="--models basecnn mobilenetv2 efficientnetb0 densenet121 resnet50v2 '
    "-S cifar10.format=folders -S 'cifar10.urls=[<abs path>/cifar10-jpg.tar.gz]' -S cifar10.checksum=sha256:"
    'd34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965 -S cifar10.size_bytes=null '
    '-S cinic10.urls=none -S weights=none"': "as make benchmark, on the full CIFAR-10 (hours)",
    "python -m bench.stage_times --repo <clone> --start 1796462202 --out bench/results/stage_times_before.json": BENCH,
    "python -m bench.stage_times --repo <clone> --start 1796484562 --out bench/results/stage_times_after.json": BENCH,
    'make benchmark BENCHMARK_ARGS="<section 12\'s>"': "section 12's five-model benchmark again, with one cached view",
    "python -m bench.stage_times --repo <clone> --start 1796497015 --out bench/results/stage_times_views1.json": BENCH,
    'make benchmark BENCHMARK_ARGS="--models resnet50v2 <section 10\'s overrides>"':
        "section 10's benchmark on the code before the levers, ResNet50V2 alone (about 65 min)",
    "python -m bench.stage_times --repo <clone> --start 1796504687 --out "
    "bench/results/stage_times_before_resnet50v2.json": BENCH,
    "python -m bench.phase2 --size 96 --images 1024 --repeats 3": BENCH,
    "dvc exp run -n densenet121-exact <air-gapped overrides> -S model=densenet121 -S train.fine_tune.epochs=2":
        "a levers check on the full CIFAR-10 (an hour); tests/test_train.py runs the levers' route on tiny data",
    "dvc exp run -n densenet121-lever <the same> -S train.fine_tune.views=2 -S train.fine_tune.precision=auto "
    "-S features.precision=auto": "as the exact run above",
    "python -m bench.levers --exact densenet121-exact --lever densenet121-lever": BENCH,
    "dvc exp run -n densenet121-views1 <air-gapped overrides> -S model=densenet121 -S train.fine_tune.views=1":
        "as the exact run above, in the clone of the five-model benchmark",
    "python -m bench.levers --repo <clone> --exact densenet121 --lever densenet121-views1": BENCH,
    "dvc exp run -n densenet121-views1 <section 10's exact overrides> -S train.fine_tune.views=1 "
    "-S train.fine_tune.precision=auto -S features.precision=auto": "as the exact run above",
    "python -m bench.levers --exact densenet121-exact --lever densenet121-views1": BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --recipe "new:net=whitened,optimizer=sgd,learning_rate=0.2,'
    'weight_decay=0.005,label_smoothing=0.2" --recipe "today:decay_all=true"': BENCH,
    "python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --repeats 3 --recipe now:epochs=4 --recipe "
    "before:net=resnet9,decay_all=true,optimizer=adamw,learning_rate=0.003,weight_decay=0.0005,label_smoothing=0.1,"
    "epochs=4": BENCH,
    "python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --recipe now --recipe "
    '"lookahead:ema=0.95,ema_every=5" --out bench/results/scratch_ema_screen.json': BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --recipe now --recipe "wide6:epochs=6,'
    'widths=64/256/256" --recipe "mid10:epochs=10,widths=48/192/192" --out bench/results/scratch_width_screen.json': BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --recipe "t2:translate=0.0625" --recipe '
    '"b256:batch_size=256,learning_rate=0.4" --out bench/results/scratch_augment_batch_screen.json': BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --recipe now --recipe "dirac:dirac=true" '
    '--recipe "alternate:alternate=true" --recipe "ramp:ramp=true" --out bench/results/scratch_airbench_screen.json':
        BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --recipe now --recipe "alternate:alternate=true" '
    "--out bench/results/scratch_alternate_full.json": BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --recipe "now:epochs=2" --recipe '
    '"wide512:epochs=2,widths=64/256/256,batch_size=512" --recipe "narrow512:epochs=2,batch_size=512" --recipe '
    '"wide1024:epochs=2,widths=64/256/256,batch_size=1024" --out bench/results/scratch_width_batch_time.json': BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --recipe "wide7:epochs=7,widths=64/256/256" --recipe '
    '"mid10:epochs=10,widths=48/192/192" --out bench/results/scratch_width_full.json': BENCH,
    "python -m bench.gemm_peak": BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --recipe now --recipe "before:net=resnet9,decay_all=true,'
    'optimizer=adamw,learning_rate=0.003,weight_decay=0.0005,label_smoothing=0.1" --out '
    'bench/results/scratch_side_by_side.json': BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --recipe "now14:epochs=14" --recipe "before:net=resnet9,'
    'decay_all=true,optimizer=adamw,learning_rate=0.003,weight_decay=0.0005,label_smoothing=0.1" --out '
    'bench/results/scratch_side_by_side_14.json': BENCH,
    'python -m bench.scratch --data <clone>/data/cifar10 --fraction 0.25 --recipe "seed43:seed=43" '
    '--recipe "seed44:seed=44" --out bench/results/scratch_seed_screen.json': BENCH,
    "python -m bench.input_pipeline --size 96 --images 1024 --repeats 3": BENCH,
    "python -m bench.frozen_phase --model resnet50v2 --size 32 --train 5000 --val 1000 --epochs 10 --repeats 3": BENCH,
    "python -m bench.stages --repeats 3": BENCH,
    "python -m bench.projection --size 96 --fine-tune-epochs 5 --images 1024": BENCH,
    "python -m bench.projection --size 224 --frozen-epochs 10 --fine-tune-epochs 10 --images 512": BENCH,
    "dvc exp run -S image_size=32 -S train.fine_tune.epochs=1": "a preset on the full data; tests/test_params.py "
                                                                 "round-trips every key through -S",
    "dvc exp run -S image_size=224 -S train.frozen.epochs=10 -S train.fine_tune.epochs=10": "as the preset above",
    "dvc remote add --local -d storage s3://my-bucket/dvc-store": SHARED,
    "git push origin HEAD": SHARED,
    "dvc exp push origin basecnn mobilenetv2 --run-cache": SHARED,
    "dvc exp pull origin basecnn mobilenetv2 --run-cache": SHARED,
    "python -m compare basecnn mobilenetv2": SHARED,
    "dvc exp run -S model=basecnn": SHARED,
    "dvc remote modify --local storage access_key_id <key-id>": "a placeholder; tests/test_remote.py sets moto's "
                                                                "key so on machine B",
    "dvc remote modify --local storage secret_access_key <secret>": "as access_key_id",
    "dvc remote modify --local storage endpointurl https://minio.example.com": "an example server; tests/test_remote.py "
                                                                                "points endpointurl at its moto server",
    "dvc remote add --local -d storage /mnt/shared/dvc-store": REMOTES,
    "dvc remote add --local -d storage ssh://user@host/srv/dvc-store": REMOTES + " (and dvc-ssh is not installed)",
    "dvc exp push origin --run-cache": "every experiment of HEAD: tests/test_remote.py pushes the two by name",
    "dvc push --run-cache": "the workspace's outputs, as dvc exp push pushes an experiment's (tests/test_remote.py)",
    "dvc pull --run-cache": "as dvc push --run-cache",
}
# Run here, in this order, after one tiny `dvc exp run` that stands in for `make run-offline`.
RUN = [
    "source .venv/bin/activate",
    "dvc exp run -n basecnn -S model=basecnn",
    "dvc exp run -n mobilenetv2 -S model=mobilenetv2",
    "dvc exp show --drop '.*' --keep 'Experiment|model$|weights$|image_size$|val_accuracy$|test.accuracy|"
    "cinic10.accuracy|corruptions.mean_accuracy|latency_p90_ms|size_mb|peak_rss_mb|train_time_s'",
    "dvc exp diff basecnn mobilenetv2",
    "dvc metrics diff basecnn",
    "dvc plots diff basecnn mobilenetv2",
    "dvc repro corrupt_cifar10",
    "time python -m stages.corrupt_cifar10 && du -sh data/cifar10c",
    "python -m compare",
]


# TensorFlow warns when most of a function's recent calls traced it: here, with 3 steps per epoch and a
# partial last batch, each fit and evaluate traces about as often as it runs. On real data (352 steps per
# epoch) it does not fire: the make run-offline log of the README's figures has no such line.
TINY_DATA_ONLY = re.compile(r"^WARNING:tensorflow:\d+ out of the last \d+ calls to .* triggered tf\.function retracing")


def readme_commands():
    """Each command line of the ```bash blocks of README and docs/: continuations joined, a trailing
    `  # comment` dropped."""
    commands = []
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = re.split(r"\s{2,}#", line)[0].strip()
                if command and not command.startswith("#"):
                    commands.append(" ".join(command.split()))
    return commands


def test_every_readme_command_is_run_or_excused():
    commands = readme_commands()
    assert len(commands) >= 25
    unplaced = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert unplaced == [], "commands in the docs this file neither runs nor excuses"
    assert [c for c in [*RUN, *NOT_RUN] if c not in commands] == []  # and nothing here that the docs no longer say


def test_every_module_and_make_target_the_docs_give_exists():
    import importlib.util
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    missing = []
    for command in readme_commands():
        for module in re.findall(r"python -m ([\w.]+)", command):
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        missing += [t for t in re.findall(r"(?:^|&& )make ([\w-]+)", command) if t not in targets]
    assert missing == []


def shell_env():
    """A user's shell before `source .venv/bin/activate`: this interpreter's directory is not on PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() !=
                           Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": path, "COLUMNS": "200"}


def alarming(said):
    """The lines of a command's output that say error or warning (but the tiny-data-only retracing one)."""
    return [line for line in re.split(r"[\r\n]", said) if re.search(r"error|warning", line, re.I)
            and not TINY_DATA_ONLY.search(line)]


@pytest.mark.e2e
def test_readme_commands_run_as_written(readme_route):
    """README's route (tests/tiny_repo.py, run once for the session): each command of RUN ran in a shell
    that had only sourced .venv, exited 0 and said no error or warning; what it printed is what README
    says it shows."""
    from tiny_repo import venv_missing
    if venv_missing():
        pytest.skip(venv_missing())
    project, out = readme_route.repo, readme_route.out
    assert subprocess.run(["bash", "-c", "command -v dvc"], cwd=project, env=shell_env()).returncode != 0  # not yet
    for command, result in out.items():
        said = result.stdout + result.stderr
        assert result.returncode == 0, (command, said)
        assert alarming(said) == [], f"{command}:\n{said}"
    out = {command: result.stdout for command, result in out.items()}

    # Naming the run just made trains nothing; the second backbone does.
    assert "Running stage" not in out[RUN[1]] and "Running stage 'train'" in out[RUN[2]]
    table = out[RUN[3]]
    assert max(map(len, table.splitlines())) <= 200 and "…" not in table, table  # every column in full
    for name in ("basecnn", "mobilenetv2", "val_accuracy", "test.accuracy", "latency_p90_ms", "size_mb"):
        assert name in table, name
    # Only what differs is listed: on tiny data the accuracies may tie, the sizes never do.
    assert re.search(r"params.yaml\s+model\s+basecnn\s+mobilenetv2", out[RUN[4]]) and "size_mb" in out[RUN[4]]
    assert re.search(r"basecnn\s+workspace\s+Change", out[RUN[5]]) and "size_mb" in out[RUN[5]]
    assert (project / "dvc_plots/index.html").exists()
    assert (project / "reports/comparison.md").exists()
