"""The comparison's table and recommendation: pure functions over `dvc.api.exp_show()` records (one flat dict
per experiment), which become one pandas row per model with unit-named columns; the rows give the markdown
tables, the Pareto front and the recommendation. Used by compare/report.py (the command) and compare/benchmark.py;
no stage uses it, so it is the comparison's, here, not in core/.
"""
import math
import os
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from core.corruptions import NAMES as CORRUPTIONS
from core.params import TFLITE_KINDS, check_section, choice, get, number
from core.registry import REGISTRY

MODELS = tuple(REGISTRY)  # core.registry loads no TensorFlow: a backbone added there is compared too
NA = "n/a"
MCE_BASELINE = "basecnn"

# CSV name (unit in it) -> (exp_show key, markdown label[, cell format if not .2f]). The metrics files hold
# accuracies and drops as fractions: the _pct and _pp columns are them x100.
COLUMNS = {
    "val_accuracy_pct": ("val_accuracy", "CIFAR-10 val accuracy (%)"),
    "test_accuracy_pct": ("test.accuracy", "CIFAR-10 test accuracy (%)"),
    "cinic10_accuracy_pct": ("cinic10.accuracy", "CINIC-10 accuracy (%)"),
    "accuracy_drop_pp": ("accuracy_drop", "drop, test − CINIC (pp)"),
    "corruption_accuracy_pct": ("corruptions.mean_accuracy", "CIFAR-10-C mean corruption accuracy (%)"),
    "corruption_drop_pp": ("corruptions.accuracy_drop", "drop, clean − corrupted (pp)"),
    "mce_pct": (None, "mCE, basecnn = 100 (%)", ".1f"),  # computed across models: with_mce
    "test_loss_nats": ("test.loss", "test loss (cross-entropy, nats)", ".3f"),
    "latency_p50_ms": ("latency_p50_ms", "batch-1 latency p50 (ms)"),
    "latency_p90_ms": ("latency_p90_ms", "batch-1 latency p90 (ms)"),
    "throughput_ips": ("throughput_ips", "throughput (img/s)", ".0f"),
    "size_mb": ("size_mb", "size on disk (MB)"),
    "weights_mb": ("weights_mb", "weights (MB)"),
    "peak_rss_mb": ("peak_rss_mb", "peak RSS (MB)", ".0f"),
    "params_m": ("params_total", "params (M)"),
    "gflops_per_image": ("gflops_per_image", "GFLOPs per image", ".3f"),
    "train_time_s": ("train_time_s", "training time (s)", ".0f"),
    # TFLite accuracy is measured on a seeded subset of the test split: compare it with the Keras model's on the same.
    "subset_accuracy_pct": ("keras_accuracy_on_eval_images", "Keras accuracy on the TFLite subset (%)"),
    **{f"tflite_{kind}_{name}": (f"tflite_{kind}_{key}", f"TFLite {kind} {label}") for kind in TFLITE_KINDS
       for name, key, label in (("size_mb", "size_mb", "size (MB)"), ("latency_p50_ms", "latency_p50_ms",
                                "latency p50 (ms)"), ("accuracy_pct", "accuracy", "accuracy on the subset (%)"))},
    # CIFAR-10-C per corruption (mean over severities) and clean on the same images: what mCE is made of.
    "cifar10c_clean_accuracy_pct": ("corruptions.clean_accuracy", "CIFAR-10-C images uncorrupted: accuracy (%)"),
    **{f"cifar10c_{n}_accuracy_pct": (f"corruptions.by_corruption.{n}", f"{n} accuracy (%)") for n in CORRUPTIONS},
}
LABELS = {name: column[1] for name, column in COLUMNS.items()}
FORMATS = {name: column[2] if len(column) > 2 else ".2f" for name, column in COLUMNS.items()}
MAIN_COLUMNS = [c for c in COLUMNS if not c.startswith(("tflite_", "subset_", "cifar10c_"))]
# Condition column -> record keys, the first with a value wins. `conditions.<stage>.<key>` is read from the
# experiment's metrics/conditions/<stage>.json (compare.report.with_conditions): the image size a model really
# ran at (basecnn: 32) before the param. A param is named with its file only where a metric shares its name.
CONDITIONS = {"weights": ("params.yaml:weights", "weights", "conditions.train.weights"),
              "image_size_px": ("conditions.train.image_size", "conditions.profile.image_size",
                                "params.yaml:image_size", "image_size"),
              "cifar10_format": ("cifar10.format",), "train_fraction": ("cifar10.train_fraction",),
              "cpu": ("conditions.profile.cpu",), "usable_cores": ("conditions.profile.usable_cores",),
              "tensorflow": ("conditions.profile.tensorflow",)}
