"""The comparison's intervals, paired comparisons, tie rule and seed grouping, from per-image predictions built
here (the shapes and dtypes the evaluate stage writes) beside hand-written exp_show records (no training)."""
import csv
import io
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from compare import pairwise, predictions, report
from compare.stats import wilson
from compare.table import comparison_table, param_keys
from core import StageError
from core.io import write_npz
from test_compare import record

N = 1000  # validation images of the hand-made predictions


def set_arrays(y, right, digest="same images", classes=10):
    """One set's predictions as the evaluate stage writes them: `right` marks the images predicted correctly."""
    y = np.asarray(y, np.uint8)
    pred = np.where(right, y, (y + 1) % classes).astype(np.uint8)
    return {"y": y, "pred": pred, "prob": np.eye(classes, dtype=np.float16)[pred], "images_sha256": np.array(digest)}


def through_npz(arrays):
    """The arrays as compare.predictions reads them back from the bytes of an .npz file."""
    buf = io.BytesIO()
    write_npz(buf, arrays)
    return predictions.read(buf.getvalue(), "test.npz")


def correctness(only_a, only_b, both, neither):
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    order = np.random.default_rng(0).permutation(len(a))
    return np.array(a)[order], np.array(b)[order]


Y = np.arange(N) % 10


def reader(per_experiment):
    """A `read` for report.main: experiment name -> {set: arrays} (what compare.predictions reads from DVC)."""
    return lambda r: {name: through_npz(arrays) for name, arrays in per_experiment.get(r["Experiment"], {}).items()}


def test_pairwise_rows_match_the_statistics_by_hand():
    """Discordant counts 30 and 10 on 1,000 images: difference 2 points, McNemar's p scipy's binomial test of
    30 in 40; identical predictions differ by 0 with p = 1; both orders of a pair are one row, flipped."""
    a, b = correctness(30, 10, 800, 160)
    scores = pairwise.model_scores({"a": [{"val": through_npz(set_arrays(Y, a))}],
                                    "b": [{"val": through_npz(set_arrays(Y, b))}],
                                    "twin": [{"val": through_npz(set_arrays(Y, a))}]})
    rows, unpaired = pairwise.pairwise(scores, ["a", "b", "twin"])
    assert list(rows.columns) == pairwise.COLUMNS and unpaired == []
    row = rows[(rows.model_a == "a") & (rows.model_b == "b")].iloc[0]
    assert (row.n, row.accuracy_a, row.accuracy_b) == (N, 0.83, 0.81)
    assert row.difference == pytest.approx(0.02) and row.ci_low < 0.02 < row.ci_high
    assert row.mcnemar_p == pytest.approx(scipy_stats.binomtest(30, 40, 0.5).pvalue, rel=1e-12)
    same = rows[(rows.model_a == "a") & (rows.model_b == "twin")].iloc[0]
    assert (same.difference, same.ci_low, same.ci_high, same.mcnemar_p) == (0.0, 0.0, 0.0, 1.0)
    flipped = pairwise.between(rows, "b", "a", "val")
    assert flipped["difference"] == pytest.approx(-0.02)
    assert (flipped["ci_low"], flipped["ci_high"]) == (-row.ci_high, -row.ci_low)


def test_predictions_of_different_images_are_not_paired():
    a, b = correctness(30, 10, 800, 160)
    scores = pairwise.model_scores({"a": [{"val": set_arrays(Y, a)}], "b": [{"val": set_arrays(Y, b, "other")}]})
    rows, unpaired = pairwise.pairwise(scores, ["a", "b"])
    assert rows.empty and unpaired == ["a and b on val: different images (data_seed or the data differ)"]


def test_cifar10c_scores_are_each_images_share_of_its_corrupted_versions():
    """(corruption, severity, image) predictions become one score per test image; with them, an interval by
    bootstrap over the images and no McNemar p (75 versions of an image are not 75 independent images)."""
    y = np.broadcast_to(Y[:100], (3, 5, 100))
    right = np.zeros((3, 5, 100), bool)
    right[:, :, :50] = True
    right[0, 0, 50:] = True  # images 50-99 right once in 15
    digest, s = predictions.scores([through_npz(set_arrays(y, right))])
    assert s.shape == (1, 100) and s[0, 0] == 1 and s[0, 99] == pytest.approx(1 / 15)
    other = pairwise.model_scores({"b": [{"cifar10c": set_arrays(y, ~right)}]})["b"]["cifar10c"]
    rows, _ = pairwise.pairwise({"a": {"cifar10c": (digest, s)}, "b": {"cifar10c": other}}, ["a", "b"])
    assert rows.iloc[0].difference == pytest.approx(s.mean() - other[1].mean()) and math.isnan(rows.iloc[0].mcnemar_p)


