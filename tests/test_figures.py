"""The comparison's figures read as pictures: measured in pixels as they are saved (Agg renderer), on
hand-written experiment records (no training)."""
import itertools
import math

import pytest

from conftest import ROOT
from core.params import load
from test_compare import corrupted, record


def saved_figures(records, tmp_path, wanted):
    """Runs compare.report.main on the project's params.yaml and returns {file name: measure(fig)} of the
    `wanted` figures, each taken as it is saved. The others are made and laid out as ever, but an empty file
    stands in for their PNG: rendering pictures no test reads would double the run's time."""
    import matplotlib.figure

    from compare import report as compare
    seen, savefig = {}, matplotlib.figure.Figure.savefig

    def measure(fig, path, *args, **kwargs):
        name = next(name for name, _ in compare.FIGURES if path.name.startswith(f".{name}."))
        if name not in wanted:
            return path.write_bytes(b"")
        fig.canvas.draw()  # the layout as saved
        seen[name] = picture(fig)
        return savefig(fig, path, *args, **kwargs)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", measure)
        compare.main(load(ROOT / "params.yaml"), records, [r["Experiment"] for r in records], tmp_path / "reports",
                     tmp_path / "plots", read=lambda record: {})  # hand-written records: no predictions
    assert set(seen) == set(wanted)
    return seen


def box(artist, renderer):
    """An artist's extent in pixels; a text's includes its frame (bbox patch) if it has one."""
    from matplotlib.transforms import Bbox
    b = artist.get_window_extent(renderer)
    if hasattr(artist, "get_bbox_patch") and artist.get_bbox_patch() is not None:
        b = Bbox.union([b, artist.get_bbox_patch().get_window_extent(renderer)])
    return b


def picture(fig):
    """What a reader sees, per axes: text boxes, bar boxes with their series, legend labels, marker boxes."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        from matplotlib.collections import PathCollection
        markers = []
        for c in (c for c in ax.collections if isinstance(c, PathCollection)):
            sizes = c.get_sizes()
            for i, xy in enumerate(c.get_offsets()):
                r = math.sqrt(sizes[i % len(sizes)]) / 2 * fig.dpi / 72
                (px, py), = ax.transData.transform([xy])
                markers.append((tuple(xy), (px - r, py - r, px + r, py + r)))
        from matplotlib.container import BarContainer
        bars = [(container.get_label(), box(bar, renderer)) for container in ax.containers
                if isinstance(container, BarContainer) for bar in container
                if math.isfinite(bar.get_height()) and bar.get_height() > 0]
        legend = ax.get_legend()
        out.append({"frame": ax.get_window_extent(renderer), "markers": markers, "bars": bars,
                    "texts": [(t.get_text(), box(t, renderer), getattr(t, "xy", None)) for t in ax.texts
                              if t.get_text() and t.get_visible()],
                    "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                    "title": box(ax.title, renderer)})
    return out


def overlap(a, b, pad=0.0):
    a, b = (x if isinstance(x, tuple) else (x.x0, x.y0, x.x1, x.y1) for x in (a, b))
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


# Four models within a hair of each other (two exactly on one spot) and one at the top right corner: the
# names drawn at one offset overlap, and the corner's runs past the axes.
CROWD = {"mobilenetv2": dict(val=0.500, p90=10.0, size=10.0), "efficientnetb0": dict(val=0.500, p90=10.0, size=10.0),
         "resnet50v2": dict(val=0.5004, p90=10.1, size=10.1), "densenet121": dict(val=0.4996, p90=9.9, size=9.9),
         "basecnn": dict(val=0.99, p90=40.0, size=200.0)}


def crowd():
    return [record(name, cinic=None, **figures, **corrupted(figures["val"], [figures["val"] - 0.001] * 15))
            for name, figures in CROWD.items()]


POINT_FIGURES = ["accuracy_vs_size.png", "accuracy_vs_latency.png", "clean_vs_corrupted.png"]


@pytest.fixture(scope="module")
def crowd_figures(tmp_path_factory):
    """The crowd's figures with point labels, from one comparison run (each test reads one of them)."""
    return saved_figures(crowd(), tmp_path_factory.mktemp("crowd"), POINT_FIGURES)