NUMERIC_CONDITIONS = ["image_size_px", "train_fraction", "usable_cores"]

# compare.<key> -> (column it limits, what it is called, unit). Latency is limited at p90, the figure MLPerf's
# single-stream scenario reports: a limit on the median would let every tenth call break it.
LIMITS = {"max_latency_ms": ("latency_p90_ms", "batch-1 latency p90", "ms"),
          "max_size_mb": ("size_mb", "size on disk", "MB"),
          "max_peak_rss_mb": ("peak_rss_mb", "peak RSS", "MB")}
RANK_BY = ("val_accuracy", "test_accuracy", "cinic10_accuracy", "corruption_accuracy")  # column: <rank_by>_pct
# Held-out sets: a model selected on one has an optimistic figure there. The validation split is for selection.
HELD_OUT = {"test_accuracy_pct": "CIFAR-10 test", "cinic10_accuracy_pct": "CINIC-10",
            "corruption_accuracy_pct": "CIFAR-10-C"}
# Why a model can lack a figure compare.rank_by asks for; then every model is ranked on validation accuracy.
MISSING = {"cinic10_accuracy_pct": "no shift set: cinic10.urls is none?",
           "corruption_accuracy_pct": "no CIFAR-10-C: corruptions.per_class is 0?"}


def first_of(frame, keys):
    """Per row, the value of the first of these exp_show columns that has one (None where none has)."""
    present = [k for k in keys if k in frame]
    return frame[present].bfill(axis=1).iloc[:, 0] if present else pd.Series(None, index=frame.index, dtype=object)


def finite(frame):
    """Floats, NaN where not measured: DVC shows that as None, "None" or "!" (and a boolean as "True")."""
    numbers = frame.map(lambda v: None if isinstance(v, bool) else v).apply(pd.to_numeric, errors="coerce")
    return numbers.where(numbers.abs() < float("inf"))


def comparison_table(records, names=MODELS):
    """One row per name (the index, named model), from the newest experiment of that name (exp_show lists the
    newest first): its status, every column in its unit (NaN where not measured) and its conditions."""
    found = {}
    for record in records:
        found.setdefault(record.get("Experiment"), record)
    frame = pd.DataFrame([found.get(n, {"State": "not found"}) for n in names], index=pd.Index(names, name="model"))
    # exp_show names a metric with its file (`metrics/profile.json:size_mb`) only where another file has it too.
    frame = frame.T.groupby(lambda key: key.rpartition(".json:")[2], sort=False).first().T
    status = first_of(frame, ["State"]).map(lambda s: s.lower() if s in ("Failed", "Queued", "Running", "not found")
                                            else "ok").rename("status")
    scale = [1e-6 if name == "params_m" else 100 if name.endswith(("_pct", "_pp")) else 1 for name in COLUMNS]
    figures = finite(frame.reindex(columns=[column[0] for column in COLUMNS.values()])).set_axis(list(COLUMNS), axis=1)
    conditions = pd.DataFrame({name: first_of(frame, keys) for name, keys in CONDITIONS.items()})
    conditions[NUMERIC_CONDITIONS] = finite(conditions[NUMERIC_CONDITIONS])
    out = pd.concat([status, (figures * scale).where(status == "ok", axis=0), conditions.where(status == "ok", axis=0)],
                    axis=1)
    out["cinic10"] = out.cinic10_accuracy_pct.notna().map({True: "present", False: "absent"})
    out["cifar10c"] = out.corruption_accuracy_pct.notna().map({True: "present", False: "absent"})
    return with_mce(out)


