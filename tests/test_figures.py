"""The comparison's figures read as pictures: measured in pixels as they are saved (Agg renderer), on
hand-written experiment records (no training)."""
import itertools
import math

import pytest

from test_compare import corrupted, record


def saved_figures(monkeypatch, params, records, tmp_path):
    """Runs bench.compare.main and returns {file name: measure(fig)} taken as each figure is saved."""
    import matplotlib.figure

    from bench import compare
    seen, savefig = {}, matplotlib.figure.Figure.savefig

    def measure(fig, path, *args, **kwargs):
        fig.canvas.draw()  # the layout as saved
        seen[next(name for name, _ in compare.FIGURES if path.name.startswith(f".{name}."))] = picture(fig)
        return savefig(fig, path, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", measure)
    compare.main(params, records, [r["Experiment"] for r in records], tmp_path / "reports", tmp_path / "plots")
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
        bars = [(container.get_label(), box(bar, renderer)) for container in ax.containers for bar in container
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


@pytest.mark.parametrize("figure", ["accuracy_vs_size.png", "accuracy_vs_latency.png", "clean_vs_corrupted.png"])
def test_point_labels_neither_collide_nor_cover_a_marker_nor_leave_the_axes(figure, params, tmp_path, monkeypatch):
    ax, = saved_figures(monkeypatch, params, crowd(), tmp_path)[figure]
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
def test_gap_chart_legend_lists_what_is_drawn_and_no_na_text_hides_a_bar(cinic, params, tmp_path, monkeypatch):
    # High accuracies: the bars reach the middle of the axes, where a centred note would sit.
    tests = {"basecnn": 0.80, "mobilenetv2": 0.55, "resnet50v2": 0.62, "efficientnetb0": 0.10, "densenet121": 0.45}
    records = [record(name, test=t, cinic={"all": t - 0.1, "one": t - 0.1 if name == "basecnn" else None,
                                           None: None}[cinic]) for name, t in tests.items()]
    ax, = saved_figures(monkeypatch, params, records, tmp_path)["generalisation_gap.png"]
    drawn = {series for series, _ in ax["bars"]}
    assert drawn == ({"CIFAR-10 test"} if cinic is None else {"CIFAR-10 test", "CINIC-10 (shift)"})
    assert sorted(ax["legend"]) == sorted(drawn)
    notes = [(text, b) for text, b, _ in ax["texts"] if "n/a" in text]
    assert len(notes) == {None: 1, "one": 4, "all": 0}[cinic]  # the note, or one n/a per missing bar
    for (text, b), (series, bar) in itertools.product(notes, ax["bars"]):
        assert not overlap(b, bar), f"{text!r} covers a {series} bar"
    for text, b in notes:
        assert not overlap(b, ax["title"]), f"{text!r} covers the title"