@pytest.mark.parametrize("figure", POINT_FIGURES)
def test_point_labels_neither_collide_nor_cover_a_marker_nor_leave_the_axes(figure, crowd_figures):
    ax, = crowd_figures[figure]
    labels = [(text, b, xy) for text, b, xy in ax["texts"] if text.split(" (")[0] in CROWD]
    assert sorted(text.split(" (")[0] for text, _, _ in labels) == sorted(CROWD)
    for (a, box_a, _), (b, box_b, _) in itertools.combinations(labels, 2):
        assert not overlap(box_a, box_b), f"{figure}: label {a!r} overlaps label {b!r}"
    for text, b, xy in labels:
        for point, marker in ax["markers"]:
            if not all(map(math.isclose, point, xy)):
                assert not overlap(b, marker), f"{figure}: label {text!r} covers the marker at {point}"
        frame = ax["frame"]
        assert frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1, \
            f"{figure}: label {text!r} leaves the axes"


@pytest.mark.parametrize("cinic", [None, "one", "all"], ids=["cinic-absent", "cinic-partial", "cinic-present"])
def test_gap_chart_legend_lists_what_is_drawn_and_no_na_text_hides_a_bar(cinic, tmp_path):
    # High accuracies: the bars reach the middle of the axes, where a centred note would sit.
    tests = {"basecnn": 0.80, "mobilenetv2": 0.55, "resnet50v2": 0.62, "efficientnetb0": 0.10, "densenet121": 0.45}
    records = [record(name, test=t, cinic={"all": t - 0.1, "one": t - 0.1 if name == "basecnn" else None,
                                           None: None}[cinic]) for name, t in tests.items()]
    ax, = saved_figures(records, tmp_path, ["generalisation_gap.png"])["generalisation_gap.png"]
    drawn = {series for series, _ in ax["bars"]}
    assert drawn == ({"CIFAR-10 test"} if cinic is None else {"CIFAR-10 test", "CINIC-10 (shift)"})
    assert sorted(ax["legend"]) == sorted(drawn)
    notes = [(text, b) for text, b, _ in ax["texts"] if "n/a" in text]
    assert len(notes) == {None: 1, "one": 4, "all": 0}[cinic]  # the note, or one n/a per missing bar
    for (text, b), (series, bar) in itertools.product(notes, ax["bars"]):
        assert not overlap(b, bar), f"{text!r} covers a {series} bar"
    for text, b in notes:
        assert not overlap(b, ax["title"]), f"{text!r} covers the title"


def png():
    """A small PNG: DVC shows an image file as it is."""
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(out, "PNG")
    return out.getvalue()