def with_mce(table, baseline=MCE_BASELINE):
    """Each row's mCE (Hendrycks & Dietterich 2019): per corruption its error over the baseline's, averaged over
    the corruptions both measured, in %. The paper's baseline is AlexNet; here the from-scratch basecnn, so 100
    is basecnn's robustness and lower is better. NaN without the baseline's figures or with a baseline error of 0."""
    errors = 100 - table[[f"cifar10c_{n}_accuracy_pct" for n in CORRUPTIONS]]
    base = errors.reindex([baseline]).iloc[0]  # NaN without the baseline
    table["mce_pct"] = 100 * (errors / base.where(base > 0)).mean(axis=1)
    return table


def conditions_text(table):
    """What the figures were measured under, read from the experiments: the value most models share, the
    others' in parentheses."""
    ok = table[table.status == "ok"]
    if ok.empty:
        return "n/a (no model has results)"

    def shared(column, show=str):
        values = ok[column].map(lambda v: NA if pd.isna(v) else show(v))
        common = values.mode().iloc[0]
        others = ", ".join(f"{model} {v}" for model, v in values[values != common].items())
        return f"{common} ({others})" if others else common
    weights = shared("weights", lambda w: {"none": "none (random init)", "imagenet": "imagenet"}.get(
        w, f"file {os.path.basename(str(w))}"))
    return (f"weights {weights}; image size {shared('image_size_px', lambda s: f'{s:.0f} px')}; "
            f"CIFAR-10 {shared('cifar10_format')} at train_fraction {shared('train_fraction', lambda f: f'{f:g}')}; "
            f"CINIC-10 {shared('cinic10')}; CIFAR-10-C {shared('cifar10c')}")