def test_cifar10c_scores_with_each_corruption_on_its_own_images_are_per_image_shares_in_test_order():
    """corruptions.distinct: each corruption has its own images, so an image's score is its share over its one
    corruption's 5 severities, and the units are the images of every corruption, in file order (the same for any
    model on the same images, so the pairing holds). The shared layout, with `index` given per
    corruption, gives what the one-row file gives."""
    index = np.array([[4, 0, 2], [5, 1, 3]])  # corruption 0 has test images 4, 0, 2; corruption 1 has 5, 1, 3
    y = np.broadcast_to(Y[index][:, None, :], (2, 5, 3))
    right = np.zeros((2, 5, 3), bool)
    right[0, :, 0] = True         # test image 4: right at every severity
    right[1, :2, 2] = True        # test image 3: right at 2 of 5
    digest, s = predictions.scores([through_npz({**set_arrays(y, right), "index": index})])
    assert s.tolist() == [[1, 0, 0, 0, 0, 0.4]]  # test images 4, 0, 2, 5, 1, 3
    shared = np.zeros((2, 5, 3), bool)
    shared[0, 0, 1] = shared[1, 4, 1] = True
    one_row = predictions.scores([through_npz({**set_arrays(y, shared), "index": index[0]})])[1]
    per_row = predictions.scores([through_npz({**set_arrays(y, shared), "index": np.stack([index[0]] * 2)})])[1]
    assert one_row.tolist() == per_row.tolist() == [[0, 0.2, 0]]


@pytest.mark.parametrize("index", [np.array([[0, 1, 2]]), np.array([0, 1]), np.array([[0, 1, 2], [3, 4, -5]]),
                                   np.array([[0.0, 1, 2], [3, 4, 5]])], ids=["rows", "length", "negative", "float"])
def test_a_cifar10c_index_that_does_not_place_the_images_is_refused(index):
    y = np.zeros((2, 5, 3), np.uint8)
    with pytest.raises(StageError, match="does not place the 3 images of each of its 2 corruptions"):
        through_npz({**set_arrays(y, y > 0), "index": index})


def two_models(val_a, val_b, p90=(6.0, 2.0), size=(10.0, 30.0), tta=(False, False)):
    """Records and predictions of models "slow" and "fast" on the same N validation images."""
    records = [record(name, val=val, p90=p, size=s, **{"conditions.train.flip_tta": t})
               for name, val, p, s, t in zip(("slow", "fast"), (val_a, val_b), p90, size, tta)]
    right = {name: np.arange(N) < round(val * N) for name, val in (("slow", val_a), ("fast", val_b))}
    return records, reader({name: {"val": set_arrays(Y, r)} for name, r in right.items()})


def test_models_within_noise_are_tied_and_the_cheapest_by_compare_prefer_is_recommended(params, tmp_path, capsys):
    """0.3 points apart on 1,000 images is noise: the faster model is recommended, in one sentence with the
    difference, its interval and the cost ratio; compare.prefer: size picks the smaller one instead."""
    records, read = two_models(0.853, 0.85)
    rec = report.main(params, records, ("slow", "fast"), tmp_path / "reports", tmp_path / "plots", read=read)
    assert rec.model == "fast" and rec.tied == ["slow", "fast"]
    out = capsys.readouterr().out
    margin = rec.margins["fast"]
    assert margin["ci_low"] <= 0 <= margin["ci_high"] and margin["difference"] == pytest.approx(0.003)
    assert (f"slow and fast are within noise on val: 0.30 points, 95 % CI {100 * margin['ci_low']:.2f} to "
            f"{100 * margin['ci_high']:.2f}; fast is 3.0x faster at batch 1 (latency p90 2.00 vs 6.00 ms).") in out
    assert out.startswith("Recommended: fast (85.00 %), the cheapest by latency (compare.prefer) of the 2 model(s) "
                          "within noise of the most accurate, slow (85.30 % CIFAR-10 val accuracy), among the 2 "
                          "within the limits (no limits).")
    assert "Runners-up: slow (85.30 %)." in out
    pairs = list(csv.DictReader(open(tmp_path / "reports/pairwise.csv")))
    assert [(p["model_a"], p["model_b"], p["set"], p["n"], p["accuracy_a"], p["accuracy_b"], p["difference"])
            for p in pairs] == [("slow", "fast", "val", "1000", "0.853", "0.85", "0.003")]
    assert float(pairs[0]["mcnemar_p"]) == pytest.approx(scipy_stats.binomtest(3, 3, 0.5).pvalue)
    table = {r["model"]: r for r in csv.DictReader(open(tmp_path / "reports/comparison.csv"))}
    low, high = wilson(850, N)
    assert float(table["fast"]["val_accuracy_ci_low_pct"]) == pytest.approx(100 * low, abs=1e-4)
    assert float(table["fast"]["val_accuracy_ci_high_pct"]) == pytest.approx(100 * high, abs=1e-4)
    assert table["fast"]["test_accuracy_ci_low_pct"] == "n/a"  # no test predictions were given
    md = (tmp_path / "reports/comparison.md").read_text()
    assert f"| 85.00 [{100 * low:.2f}, {100 * high:.2f}] |" in md and "| slow | fast | val | 1000 |" in md

    params["compare"]["prefer"] = "size"
    rec = report.main(params, records, ("slow", "fast"), tmp_path / "reports", tmp_path / "plots", read=read)
    assert rec.model == "slow" and "slow is 3.0x smaller on disk (size 10.00 vs 30.00 MB)" in capsys.readouterr().out