# `dvc plots show` on this project's dvc.yaml and .dvc/plots templates, in a scratch repo with plot files
# written by hand: CINIC-10 off (no cinic10 files) and `compare` without clean_vs_corrupted.png.
CURVE = "step\t{field}\n0\t{a}\n1\t{b}\n"
PRESENT = {
    **{f"plots/train/plots/metrics/{split}/{field}.tsv": CURVE.format(field=field, a=a, b=b)
       for split, (a, b) in (("train", (0.5, 0.6)), ("eval", (0.4, 0.45))) for field in ("accuracy", "loss")},
    "plots/evaluate/confusion/test.csv": "actual,predicted\ncat,cat\ncat,dog\n",
    "plots/evaluate/per_class/test.csv": "class,accuracy,precision,f1\ncat,0.5,1.0,0.67\n",
    "plots/evaluate/corruption_severity.csv": "severity,noise,blur,weather,digital,all\n0,0.9,0.9,0.9,0.9,0.9\n",
    "plots/compare/pareto.csv": "model,latency_p90_ms,size_mb,accuracy_pct,accuracy_measure,on_latency_front\n"
                                "basecnn,1.7,1.4,10.1,val,True\nresnet50v2,11.0,97.0,22.9,val,True\n",
    "plots/compare/accuracy_vs_size.png": png(),
    "plots/labels/label_efficiency.csv": "model,images_per_class,train_fraction,val_accuracy_pct,test_accuracy_pct\n"
                                         "basecnn,45.0,0.01,30.5,30.1\nbasecnn,4500.0,1.0,85.2,84.9\n",
    "plots/labels/label_efficiency.png": png(),
}
PER_CLASS_CINIC = {"plots/evaluate/per_class/cinic10.csv": "class,accuracy,precision,f1\ncat,0.4,1.0,0.57\n"}


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory):
    """A scratch git + DVC repo with this project's dvc.yaml and .dvc/plots templates, as a clone has them: made
    once (git and `dvc init` are subprocesses), copied by each test that writes plot files into it."""
    import shutil
    import sys

    from conftest import run_cmd
    repo = tmp_path_factory.mktemp("plots") / "repo"
    repo.mkdir()
    run_cmd(["git", "init", "-q"], repo)
    run_cmd([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run_cmd([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    for name in ("dvc.yaml", ".dvcignore", "plots/compare/.gitkeep", "plots/labels/.gitkeep"):  # as a clone has them
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")
    return repo


def plots_show(plots_repo, tmp_path, files):
    import json
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "repo"
    shutil.copytree(plots_repo, repo, symlinks=True)
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=repo, capture_output=True,
                           text=True)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout), shown.stderr


# Slow: each runs `dvc plots show` in a fresh process (DVC's import and start-up, about 1 s).
@pytest.mark.slow
def test_plots_show_draws_every_present_file_and_warns_of_no_absent_optional_one(plots_repo, tmp_path):
    out, stderr = plots_show(plots_repo, tmp_path, PRESENT | PER_CLASS_CINIC)
    assert stderr == "" and "errors" not in out, (stderr, out.get("errors"))
    drawn = {name for name, renders in out["data"].items() if renders}
    assert {"plots/evaluate/confusion/test.csv", "plots/evaluate/per_class/test.csv",
            "plots/evaluate/corruption_severity.csv", "plots/compare/pareto.csv",
            "plots/compare/accuracy_vs_size.png", "plots/labels/label_efficiency.csv",
            "plots/labels/label_efficiency.png"} <= drawn

    # The training curves' legend: DVC's series are the files (train/accuracy.tsv, eval/accuracy.tsv); the
    # template names them by split, eval as val.
    curves, = out["data"]["Accuracy per epoch (both phases)"]
    spec = curves["content"]
    assert spec["encoding"]["strokeDash"]["field"] == "split"
    assert [t["calculate"] for t in spec["transform"]] == [
        "isValid(datum.filename) ? split(datum.filename, '/')[0] : ''", "datum.split === 'eval' ? 'val' : datum.split"]
    splits = {row["filename"].split("/")[0] for row in spec["data"]["values"]}  # the first expression, in Python
    assert splits == {"train", "eval"}  # the second makes them train and val

    # The pareto scatter names its points: a text layer on the `model` column every row has.
    pareto, = out["data"]["plots/compare/pareto.csv"]
    text_layer, = [layer for layer in pareto["content"]["layer"] if layer["mark"]["type"] == "text"]
    assert text_layer["encoding"]["text"]["field"] == "model"
    assert [row["model"] for row in pareto["content"]["data"]["values"]] == ["basecnn", "resnet50v2"]

    # The label-efficiency curve: a line per model over labelled images per class on a log scale.
    curve, = out["data"]["plots/labels/label_efficiency.csv"]
    encoding = curve["content"]["encoding"]
    assert encoding["color"]["field"] == "model" and encoding["x"]["scale"]["type"] == "log"
    assert [(r["images_per_class"], r["test_accuracy_pct"]) for r in curve["content"]["data"]["values"]] == \
        [("45.0", "30.1"), ("4500.0", "84.9")]


@pytest.mark.slow
def test_plots_show_warns_of_nothing_with_cinic_and_cifar10c_off(plots_repo, tmp_path):
    out, stderr = plots_show(plots_repo, tmp_path, {k: v for k, v in PRESENT.items() if "corruption" not in k})
    assert stderr == "" and "errors" not in out, (stderr, out.get("errors"))


@pytest.mark.slow
def test_plots_show_warns_of_nothing_before_the_first_comparison(plots_repo, tmp_path):
    """A clone before `make benchmark`: plots/compare holds only its .gitkeep, which DVC neither draws nor warns
    of (a declared folder that is absent, or a file in it DVC cannot read, would make it warn)."""
    out, stderr = plots_show(plots_repo, tmp_path,
                             {k: v for k, v in PRESENT.items() if not k.startswith(("plots/compare/", "plots/labels/"))})
    assert stderr == "" and "errors" not in out, (stderr, out.get("errors"))
    assert [name for name in out["data"] if "compare" in name or "labels" in name] == []