def markdown(header, body):
    """A pipe table, cells as given (tabulate would pad every cell, changing each line of the report)."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(map(str, row)) + " |" for row in body)]) + "\n"


def fmt(value, spec=".2f"):
    return NA if pd.isna(value) else format(value, spec)


def cells(frame):
    return frame.apply(lambda column: column.map(lambda v: fmt(v, FORMATS[column.name])))


def main_table(table):
    names = [m if s == "ok" else f"{m} ({s})" for m, s in table.status.items()]
    return markdown(["model", *(LABELS[c] for c in MAIN_COLUMNS)],
                    [[name, *row] for name, row in zip(names, cells(table[MAIN_COLUMNS]).itertuples(index=False))])


def tflite_table(table):
    """One row per (model, runtime): long form reads better than twelve more columns."""
    runtimes = {"Keras": ["size_mb", "latency_p50_ms", "subset_accuracy_pct"],
                **{f"TFLite {kind}": [f"tflite_{kind}_{f}" for f in ("size_mb", "latency_p50_ms", "accuracy_pct")]
                   for kind in TFLITE_KINDS}}
    ok = cells(table.loc[table.status == "ok", list(COLUMNS)])
    return markdown(["model", "runtime", "size (MB)", "batch-1 latency p50 (ms)", "accuracy on the TFLite subset (%)"],
                    [[m, runtime, *ok.loc[m, columns]] for m in ok.index for runtime, columns in runtimes.items()])


def pareto_front(frame, cost, benefit):
    """The models (index) that no other beats: none costs no more and gives no less, with one of the two
    strictly. Models with a NaN figure are left out."""
    points = frame[[cost, benefit]].dropna().sort_values([cost, benefit], ascending=[True, False])
    c, b = points[cost], points[benefit]
    return [m for m, x, y in points.itertuples() if not ((c <= x) & (b >= y) & ((c < x) | (b > y))).any()]


def constraints(params):
    """compare.* from params.yaml, checked: a limit is a number >= 0 or null (no limit); `.inf` means no limit
    too, NaN is refused."""
    check_section(params, "compare")  # unknown keys (core.params.KEYS)
    out = {key: None if get(params, f"compare.{key}") is None else
           number(params, f"compare.{key}", 0, infinite=True) for key in LIMITS}
    # .inf is read as null: no limit, so a model that lacks the figure is kept rather than ruled out unmeasured.
    out = {key: None if limit == math.inf else limit for key, limit in out.items()}
    return out | {"rank_by": choice(params, "compare.rank_by", RANK_BY)}


@dataclass
class Recommendation:
    model: Optional[str]     # None: no model meets every constraint
    rank_by: str             # the column models were ranked on
    fallback: Optional[str]  # why that is not the column compare.rank_by asked for
    ranking: pd.DataFrame    # the rows within every limit, best first
    ruled_out: dict          # model -> [(compare.<key>, or "status" / "rank_by", why), ...]
    limits: dict             # compare.<key> -> limit, or None


def beyond(key, figure, limit):
    _, what, unit = LIMITS[key]
    if pd.isna(figure):
        return f"{what} not measured (limit {limit:g} {unit}, compare.{key})"
    return f"{what} {figure:.2f} {unit} > limit {limit:g} {unit} (compare.{key})"


def rank_column(table, rank_by):
    """The accuracy to rank on, and why it differs from the one asked for. Decided over every model with
    results, so tightening a limit never changes what the survivors are ranked on."""
    column = f"{rank_by}_pct"
    lacking = table.index[(table.status == "ok") & table[column].isna()]
    if column in MISSING and len(lacking):
        return "val_accuracy_pct", (f"{LABELS[column][:-4]} is n/a for {', '.join(lacking)} ({MISSING[column]}), "
                                    "so every model is ranked on CIFAR-10 val accuracy")
    return column, None


def recommend(table, constraints_):
    """The most accurate model within every limit; each other model with what ruled it out."""
    limits = {key: constraints_.get(key) for key in LIMITS}
    column, fallback = rank_column(table, constraints_.get("rank_by", RANK_BY[0]))
    ruled_out = {}
    for model, row in table.iterrows():
        why = [(key, beyond(key, row[LIMITS[key][0]], limit)) for key, limit in limits.items()
               if limit is not None and not row[LIMITS[key][0]] <= limit]
        why += [("rank_by", f"no {LABELS[column][:-4]} to rank on")] if pd.isna(row[column]) else []
        if row.status != "ok" or why:
            ruled_out[model] = [("status", f"{row.status}: no results")] if row.status != "ok" else why
    # Ties go to the faster model, then the smaller; an unmeasured figure loses a tie.
    ranking = table.drop(index=list(ruled_out)).sort_values(
        [column, "latency_p90_ms", "size_mb", "model"], ascending=[False, True, True, True], na_position="last")
    return Recommendation(ranking.index[0] if len(ranking) else None, column, fallback, ranking, ruled_out, limits)


def limits_text(limits):
    parts = [f"{LIMITS[k][1]} ≤ {v:g} {LIMITS[k][2]}" for k, v in limits.items() if v is not None]
    return ", ".join(parts) if parts else "no limits"


def explain(rec):
    """The recommendation and why, as printed and as written into the report."""
    label, figure = LABELS[rec.rank_by][:-4], rec.ranking[rec.rank_by]
    if rec.model:
        best = rec.ranking.iloc[0]
        held_out = ", ".join(f"{name} {NA if pd.isna(best[c]) else f'{best[c]:.2f} %'}"
                             for c, name in HELD_OUT.items() if c != rec.rank_by)
        lines = [f"Recommended: {rec.model}, the highest {label} ({figure.iloc[0]:.2f} %) of the {len(rec.ranking)} "
                 f"model(s) within the limits ({limits_text(rec.limits)}). Its held-out accuracy: {held_out}."]
        if len(rec.ranking) > 1:
            lines.append("Runners-up: " + ", ".join(f"{m} ({x:.2f} %)" for m, x in figure.iloc[1:].items()) + ".")
        if rec.rank_by in HELD_OUT:
            lines.append(f"Selected on {HELD_OUT[rec.rank_by]}, a held-out set: {rec.model}'s {figure.iloc[0]:.2f} % "
                         f"there is optimistic, the best of {len(rec.ranking)} model(s) on those same images; "
                         "compare.rank_by: val_accuracy selects on the validation split and keeps them unbiased.")
    else:
        keys = sorted({f"compare.{key}" for why in rec.ruled_out.values() for key, _ in why if key in LIMITS})
        lines = [f"No model meets every constraint ({limits_text(rec.limits)}).",
                 f"Loosen {', '.join(keys)} in params.yaml (null: no limit) and run `python -m compare` again."
                 if keys else "No model has results to rank: see the failures below."]
    if rec.fallback:
        lines.append(f"Ranked on CIFAR-10 val accuracy: {rec.fallback}.")
    if rec.ruled_out:
        lines += ["Ruled out:", *(f"  {m}: {'; '.join(text for _, text in why)}" for m, why in rec.ruled_out.items())]
    return "\n".join(lines)


