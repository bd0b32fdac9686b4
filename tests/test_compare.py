"""The comparison and the recommendation, on hand-written experiment records (no training)."""
import copy
import csv
import io
import json
import math
import shutil
import sys

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from compare.table import (COLUMNS, CORRUPTIONS, LIMITS, MODELS, comparison_table, conditions_text, constraints,
                           explain, finite, main_table, pareto_front, recommend, tflite_table)
from conftest import ROOT, run_cmd
from core.params import TFLITE_KINDS, ParamError
from core.params import load as load_params  # DVC's YAML 1.2 reading: 1e-05 is a float


def record(name, val=None, test=0.9, cinic=0.7, p50=5.0, p90=6.0, size=10.0, rss=800.0, state="Success", **extra):
    """One experiment as dvc.api.exp_show returns it: flat keys, the file named only where a key
    is in several files, missing figures as None. Validation accuracy is test's unless given."""
    r = {"Experiment": name, "rev": "abc1234", "typ": "branch_commit", "State": state,
         "val_accuracy": test if val is None else val, "test.accuracy": test, "test.loss": 0.35,
         "cinic10.accuracy": cinic, "accuracy_drop": None if cinic is None else test - cinic,
         "latency_p50_ms": p50, "latency_p90_ms": p90, "throughput_ips": 400.0, "size_mb": size, "weights_mb": 9.0,
         "peak_rss_mb": rss, "gflops_per_image": 0.3, "train_time_s": 120.0,
         "params_total": 2.5e6, "keras_accuracy_on_eval_images": 0.9, "model": name, "weights": "imagenet",
         "image_size": 96.0, "cifar10.format": "binary", "cifar10.train_fraction": 1.0,
         "cinic10.urls": "['https://x/CINIC-10.tar.gz']",
         # read by compare.report.with_conditions from the experiment's metrics/conditions/*.json
         "conditions.train.weights": "imagenet", "conditions.train.image_size": 32.0 if name == "basecnn" else 96.0,
         "conditions.train.flip_tta": False,
         "conditions.profile.cpu": "Test CPU", "conditions.profile.usable_cores": 2.0,
         "conditions.profile.tensorflow": "2.21.0"}
    for kind in TFLITE_KINDS:
        r |= {f"tflite_{kind}_size_mb": size / 2, f"tflite_{kind}_latency_p50_ms": p50, f"tflite_{kind}_accuracy": 0.89}
    return r | extra


def rows_of(*records):
    return comparison_table(list(records), [r["Experiment"] for r in records])


def ranked(rec):
    return list(rec.ranking.index)


# Three models, each best at something: accurate and slow, balanced, small and fast.
THREE = {"big": dict(val=0.94, test=0.95, cinic=0.80, p90=30.0, size=90.0, rss=1500.0),
         "mid": dict(val=0.91, test=0.92, cinic=0.75, p90=10.0, size=14.0, rss=700.0),
         "small": dict(val=0.79, test=0.80, cinic=0.55, p90=2.0, size=1.0, rss=400.0)}
SET = tuple(record(name, **figures) for name, figures in THREE.items())


def test_rows_read_exp_show_records_in_the_units_their_columns_name():
    failed = {"Experiment": "broken", "State": "Failed", "test.accuracy": "!", "size_mb": "!"}
    a = record("a", val=0.88)
    a["metrics/profile.json:size_mb"] = a.pop("size_mb")  # as exp_show names it once another file has size_mb
    rows = comparison_table([a, failed], ["a", "broken", "absent"])
    a = rows.loc["a"]
    assert a.status == "ok" and a.test_accuracy_pct == pytest.approx(90.0) and a.val_accuracy_pct == pytest.approx(88.0)
    assert a.accuracy_drop_pp == pytest.approx(20.0) and a.params_m == pytest.approx(2.5)
    assert a.size_mb == 10.0 and a.tflite_int8_accuracy_pct == pytest.approx(89.0)
    assert list(rows.status) == ["ok", "failed", "not found"]
    assert rows.loc[["broken", "absent"], list(COLUMNS)].isna().all().all()
    # DVC's ways of saying "not measured" are all NaN, never 0.
    got = finite(pd.DataFrame({"x": [None, "None", "!", "True", True, float("nan"), float("inf"), "0.5", 0]})).x
    assert [None if math.isnan(x) else x for x in got] == [None] * 7 + [0.5, 0.0]


def test_recommendation_changes_as_a_constraint_is_tightened():
    rows = rows_of(*SET)
    assert recommend(rows, {}).model == "big"

    rec = recommend(rows, {"max_latency_ms": 20})
    assert rec.model == "mid" and ranked(rec) == ["mid", "small"]
    assert rec.ruled_out["big"] == [("max_latency_ms", "batch-1 latency p90 30.00 ms > limit 20 ms "
                                                       "(compare.max_latency_ms)")]
    rec = recommend(rows, {"max_latency_ms": 20, "max_size_mb": 5})
    assert rec.model == "small"
    assert [key for key, _ in rec.ruled_out["mid"]] == ["max_size_mb"]
    assert {key for key, _ in rec.ruled_out["big"]} == {"max_latency_ms", "max_size_mb"}

    assert recommend(rows, {"max_peak_rss_mb": 800}).model == "mid"