def test_a_clear_winner_is_named_with_its_margin_and_interval(params, tmp_path, capsys):
    records, read = two_models(0.90, 0.80)
    rec = report.main(params, records, ("slow", "fast"), tmp_path / "reports", tmp_path / "plots", read=read)
    assert rec.model == "slow" and rec.tied == ["slow"]
    margin = rec.margins["fast"]
    assert 0 < margin["ci_low"] < 0.10 < margin["ci_high"]
    out = capsys.readouterr().out
    assert out.startswith("Recommended: slow, the highest CIFAR-10 val accuracy (90.00 %) of the 2 model(s)")
    assert (f"A clear lead on val: 10.00 points, 95 % CI {100 * margin['ci_low']:.2f} to {100 * margin['ci_high']:.2f}"
            f" over the runner-up fast, exact McNemar p = {scipy_stats.binomtest(100, 100).pvalue:.3g}.") in out


def test_models_evaluated_with_different_tta_are_not_ranked_unless_told(params, tmp_path, capsys):
    records, read = two_models(0.90, 0.80, tta=(True, False))
    rec = report.main(params, records, ("slow", "fast"), tmp_path / "reports", tmp_path / "plots", read=read)
    assert rec.model is None
    out = capsys.readouterr().out
    assert out.startswith("Not ranked: the models were not evaluated alike: flip_tta slow on, fast off")
    assert "compare.mixed_tta: true" in out
    assert "flip TTA off (slow on)" in (tmp_path / "reports/comparison.md").read_text()
    params["compare"]["mixed_tta"] = True
    assert report.main(params, records, ("slow", "fast"), tmp_path / "r", tmp_path / "p", read=read).model == "slow"


def seeded(name, seed, val, **extra):
    return record(name, val=val, seed=seed, **{"model": name.partition("-seed")[0], "train.batch_size": 128, **extra})


def test_a_models_seeds_are_averaged_and_must_differ_in_seed_only(params):
    records = [seeded("m-seed2", 2, 0.82), seeded("m-seed1", 1, 0.80), seeded("m", 1, 0.5),  # older, same seed
               record("other", val=0.7)]
    keys = param_keys({"seed": 1, "train": {"batch_size": 128}, "compare": {"prefer": "latency"}})
    assert keys == ["seed", "params.yaml:seed", "train.batch_size", "params.yaml:train.batch_size"]
    rows = comparison_table(records, ["m", "other"], keys)
    assert rows.loc["m", "val_accuracy_pct"] == pytest.approx(81.0)
    assert rows.loc["m", "val_accuracy_std_pp"] == pytest.approx(np.std([80, 82], ddof=1))
    assert (rows.loc["m", "seeds"], rows.loc["m", "seed"], rows.loc["m", "experiments"]) == (2, "1 2",
                                                                                            "m-seed2, m-seed1")
    assert math.isnan(rows.loc["other", "val_accuracy_std_pp"]) and rows.loc["other", "seeds"] == 1
    odd = [seeded("m-seed2", 2, 0.82, **{"train.batch_size": 64}), seeded("m-seed1", 1, 0.80)]
    with pytest.raises(StageError, match=r"experiments of m \(m-seed2, m-seed1\) differ in train.batch_size, not only"):
        comparison_table(odd, ["m"], keys)