def test_a_limit_on_an_unmeasured_figure_rules_the_model_out_and_says_so():
    rows = rows_of(record("a", p90=None), record("b", p90=8.0, test=0.5, cinic=0.4))
    rec = recommend(rows, {"max_latency_ms": 10})
    assert rec.model == "b"
    assert rec.ruled_out["a"][0][1] == "batch-1 latency p90 not measured (limit 10 ms, compare.max_latency_ms)"
    assert recommend(rows, {}).model == "a"  # without a limit, latency does not matter


def test_ranking_is_on_validation_accuracy_by_default_with_the_held_out_figures_beside_it():
    # `lucky` is best on the test set, `steady` on the validation split: selection must not look at test.
    rows = rows_of(record("steady", val=0.90, test=0.88, cinic=0.70), record("lucky", val=0.86, test=0.91, cinic=None))
    rec = recommend(rows, {})
    assert (rec.model, rec.rank_by, rec.fallback) == ("steady", "val_accuracy_pct", None)
    assert recommend(rows, {"rank_by": "val_accuracy"}).model == "steady"
    text = explain(rec)
    assert text.splitlines()[0] == ("Recommended: steady, the highest CIFAR-10 val accuracy (90.00 %) of the 2 "
                                    "model(s) within the limits (no limits). Its held-out accuracy: CIFAR-10 test "
                                    "88.00 %, CINIC-10 70.00 %, CIFAR-10-C n/a.")
    assert "Runners-up: lucky (86.00 %)." in text and "optimistic" not in text


def test_ties_go_to_the_faster_model_then_the_smaller_and_an_unmeasured_figure_loses_them():
    tied = rows_of(record("slow", p90=9.0), record("unmeasured", p90=None), record("fast_big", p90=3.0, size=50.0),
                   record("fast_small", p90=3.0, size=5.0))
    assert ranked(recommend(tied, {})) == ["fast_small", "fast_big", "slow", "unmeasured"]


@pytest.mark.parametrize("rank_by, winner, figure, held_out", [
    ("test_accuracy", "lucky", "91.00", "CIFAR-10 test"),
    ("cinic10_accuracy", "steady", "70.00", "CINIC-10"),
    ("corruption_accuracy", "lucky", "60.00", "CIFAR-10-C")])
def test_ranking_on_a_held_out_set_says_the_winners_figure_there_is_optimistic(rank_by, winner, figure, held_out):
    rows = rows_of(record("steady", val=0.90, test=0.88, cinic=0.70, **{"corruptions.mean_accuracy": 0.5}),
                   record("lucky", val=0.86, test=0.91, cinic=0.60, **{"corruptions.mean_accuracy": 0.6}))
    rec = recommend(rows, {"rank_by": rank_by})
    assert (rec.model, rec.rank_by, rec.fallback) == (winner, f"{rank_by}_pct", None)
    assert (f"Selected on {held_out}, a held-out set: {winner}'s {figure} % there is optimistic, the best of 2 "
            "model(s) on those same images; compare.rank_by: val_accuracy selects on the validation split"
            ) in explain(rec)


def test_ranking_on_a_shift_set_falls_back_to_validation_accuracy_without_it():
    steady, lucky = record("steady", val=0.90, test=0.88, cinic=None), record("lucky", val=0.86, test=0.95, cinic=None)
    rec = recommend(rows_of(steady, lucky), {"rank_by": "cinic10_accuracy"})
    assert (rec.model, rec.rank_by) == ("steady", "val_accuracy_pct")
    assert "CINIC-10 accuracy is n/a for steady, lucky" in rec.fallback
    text = explain(rec)
    assert text.startswith("Recommended: steady, the highest CIFAR-10 val accuracy (90.00 %)")
    assert "Ranked on CIFAR-10 val accuracy: CINIC-10 accuracy is n/a" in text and "optimistic" not in text

    # One model without CINIC is enough: every model is ranked on the same figure.
    rec = recommend(rows_of(record("robust", val=0.5, cinic=0.9), steady), {"rank_by": "cinic10_accuracy"})
    assert (rec.model, rec.rank_by) == ("steady", "val_accuracy_pct")


def corrupted(clean, per_corruption):
    """The CIFAR-10-C figures of metrics/evaluate.json as exp_show flattens them (fractions)."""
    by = dict(zip(CORRUPTIONS, per_corruption))
    mean = sum(by.values()) / len(by)
    return {"corruptions.clean_accuracy": clean, "corruptions.mean_accuracy": mean,
            "corruptions.accuracy_drop": clean - mean, **{f"corruptions.by_corruption.{n}": a for n, a in by.items()}}