def test_over_seeds_the_pairwise_difference_is_of_the_mean_accuracies(params, tmp_path):
    """Two seeds of one model against one run of another: the difference is that of the seeds' mean accuracy,
    its interval from the bootstrap over images and seeds, and no McNemar p."""
    records = [seeded("a-seed1", 1, 0.80), seeded("a-seed2", 2, 0.84), seeded("b", 1, 0.70)]
    read = reader({"a-seed1": {"val": set_arrays(Y, np.arange(N) < 800)},
                   "a-seed2": {"val": set_arrays(Y, np.arange(N) >= 160)},
                   "b": {"val": set_arrays(Y, np.arange(N) < 700)}})
    report.main(params, records, ("a", "b"), tmp_path / "reports", tmp_path / "plots", read=read)
    row = pd.read_csv(tmp_path / "reports/pairwise.csv").iloc[0]
    assert (row.seeds_a, row.seeds_b, row.accuracy_a, row.difference) == (2, 1, 0.82, pytest.approx(0.12))
    assert row.ci_low < 0.12 < row.ci_high and np.isnan(row.mcnemar_p)
    assert "| a | 2 | 82.00 [" in (tmp_path / "reports/comparison.md").read_text()  # the seeds column, then val


def test_figures_draw_each_accuracys_interval(params, tmp_path, monkeypatch):
    """The accuracy-cost figures and the metrics grid carry the 95 % intervals as error bars."""
    import matplotlib.figure
    from matplotlib.container import ErrorbarContainer
    drawn, savefig = {}, matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        drawn[path.name.split(".")[1]] = [[c for c in ax.containers if isinstance(c, ErrorbarContainer)]
                                          for ax in fig.axes]
        path.write_bytes(b"")  # no picture needed: the artists are what is checked
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    records, read = two_models(0.853, 0.85)
    rec = report.main(params, records, ("slow", "fast"), tmp_path / "reports", tmp_path / "plots", read=read)
    table = pd.read_csv(tmp_path / "reports/comparison.csv", index_col="model")
    for figure in ("accuracy_vs_latency", "accuracy_vs_size"):
        (bars,), = drawn[figure]
        (low, high), = [segments.get_segments() for segments in bars.lines[2]]  # one vertical segment per model
        assert [(s[0][1], s[1][1]) for s in (low, high)] == [
            pytest.approx((table.at[m, "val_accuracy_ci_low_pct"], table.at[m, "val_accuracy_ci_high_pct"]), abs=1e-3)
            for m in ("slow", "fast")]
    assert len(drawn["metrics_grid"][0]) == 1 and rec.rank_by == "val_accuracy_pct"  # the val panel


VALID = set_arrays(Y[:20], np.arange(20) < 15)


def npz_bytes(arrays):
    buf = io.BytesIO()
    write_npz(buf, arrays)
    return buf.getvalue()


@pytest.mark.parametrize("arrays", [
    {k: v for k, v in VALID.items() if k != "pred"},
    VALID | {"pred": VALID["pred"][:-1]},
    VALID | {"prob": VALID["prob"][:, :, None]},
    VALID | {"y": VALID["y"].astype(np.float32)},
    VALID | {"images_sha256": np.array([1, 2])},
    VALID | {"y": np.array(3, np.uint8), "pred": np.array(3, np.uint8), "prob": np.zeros(10, np.float16)},
    {k: v[:0] if k != "images_sha256" else v for k, v in VALID.items()},
], ids=["no-pred", "pred-short", "prob-extra-axis", "float-labels", "digest-not-text", "scalars", "no-images"])
def test_a_predictions_file_of_the_wrong_shape_is_refused_naming_it(arrays):
    with pytest.raises(StageError, match=r"^data/predictions/val.npz of experiment m: not per-image predictions"):
        predictions.read(npz_bytes(arrays), "data/predictions/val.npz of experiment m")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_damaged_predictions_file_is_read_whole_or_refused_in_one_line(data):
    """Bytes flipped, cut or appended anywhere: the arrays come back checked, or one StageError names the file
    (never a zipfile, zlib or numpy exception, never an unpickled object)."""
    raw = bytearray(npz_bytes(VALID))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=8))
    try:
        arrays = predictions.read(bytes(raw), "val.npz")
    except StageError as e:
        assert str(e).startswith("val.npz: not ") and "\n" not in str(e)
    else:
        assert arrays["y"].shape == arrays["pred"].shape == arrays["prob"].shape[:-1]


def test_a_p_value_below_the_smallest_double_is_not_written_as_zero():
    assert [pairwise.p_text(p) for p in (0.0, 1e-320, 0.0123456, 1.0, math.nan)] == [
        "< 1e-300", "< 1e-300", "0.0123", "1", "n/a"]