def test_corruption_columns_mce_against_basecnn_and_ranking_on_corrupted_accuracy():
    base = record("basecnn", test=0.80, **corrupted(0.80, [0.6] * 10 + [0.8] * 5))   # errors 0.4 and 0.2
    tough = record("tough", test=0.85, **corrupted(0.86, [0.8] * 10 + [0.9] * 5))    # half basecnn's errors
    fragile = record("fragile", test=0.95, **corrupted(0.95, [0.2] * 10 + [0.6] * 5))  # twice them
    rows = rows_of(base, tough, fragile)
    assert list(rows.mce_pct) == pytest.approx([100.0, 50.0, 200.0])
    assert rows.loc["tough", "corruption_accuracy_pct"] == pytest.approx(100 * (8 + 4.5) / 15)
    assert rows.loc["tough", "corruption_drop_pp"] == pytest.approx(86 - 100 * (8 + 4.5) / 15)
    assert rows.loc["tough", "cifar10c_fog_accuracy_pct"] == pytest.approx(80.0)
    rec = recommend(rows, {"rank_by": "corruption_accuracy"})
    assert (rec.model, rec.rank_by, rec.fallback) == ("tough", "corruption_accuracy_pct", None)
    assert explain(rec).startswith("Recommended: tough, the highest CIFAR-10-C mean corruption accuracy (83.33 %)")
    assert recommend(rows, {"rank_by": "test_accuracy"}).model == "fragile"
    md = main_table(rows)
    assert "CIFAR-10-C mean corruption accuracy (%) | drop, clean − corrupted (pp) | mCE, basecnn = 100 (%)" in md
    assert "| tough | 85.00 | 85.00 | 70.00 | 15.00 | 83.33 | 2.67 | 50.0 |" in md

    # Without basecnn's figures there is no mCE; without CIFAR-10-C, ranking falls back to validation accuracy.
    rows = rows_of(record("basecnn"), tough, record("plain", test=0.99))
    assert rows.mce_pct.isna().all()
    rec = recommend(rows, {"rank_by": "corruption_accuracy"})
    assert (rec.model, rec.rank_by) == ("plain", "val_accuracy_pct")
    assert rec.fallback == ("CIFAR-10-C mean corruption accuracy is n/a for basecnn, plain (no CIFAR-10-C: "
                            "corruptions.per_class is 0?), so every model is ranked on CIFAR-10 val accuracy")


def test_a_constraint_that_rules_out_everything_says_what_and_how_to_loosen_it():
    rows = rows_of(*SET, record("crashed", state="Failed"))
    rec = recommend(rows, {"max_latency_ms": 1.5, "max_size_mb": None})
    assert rec.model is None and rec.ranking.empty
    assert set(rec.ruled_out) == {"big", "mid", "small", "crashed"}
    text = explain(rec)
    assert text.splitlines()[0] == "No model meets every constraint (batch-1 latency p90 ≤ 1.5 ms)."
    assert "Loosen compare.max_latency_ms in params.yaml" in text
    assert "  small: batch-1 latency p90 2.00 ms > limit 1.5 ms (compare.max_latency_ms)" in text
    assert "  crashed: failed: no results" in text


def test_pareto_front_on_a_known_set():
    points = pd.DataFrame([("a", 1.0, 70.0), ("b", 2.0, 80.0), ("c", 3.0, 75.0),  # c: b is cheaper and better
                           ("d", 4.0, 90.0), ("e", 4.0, 85.0),                    # e: same cost as d, less accurate
                           ("f", 2.0, 80.0),                                      # f ties b: neither beats the other
                           ("g", None, 99.0), ("h", 0.5, None)],                  # not measured: not on the front
                          columns=["model", "cost", "benefit"]).set_index("model")
    assert pareto_front(points, "cost", "benefit") == ["a", "b", "f", "d"]
    assert pareto_front(points.iloc[:0], "cost", "benefit") == []
    assert pareto_front(rows_of(*SET), "latency_p90_ms", "test_accuracy_pct") == ["small", "mid", "big"]


UNITS = ("_pct", "_pp", "_nats", "_ms", "_ips", "_mb", "_m", "_s", "_per_image", "_per_class")


def test_tables_name_units_and_show_missing_figures_as_na():
    from compare.report import comparison_csv
    rows = rows_of(record("a", cinic=None), record("b", state="Failed"))
    parsed = list(csv.DictReader(io.StringIO(comparison_csv(rows))))
    header = list(parsed[0])
    assert header[:3] == ["model", "status", "val_accuracy_pct"] and all(h.endswith(UNITS) for h in header[2:]), header
    assert {"test_accuracy_pct", "cinic10_accuracy_pct", "latency_p50_ms", "latency_p90_ms", "throughput_ips",
            "size_mb", "weights_mb", "peak_rss_mb", "params_m", "gflops_per_image", "train_time_s",
            "tflite_fp16_latency_p50_ms"} <= set(header)
    assert parsed[0]["cinic10_accuracy_pct"] == "n/a" and parsed[0]["accuracy_drop_pp"] == "n/a"
    assert parsed[0]["test_accuracy_pct"] == "90.0"
    assert parsed[1]["status"] == "failed" and set(list(parsed[1].values())[2:]) == {"n/a"}

    md = main_table(rows)
    head, _, a, b = md.splitlines()
    assert "CIFAR-10 val accuracy (%) | CIFAR-10 test accuracy (%)" in head and "batch-1 latency p90 (ms)" in head
    cells = [c.strip() for c in a.split("|")[1:-1]]
    assert cells[:5] == ["a", "90.00", "90.00", "n/a", "n/a"]
    assert b.startswith("| b (failed) | n/a |")
    assert "| a | TFLite int8 | 5.00 | 5.00 | 89.00 |" in tflite_table(rows)


def test_conditions_are_read_from_the_experiments_and_exceptions_named():
    rows = rows_of(record("basecnn", cinic=None), record("mobilenetv2", cinic=None),
                   record("densenet121", cinic=None, **{"weights": "none", "cifar10.train_fraction": 0.25}))
    assert conditions_text(rows) == ("weights imagenet (densenet121 none (random init)); image size 96 px "
                                     "(basecnn 32 px); CIFAR-10 binary at train_fraction 1 (densenet121 0.25); "
                                     "CINIC-10 absent; CIFAR-10-C absent; flip TTA off")
    rows = rows_of(record("a", **{"weights": "/w/no_top.h5", **corrupted(0.9, [0.8] * 15)}))
    assert conditions_text(rows).startswith("weights file no_top.h5; image size 96 px; ")
    assert conditions_text(rows).endswith("; CINIC-10 present; CIFAR-10-C present; flip TTA off")


# Any figure may be missing, NaN, "!" or "None", any model may have failed, any limit may be set.
FIGURE = st.one_of(st.sampled_from([None, "!", "None", float("nan")]), st.floats(0, 1), st.floats(0, 1))


@pytest.mark.parametrize("rank_by", ["val_accuracy", "test_accuracy", "cinic10_accuracy", "corruption_accuracy"])
@settings(max_examples=10, deadline=None)
@given(models=st.lists(st.fixed_dictionaries(
           {"val": FIGURE, "test": FIGURE, "cinic": FIGURE, "p90": FIGURE, "size": FIGURE, "rss": FIGURE,
            "state": st.sampled_from(["Success", "Success", "Failed", "Queued", None])}), min_size=1, max_size=5),
       limits=st.fixed_dictionaries({key: st.one_of(st.none(), st.floats(0, 1)) for key in LIMITS}))
def test_any_records_rank_without_crashing_and_the_winner_meets_every_limit(rank_by, models, limits):
    records = [record(f"m{i}", state=m["state"], cinic=None, **{
        "val_accuracy": m["val"], "test.accuracy": m["test"], "cinic10.accuracy": m["cinic"],
        "latency_p90_ms": m["p90"], "size_mb": m["size"], "peak_rss_mb": m["rss"]}) for i, m in enumerate(models)]
    rows = comparison_table(records, [r["Experiment"] for r in records])
    rec = recommend(rows, {**limits, "rank_by": rank_by})
    text = explain(rec) + main_table(rows) + tflite_table(rows) + conditions_text(rows)
    assert ("Recommended: " in text) == (rec.model is not None)
    eligible = [m for m, r in rows.iterrows() if r.status == "ok" and not math.isnan(r[rec.rank_by]) and
                all(limit is None or r[LIMITS[key][0]] <= limit for key, limit in limits.items())]
    assert sorted(ranked(rec)) == sorted(eligible)
    assert set(ranked(rec)) | set(rec.ruled_out) == set(rows.index)
    if rec.model:
        assert rows.loc[rec.model, rec.rank_by] == max(rows.loc[m, rec.rank_by] for m in eligible)
        assert ("optimistic" in text) == (rec.rank_by != "val_accuracy_pct")


def test_compare_params_are_checked(params):
    assert constraints(params) == {"max_latency_ms": None, "max_size_mb": None, "max_peak_rss_mb": None,
                                   "rank_by": "val_accuracy", "prefer": "latency",
                                   "mixed_tta": False}  # params.yaml's own section
    for key, value, says in (("rank_by", "cinic", "`compare.rank_by` is 'cinic'; allowed: val_accuracy, "),
                             ("max_size_mb", -1, "`compare.max_size_mb` is -1; must be in [0, inf]"),
                             ("max_latency_ms", "fast", "`compare.max_latency_ms` must be a number"),
                             ("max_latency_ms", float("nan"), "`compare.max_latency_ms` is NaN"),
                             ("max_latency", 5, "unknown key `compare.max_latency`; did you mean"),
                             ("prefer", "speed", "`compare.prefer` is 'speed'; allowed: latency, size, memory"),
                             ("mixed_tta", "yes", "`compare.mixed_tta` must be true or false, got 'yes'"),
                             ("label_target", 1.5, "`compare.label_target` is 1.5; must be in [0.01, 1.0]"),
                             ("label_target", None, "`compare.label_target` must be a number, got None")):
        p = copy.deepcopy(params)
        p["compare"][key] = value
        with pytest.raises(ParamError, match="params.yaml: " + says.replace("[", r"\[").replace("]", r"\]")):
            constraints(p)


@pytest.mark.parametrize("key", sorted(LIMITS))
@settings(max_examples=15, deadline=None)
@given(figures=st.lists(st.floats(0, 1e300), min_size=1, max_size=4))
def test_infinite_limit_means_no_limit(key, figures):
    """`.inf` read from params.yaml, then applied as null: a model with any finite figure is kept, and so is one
    that lacks the figure (a limit would rule it out as not measured)."""
    params = load_params(ROOT / "params.yaml")
    params["compare"][key] = float("inf")
    limits = constraints(params)
    assert limits[key] is None  # read as null
    rows = rows_of(*(record(f"m{i}", val=0.5 + i / 100, **{LIMITS[key][0]: figure})
                     for i, figure in enumerate(figures)), record("unmeasured", val=0.4, **{LIMITS[key][0]: None}))
    rec = recommend(rows, limits)
    assert rec.ruled_out == {} and sorted(ranked(rec)) == sorted(rows.index)
    assert rec.model == f"m{len(figures) - 1}"  # the most accurate, however large its figure


def test_main_writes_the_reports_the_conditions_and_the_recommendation(params, tmp_path, capsys, monkeypatch):
    import matplotlib.figure
    from PIL import Image

    from compare import report
    footers, savefig = [], matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: footers.append([t.get_text() for t in fig.texts]) or savefig(fig, *a, **k))
    records = [{"Experiment": None, "rev": "workspace", "test.accuracy": 0.5},  # baseline rows are not models
               *(record(name, **{**figures, "cinic": None}) for name, figures in THREE.items()),
               record("crashed", state="Failed")]
    params["compare"]["max_latency_ms"] = 20
    rec = report.main(params, records, ("big", "mid", "small", "crashed"), tmp_path / "reports", tmp_path / "plots",
                      read=lambda record: {})  # hand-written records: no predictions
    assert rec.model == "mid" and rec.rank_by == "val_accuracy_pct"
    out = capsys.readouterr().out
    assert out.startswith("Recommended: mid, the highest CIFAR-10 val accuracy (91.00 %) of the 2 model(s) "
                          "within the limits (batch-1 latency p90 ≤ 20 ms). Its held-out accuracy: CIFAR-10 test "
                          "92.00 %, CINIC-10 n/a, CIFAR-10-C n/a.")
    md = (tmp_path / "reports/comparison.md").read_text()
    conditions = ("Conditions: weights imagenet; image size 96 px; CIFAR-10 binary at train_fraction 1; "
                  "CINIC-10 absent; CIFAR-10-C absent; flip TTA off")
    assert md.splitlines()[2] == conditions + "."
    assert "Costs measured on Test CPU, 2 usable core(s), TensorFlow 2.21.0" in md
    assert "Recommended: mid" in md and "big: batch-1 latency p90 30.00 ms > limit 20 ms" in md
    assert "- crashed: failed; its log: `dvc queue logs crashed`" in md and "| crashed (failed) |" in md
    assert "mCE is the paper's mean corruption error" in md and "| n/a | n/a | n/a |" in md
    for name, _ in report.FIGURES:
        assert f"](../plots/{name})" in md
        assert Image.open(tmp_path / "plots" / name).text["Description"] == conditions  # travels with the file
    assert footers == [[conditions]] * len(report.FIGURES)  # and is drawn on the picture
    assert len((tmp_path / "reports/comparison.csv").read_text().splitlines()) == 5
    sidecar = list(csv.DictReader(open(tmp_path / "reports/comparison_conditions.csv")))
    assert [(r["model"], r["weights"], r["image_size_px"], r["cinic10"]) for r in sidecar] == \
        [("big", "imagenet", "96.0", "absent"), ("mid", "imagenet", "96.0", "absent"),
         ("small", "imagenet", "96.0", "absent"), ("crashed", "n/a", "n/a", "absent")]
    pareto = list(csv.DictReader(open(tmp_path / "plots/pareto.csv")))
    assert [(p["model"], p["accuracy_pct"], p["accuracy_measure"], p["on_latency_front"]) for p in pareto] == \
        [("big", "94.0", "val", "True"), ("mid", "91.0", "val", "True"), ("small", "79.0", "val", "True")]
    assert not list(tmp_path.glob("*/.*"))  # atomic writes left no temporary files


def test_figures_timed_while_experiments_shared_the_host_say_so(params, tmp_path):
    from compare import report
    records = [record("a", **{"conditions.profile.queue_workers": 2}), record("b", **{"conditions.profile.queue_workers": 2}),
               record("c", **{"conditions.profile.queue_workers": 1})]
    report.main(params, records, ("a", "b", "c"), tmp_path / "r", tmp_path / "p", read=lambda record: {})
    assert "Timed figures of a, b were measured while 2 experiments ran at once (make benchmark JOBS=N)" in \
        (tmp_path / "r/comparison.md").read_text()
    sidecar = {r["model"]: float(r["queue_workers"]) for r in csv.DictReader(open(tmp_path / "r/comparison_conditions.csv"))}
    assert sidecar == {"a": 2, "b": 2, "c": 1}


def test_main_without_any_results_stops_with_a_clear_error(params, tmp_path):
    from compare import report
    from core import StageError
    with pytest.raises(StageError, match="no experiment named basecnn, .* has results at HEAD"):
        report.main(params, [record("basecnn", state="Failed")], MODELS, tmp_path / "r", tmp_path / "p",
                    read=lambda record: {})
    assert not list(tmp_path.iterdir())


def test_benchmark_clear_removes_every_earlier_entry_of_the_names_and_refuses_a_queued_one(monkeypatch):
    """`dvc exp remove NAME` drops one entry per name (DVC keeps a failed queue entry beside an experiment of
    the same name), so clear repeats it until none of the names is left, and never touches other names."""
    import subprocess

    from compare import benchmark
    from core import StageError
    entries = [{"Experiment": "basecnn", "State": "Success"}, {"Experiment": "basecnn", "State": "Failed"},
               {"Experiment": "mobilenetv2", "State": "Success"}, {"Experiment": "mine", "State": "Success"},
               {"Experiment": None, "State": None}]
    calls = []

    def dvc(*args, capture=True):
        calls.append(args)
        for name in args[2:]:
            entries.remove(next(e for e in entries if e["Experiment"] == name))
        return subprocess.CompletedProcess(args, 0, "", "")
    monkeypatch.setattr(benchmark, "exp_records", lambda: list(entries))
    monkeypatch.setattr(benchmark, "dvc", dvc)
    benchmark.clear(("basecnn", "mobilenetv2"))
    assert calls == [("exp", "remove", "basecnn", "mobilenetv2"), ("exp", "remove", "basecnn")]
    assert [e["Experiment"] for e in entries] == ["mine", None]

    entries.append({"Experiment": "basecnn", "State": "Queued"})
    with pytest.raises(StageError, match=r"experiment\(s\) basecnn still queued or running"):
        benchmark.clear(("basecnn", "mobilenetv2"))
    assert len(calls) == 2


# The benchmark through DVC's own queue, on a stand-in pipeline: one shared data stage and one stage
# that writes metrics files shaped like the real ones, in seconds and without TensorFlow.
FAKE_STAGE = '''
import json, os, sys, yaml
p = yaml.safe_load(open("params.yaml"))
model = p["model"]
if sys.argv[1] == "data":
    open(sys.argv[2], "a").write("ran\\n")
    os.makedirs("data", exist_ok=True)
    open("data/x.txt", "w").write("data")
    sys.exit(0)
if model == "densenet121":
    sys.exit("fake out of memory in densenet121")
figures = {"basecnn": (0.7, 1.0, 1.2), "mobilenetv2": (0.9, 4.0, 9.5)}[model]
# Per-image predictions on 200 fixed images: the share right is the model's figure plus 0.5 points per seed
# (mod 3), the images it gets right shift with the seed.
import numpy as np
seed = p["seed"]
y = (np.arange(200) % 10).astype(np.uint8)
right = np.roll(np.arange(200) < round(200 * (figures[0] + 0.005 * (seed % 3))), seed)
pred = np.where(right, y, (y + 1) % 10).astype(np.uint8)
os.makedirs("data/predictions", exist_ok=True)
for name in ("val", "test"):
    np.savez(f"data/predictions/{name}.npz", y=y, pred=pred, prob=np.eye(10, dtype=np.float16)[pred],
             images_sha256=np.array("the same fake images"))
os.makedirs("metrics", exist_ok=True)
json.dump({"train_time_s": 10.0, "val_accuracy": float(right.mean())}, open("metrics/train.json", "w"))
json.dump({"test": {"accuracy": figures[0], "loss": 0.5}}, open("metrics/evaluate.json", "w"))
json.dump({"params_total": 1000, "latency_p50_ms": figures[1], "latency_p90_ms": figures[1] * 1.1,
           "size_mb": figures[2]}, open("metrics/profile.json", "w"))
os.makedirs("metrics/conditions", exist_ok=True)
json.dump({"model": model, "image_size": 32}, open("metrics/conditions/train.json", "w"))
json.dump({"cpu": f"fake CPU of {model}", "usable_cores": 2, "tensorflow": "none"},
          open("metrics/conditions/profile.json", "w"))
'''


@pytest.mark.e2e
def test_benchmark_queues_every_model_keeps_results_when_one_fails(tmp_path):
    repo = tmp_path / "repo"
    for name in ("core", "compare"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    runs = tmp_path / "data_runs.txt"
    (repo / "fake.py").write_text(FAKE_STAGE)
    params = load_params(ROOT / "params.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump({"model": "basecnn", "seed": 1, "data_seed": 1,
                                                      "compare": params["compare"]}))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "data": {"cmd": f"python fake.py data {runs}", "params": ["data_seed"], "outs": ["data/x.txt"]},
        "run": {"cmd": "python fake.py run", "deps": ["data/x.txt", "fake.py"], "params": ["model", "seed"],
                "metrics": [{f"metrics/{m}.json": {"cache": False}} for m in ("train", "evaluate", "profile")],
                # cached, as the real pipeline's: compare.report reads them from DVC's cache at each experiment
                "outs": [*(f"metrics/conditions/{m}.json" for m in ("train", "profile")), "data/predictions"]}}}))
    run_cmd(["git", "init", "-q"], repo)
    run_cmd([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run_cmd([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fake"], repo)
    benchmark = [sys.executable, "-m", "compare.benchmark", "--models", "basecnn", "mobilenetv2", "densenet121"]

    first = run_cmd(benchmark, repo, check=False)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "error: 1 of 3 failed: densenet121 (logs above)" in first.stderr
    assert "=== densenet121 failed" in first.stderr and "fake out of memory in densenet121" in first.stderr
    assert "Recommended: mobilenetv2, the highest CIFAR-10 val accuracy (90.50 %)" in first.stdout
    assert "A clear lead on val: 20.00 points, 95 % CI " in first.stdout and "over the runner-up basecnn" in first.stdout
    pairs = list(csv.DictReader(open(repo / "reports/pairwise.csv")))
    assert [(r["model_a"], r["model_b"], r["set"], r["n"], r["accuracy_a"], r["accuracy_b"]) for r in pairs] == \
        [("basecnn", "mobilenetv2", s, "200", "0.705", "0.905") for s in ("val", "test")]
    assert "Its held-out accuracy: CIFAR-10 test 90.00 %, CINIC-10 n/a" in first.stdout
    assert "; CINIC-10 absent; CIFAR-10-C absent; flip TTA n/a." in (repo / "reports/comparison.md").read_text()
    assert runs.read_text() == "ran\n"  # the shared stage ran once; the run cache served the others
    rows = list(csv.DictReader(open(repo / "reports/comparison.csv")))
    assert [(r["model"], r["status"], r["latency_p50_ms"]) for r in rows] == \
        [("basecnn", "ok", "1.0"), ("mobilenetv2", "ok", "4.0"), ("densenet121", "failed", "n/a")]
    # Each experiment's conditions come from its own commit's sidecars, not from the workspace.
    sidecar = list(csv.DictReader(open(repo / "reports/comparison_conditions.csv")))
    assert [(r["model"], r["cpu"], r["image_size_px"]) for r in sidecar] == \
        [("basecnn", "fake CPU of basecnn", "32.0"), ("mobilenetv2", "fake CPU of mobilenetv2", "32.0"),
         ("densenet121", "n/a", "n/a")]

    # Again on the same commit, with an override for every experiment, for a succeeding and the failing model:
    # their earlier experiments are replaced, the other model's is kept.
    second = run_cmd(benchmark[:-3] + ["basecnn", "densenet121", "-S", "seed=1"], repo, check=False)
    replaced = [line.split(": ", 1)[1].split(", ") for line in second.stdout.splitlines()
                if line.startswith("replacing this commit's earlier experiment(s): ")]
    assert replaced and sorted(replaced[0]) == ["basecnn", "densenet121"], second.stdout + second.stderr
    assert second.returncode == 1 and "1 of 2 failed: densenet121" in second.stderr
    shown = json.loads(run_cmd([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo).stdout)
    names = [e.get("name") for rev in shown for e in (rev.get("experiments") or [])]
    assert sorted(names) == ["basecnn", "densenet121", "mobilenetv2"], names
    assert runs.read_text() == "ran\n"

    # Two training seeds per model (make benchmark SEEDS=2): they replace the models' experiments, share the
    # images (the data stage, on data_seed, is not run again), and the comparison is of their means.
    third = run_cmd(benchmark[:-3] + ["basecnn", "mobilenetv2", "--seeds", "2"], repo, check=False)
    assert third.returncode == 0, third.stdout + third.stderr
    shown = json.loads(run_cmd([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo).stdout)
    names = [e.get("name") for rev in shown for e in (rev.get("experiments") or [])]
    assert sorted(names) == ["basecnn-seed1", "basecnn-seed2", "densenet121", "mobilenetv2-seed1",
                             "mobilenetv2-seed2"], names
    assert runs.read_text() == "ran\n"
    rows = {r["model"]: r for r in csv.DictReader(open(repo / "reports/comparison.csv"))}
    assert (rows["basecnn"]["val_accuracy_pct"], rows["mobilenetv2"]["val_accuracy_pct"]) == ("70.75", "90.75")
    assert float(rows["basecnn"]["val_accuracy_std_pp"]) == pytest.approx(0.3536, abs=1e-4)
    pair = next(csv.DictReader(open(repo / "reports/pairwise.csv")))
    assert (pair["seeds_a"], pair["seeds_b"], pair["accuracy_a"], pair["mcnemar_p"]) == ("2", "2", "0.7075", "n/a")
    assert "mean over the seeds" in (repo / "reports/comparison.md").read_text()


def test_make_benchmark_passes_seeds_jobs_and_overrides_to_the_runner():
    """`make benchmark SEEDS=3 JOBS=2 BENCHMARK_ARGS=...` runs compare.benchmark with them (a
    dry run: -n prints the recipe; -o keeps make from building the venv)."""
    dry = run_cmd(["make", "-s", "-n", "-o", ".venv/installed", "benchmark", "SEEDS=3", "JOBS=2",
                   "BENCHMARK_ARGS=-S weights=none"], ROOT)
    assert dry.stdout.strip() == "python -m compare.benchmark --seeds 3 --jobs 2 -S weights=none"
    dry = run_cmd(["make", "-s", "-n", "-o", ".venv/installed", "benchmark", "FRACTIONS=0.05 0.2"], ROOT)
    assert dry.stdout.strip() == "python -m compare.benchmark --seeds 1 --jobs 1 --fractions 0.05 0.2"


def test_benchmark_queues_each_model_at_each_budget_and_seed_by_name():
    """make benchmark FRACTIONS=... SEEDS=2: per model, per budget (1 always, the plain name), per seed."""
    from compare.benchmark import experiments
    from compare.table import unseeded
    from compare.labels import budget_name
    seeds = [(7, ["seed=7"]), (8, ["seed=8"])]
    runs = experiments(("basecnn", "mobilenetv2"), ["weights=none"], seeds, [0.05, 0.2])
    assert [name for name, _, _ in runs] == [
        f"{m}{b}-seed{k}" for m in ("basecnn", "mobilenetv2") for b in ("-f0.05", "-f0.2", "") for k in (7, 8)]
    assert runs[0] == ("basecnn-f0.05-seed7", "basecnn", ["weights=none", "cifar10.train_fraction=0.05", "seed=7"])
    assert runs[5] == ("basecnn-seed8", "basecnn", ["weights=none", "cifar10.train_fraction=1.0", "seed=8"])
    assert {unseeded(name) for name, _, _ in runs} == {budget_name(m, f) for m in ("basecnn", "mobilenetv2")
                                                     for f in (0.05, 0.2, 1)}
    # Without --fractions: one experiment per model and seed, at params' train_fraction.
    assert experiments(("basecnn",), [], [("", [])]) == [("basecnn", "basecnn", [])]


def test_benchmark_seeds_count_from_the_seed_in_effect(params):
    from compare.benchmark import training_seeds
    from core import StageError
    assert training_seeds(params, [], 1) == [("", [])]  # one seed: the experiment keeps the model's name
    assert training_seeds(params, ["seed=7"], 3) == [(7, ["seed=7"]), (8, ["seed=8"]), (9, ["seed=9"])]
    assert [k for k, _ in training_seeds(params, [], 2)] == [params["seed"], params["seed"] + 1]
    with pytest.raises(StageError, match="leaves the seed range"):
        training_seeds(params, [f"seed={2 ** 32 - 1}"], 2)


def test_comparison_compares_the_registry_without_loading_tensorflow():
    """The models are core.registry's, read without TensorFlow (the comparison starts in seconds, and a backbone
    added to the registry is benchmarked and compared with no other edit). A subprocess: this one may have
    imported TensorFlow already."""
    code = """
import inspect, sys
import compare.benchmark, compare.report, compare.table
from core.registry import REGISTRY
assert "tensorflow" not in sys.modules, [m for m in sys.modules if m.startswith("tensorflow")][:5]
for f in (compare.table.comparison_table, compare.report.main, compare.benchmark.main):
    assert inspect.signature(f).parameters["names"].default == tuple(REGISTRY), f
"""
    run_cmd([sys.executable, "-c", code], ROOT)


def test_costs_measured_on_several_machines_are_named_per_model(params, tmp_path):
    """Experiments pulled from several machines: each model's machine and day, read from its own conditions,
    and a warning that costs compare only within a machine; one machine gets one line."""
    from compare import report
    records = [record("a", **{"conditions.profile.date_utc": "2026-12-01"}),
               record("b", **{"conditions.profile.cpu": "Big CPU", "conditions.profile.usable_cores": 32.0,
                              "conditions.profile.date_utc": "2026-12-03"})]
    report.main(params, records, ("a", "b"), tmp_path / "r", tmp_path / "p", read=lambda record: {})
    md = (tmp_path / "r/comparison.md").read_text()
    assert ("Costs measured on different machines, so latency, throughput, memory and training time compare only "
            "between models of the same machine: a on Test CPU, 2 usable core(s), TensorFlow 2.21.0, 2026-12-01; "
            "b on Big CPU, 32 usable core(s), TensorFlow 2.21.0, 2026-12-03.") in md
    report.main(params, records[:1], ("a",), tmp_path / "r", tmp_path / "p", read=lambda record: {})
    assert "Costs measured on Test CPU, 2 usable core(s), TensorFlow 2.21.0; sizes" in (tmp_path / "r/comparison.md").read_text()
