"""Side-by-side comparison of the backbones' experiments, and a choice under constraints.

Pure functions over plain data: records as `dvc.api.exp_show()` returns them
(one flat dict per experiment) become rows with unit-named columns; rows give
the markdown and CSV tables, the Pareto front and the recommendation.
"""
import math
from dataclasses import dataclass, field
from typing import Optional

from core import params as P
from core.corruptions import NAMES as CORRUPTIONS
from core.io import csv_text

# The registry of core/models.py, written out: importing it would load TensorFlow.
MODELS = ("basecnn", "mobilenetv2", "resnet50v2", "efficientnetb0", "densenet121")
TFLITE_KINDS = P.TFLITE_KINDS
NA = "n/a"
TRAIN, EVALUATE, PROFILE = "metrics/train.json", "metrics/evaluate.json", "metrics/profile.json"


@dataclass(frozen=True)
class Column:
    name: str         # CSV header and row key, unit in the name
    label: str        # markdown header, unit in parentheses
    path: Optional[str]  # the metrics file it comes from; None: computed across models (mce_pct)
    key: Optional[str]   # flattened key in that file
    scale: float = 1.0  # 100: fraction -> %, 1e-6: count -> millions
    fmt: str = ".2f"


COLUMNS = (
    Column("test_accuracy_pct", "CIFAR-10 test accuracy (%)", EVALUATE, "test.accuracy", 100),
    Column("cinic10_accuracy_pct", "CINIC-10 accuracy (%)", EVALUATE, "cinic10.accuracy", 100),
    Column("accuracy_drop_pp", "drop, test − CINIC (pp)", EVALUATE, "accuracy_drop", 100),
    Column("corruption_accuracy_pct", "CIFAR-10-C mean corruption accuracy (%)", EVALUATE,
           "corruptions.mean_accuracy", 100),
    Column("corruption_drop_pp", "drop, clean − corrupted (pp)", EVALUATE, "corruptions.accuracy_drop", 100),
    Column("mce_pct", "mCE, basecnn = 100 (%)", None, None, fmt=".1f"),
    Column("test_loss_nats", "test loss (cross-entropy, nats)", EVALUATE, "test.loss", fmt=".3f"),
    Column("latency_p50_ms", "batch-1 latency p50 (ms)", PROFILE, "latency_p50_ms"),
    Column("latency_p90_ms", "batch-1 latency p90 (ms)", PROFILE, "latency_p90_ms"),
    Column("throughput_ips", "throughput (img/s)", PROFILE, "throughput_ips", fmt=".0f"),
    Column("size_mb", "size on disk (MB)", PROFILE, "size_mb"),
    Column("weights_mb", "weights (MB)", PROFILE, "weights_mb"),
    Column("peak_rss_mb", "peak RSS (MB)", PROFILE, "peak_rss_mb", fmt=".0f"),
    Column("params_m", "params (M)", PROFILE, "params_total", 1e-6),
    Column("gflops_per_image", "GFLOPs per image", PROFILE, "gflops_per_image", fmt=".3f"),
    Column("train_time_s", "training time (s)", TRAIN, "train_time_s", fmt=".0f"),
    # TFLite accuracy is measured on a seeded subset of the test split: compare it with the Keras model's on the same.
    Column("subset_accuracy_pct", "Keras accuracy on the TFLite subset (%)", PROFILE,
           "keras_accuracy_on_eval_images", 100),
    *(Column(f"tflite_{kind}_{name}", f"TFLite {kind} {label}", PROFILE, f"tflite_{kind}_{key}", scale)
      for kind in TFLITE_KINDS
      for name, label, key, scale in (("size_mb", "size (MB)", "size_mb", 1.0),
                                      ("latency_p50_ms", "latency p50 (ms)", "latency_p50_ms", 1.0),
                                      ("accuracy_pct", "accuracy on the subset (%)", "accuracy", 100))),
    # CIFAR-10-C per corruption (mean over severities) and clean on the same images: what mCE is made of.
    Column("cifar10c_clean_accuracy_pct", "CIFAR-10-C images uncorrupted: accuracy (%)", EVALUATE,
           "corruptions.clean_accuracy", 100),
    *(Column(f"cifar10c_{name}_accuracy_pct", f"{name} accuracy (%)", EVALUATE, f"corruptions.by_corruption.{name}",
             100) for name in CORRUPTIONS),
)
BY_NAME = {c.name: c for c in COLUMNS}

# compare.<key> -> (column it limits, what it is called, unit). Latency is limited at p90, the figure
# MLPerf's single-stream scenario reports: a limit on the median would let every tenth call break it.
LIMITS = {
    "max_latency_ms": ("latency_p90_ms", "batch-1 latency p90", "ms"),
    "max_size_mb": ("size_mb", "size on disk", "MB"),
    "max_peak_rss_mb": ("peak_rss_mb", "peak RSS", "MB"),
}
RANK_BY = {"cinic10_accuracy": "cinic10_accuracy_pct", "test_accuracy": "test_accuracy_pct",
           "corruption_accuracy": "corruption_accuracy_pct"}
# Why a model can lack a figure compare.rank_by asks for.
MISSING = {"cinic10_accuracy_pct": "no shift set: cinic10.urls is none?",
           "corruption_accuracy_pct": "no CIFAR-10-C: corruptions.per_class is 0?"}
MCE_BASELINE = "basecnn"


# Records -> rows.

def number(value):
    """A finite float from an exp_show cell, else None: DVC shows a metric that a file
    lacks as None or "None", an unreadable file as "!", and a boolean as "True"."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def cell(record, path, key):
    # exp_show prefixes a key with its file only when another file (or params.yaml) has the same key.
    return record.get(f"{path}:{key}", record.get(key))


def status(record):
    if record is None:
        return "not found"
    state = record.get("State")
    return state.lower() if state in ("Failed", "Queued", "Running") else "ok"


def row(name, record):
    """One model's figures in the units its column names, None where not measured."""
    out = {"model": name, "status": status(record)}
    for c in COLUMNS:
        x = number(cell(record, c.path, c.key)) if out["status"] == "ok" and c.path else None
        out[c.name] = None if x is None else x * c.scale
    return out


def rows(records, names=MODELS):
    """A row per name, in `names` order, from the experiments of that name (newest first, as exp_show lists them)."""
    found = {}
    for record in records:
        found.setdefault(record.get("Experiment"), record)
    return with_mce([row(name, found.get(name)) for name in names])


def with_mce(rows_, baseline=MCE_BASELINE):
    """Each row's mCE (Hendrycks & Dietterich 2019): per corruption its error over the baseline's, averaged over
    the corruptions both measured, in %. The paper's baseline is AlexNet; here the from-scratch basecnn, so 100
    is basecnn's robustness and lower is better. n/a without the baseline's figures or with a baseline error of 0."""
    base = next((r for r in rows_ if r["model"] == baseline and r["status"] == "ok"), None)
    for r in rows_:
        ratios = [(100 - r[c]) / (100 - base[c]) for c in (f"cifar10c_{n}_accuracy_pct" for n in CORRUPTIONS)
                  if base is not None and r[c] is not None and base[c] is not None and base[c] < 100]
        r["mce_pct"] = 100 * sum(ratios) / len(ratios) if ratios else None
    return rows_


def conditions(records, names=MODELS):
    """What the figures were measured on, from the first of the experiments that recorded it."""
    for record in records:
        if record.get("Experiment") in names and status(record) == "ok":
            out = {k: cell(record, PROFILE, f"conditions.{k}") for k in ("cpu", "usable_cores", "tensorflow")}
            return {**out, "weights": cell(record, "params.yaml", "weights")}
    return {}


# Tables.

def fmt(value, spec):
    return NA if value is None else format(value, spec)


def markdown_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
    return "\n".join(lines) + "\n"


def comparison_csv(rows_):
    """Every column, one row per model; missing figures are "n/a" (pandas reads them as NaN)."""
    return csv_text(["model", "status", *BY_NAME],
                    ([r["model"], r["status"], *(NA if r[c] is None else round(r[c], 4) for c in BY_NAME)] for r in rows_))


MAIN_COLUMNS = [c for c in COLUMNS if not c.name.startswith(("tflite_", "subset_", "cifar10c_"))]


def main_table(rows_):
    return markdown_table(["model", *(c.label for c in MAIN_COLUMNS)],
                          [[r["model"] if r["status"] == "ok" else f"{r['model']} ({r['status']})",
                            *(fmt(r[c.name], c.fmt) for c in MAIN_COLUMNS)] for r in rows_])


def tflite_table(rows_):
    """One row per (model, runtime): long form reads better than twelve more columns."""
    figures = ("size_mb", "latency_p50_ms", "accuracy_pct")
    runtimes = [("Keras", ("size_mb", "latency_p50_ms", "subset_accuracy_pct")),
                *((f"TFLite {kind}", tuple(f"tflite_{kind}_{f}" for f in figures)) for kind in TFLITE_KINDS)]
    return markdown_table(["model", "runtime", "size (MB)", "batch-1 latency p50 (ms)",
                           "accuracy on the TFLite subset (%)"],
                          [[r["model"], runtime, *(fmt(r[c], ".2f") for c in columns)]
                           for r in rows_ if r["status"] == "ok" for runtime, columns in runtimes])


# Pareto front and recommendation.

def pareto_front(points):
    """Names of the (name, cost, benefit) points that no other point beats: none costs no more
    and gives no less, with one of the two strictly. Points with a None figure are left out."""
    points = sorted((p for p in points if p[1] is not None and p[2] is not None), key=lambda p: (p[1], -p[2]))

    def beaten(cost, benefit):
        return any(c <= cost and b >= benefit and (c < cost or b > benefit) for _, c, b in points)
    return [name for name, cost, benefit in points if not beaten(cost, benefit)]


def constraints(params):
    """compare.* from params.yaml, checked: a limit is a number >= 0 or null (no limit); `.inf` means no limit
    too, NaN is refused."""
    P.known_keys(params, "compare", [*LIMITS, "rank_by"])
    out = {key: None if P.get(params, f"compare.{key}") is None else
           P.number(params, f"compare.{key}", 0, infinite=True) for key in LIMITS}
    out["rank_by"] = P.choice(params, "compare.rank_by", list(RANK_BY))
    return out


@dataclass(frozen=True)
class RuledOut:
    key: str                         # compare.<key> that ruled it out; "status" / "rank_by": no figure to judge
    figure: Optional[float] = None   # the model's figure in the limit's unit (None: not measured)
    limit: Optional[float] = None
    note: str = ""

    def __str__(self):
        if self.key not in LIMITS:
            return self.note
        _, what, unit = LIMITS[self.key]
        if self.figure is None:
            return f"{what} not measured (limit {self.limit:g} {unit}, compare.{self.key})"
        return f"{what} {self.figure:.2f} {unit} > limit {self.limit:g} {unit} (compare.{self.key})"


@dataclass
class Recommendation:
    model: Optional[str]          # None: no model meets every constraint
    rank_by: str                  # the column models were ranked on
    fallback: Optional[str]       # why that is not the column compare.rank_by asked for
    ranking: list = field(default_factory=list)    # (model, figure) of every model within the limits, best first
    ruled_out: dict = field(default_factory=dict)  # model -> [RuledOut, ...]
    limits: dict = field(default_factory=dict)     # compare.<key> -> limit, or None


def rank_column(rows_, rank_by):
    """The accuracy to rank on, and why it differs from the one asked for. Decided over every model
    with results, so tightening a limit never changes what the survivors are ranked on."""
    column = RANK_BY[rank_by]
    lacking = [r["model"] for r in rows_ if r["status"] == "ok" and r[column] is None]
    if column in MISSING and lacking:
        return "test_accuracy_pct", (f"{BY_NAME[column].label.replace(' (%)', '')} is n/a for {', '.join(lacking)} "
                                     f"({MISSING[column]}), so every model is ranked on CIFAR-10 test accuracy")
    return column, None


def recommend(rows_, constraints_):
    """The most accurate model within every limit; each other model with what ruled it out."""
    limits = {k: constraints_.get(k) for k in LIMITS}
    column, fallback = rank_column(rows_, constraints_.get("rank_by", "cinic10_accuracy"))
    ruled_out, ranking = {}, []
    for r in rows_:
        if r["status"] != "ok":
            ruled_out[r["model"]] = [RuledOut("status", note=f"{r['status']}: no results")]
            continue
        why = [RuledOut(k, r[LIMITS[k][0]], limit) for k, limit in limits.items()
               if limit is not None and (r[LIMITS[k][0]] is None or r[LIMITS[k][0]] > limit)]
        if r[column] is None:
            why.append(RuledOut("rank_by", note=f"no {BY_NAME[column].label.replace(' (%)', '')} to rank on"))
        if why:
            ruled_out[r["model"]] = why
        else:
            ranking.append(r)
    # Ties go to the faster model, then the smaller; an unmeasured figure loses a tie.
    unmeasured_last = lambda x: math.inf if x is None else x  # noqa: E731
    ranking.sort(key=lambda r: (-r[column], unmeasured_last(r["latency_p90_ms"]), unmeasured_last(r["size_mb"]),
                                r["model"]))
    return Recommendation(ranking[0]["model"] if ranking else None, column, fallback,
                          [(r["model"], r[column]) for r in ranking], ruled_out, limits)


def limits_text(limits):
    parts = [f"{LIMITS[k][1]} ≤ {v:g} {LIMITS[k][2]}" for k, v in limits.items() if v is not None]
    return ", ".join(parts) if parts else "no limits"


def explain(rec):
    """The recommendation and why, as printed and as written into the report."""
    label = BY_NAME[rec.rank_by].label.replace(" (%)", "")
    if rec.model:
        best = rec.ranking[0][1]
        lines = [f"Recommended: {rec.model}, the highest {label} ({best:.2f} %) of the {len(rec.ranking)} "
                 f"model(s) within the limits ({limits_text(rec.limits)})."]
        if len(rec.ranking) > 1:
            lines.append("Runners-up: " + ", ".join(f"{m} ({x:.2f} %)" for m, x in rec.ranking[1:]) + ".")
    else:
        keys = sorted({f"compare.{o.key}" for why in rec.ruled_out.values() for o in why if o.key in LIMITS})
        lines = [f"No model meets every constraint ({limits_text(rec.limits)})."]
        lines.append(f"Loosen {', '.join(keys)} in params.yaml (null: no limit) and run `python -m bench.compare` "
                     "again." if keys else "No model has results to rank: see the failures below.")
    if rec.fallback:
        lines.append(f"Ranked on CIFAR-10 test accuracy: {rec.fallback}.")
    if rec.ruled_out:
        lines.append("Ruled out:")
        lines += [f"  {m}: {'; '.join(map(str, why))}" for m, why in rec.ruled_out.items()]
    return "\n".join(lines)


MCE_NOTE = ("CIFAR-10-C: the 15 corruptions x 5 severities of Hendrycks & Dietterich (ICLR 2019), computed locally "
            "on a class-balanced subset of the test split (stage corrupt_cifar10). The drop is from the accuracy on "
            "the same images uncorrupted. mCE is the paper's mean corruption error, each corruption's error divided "
            f"by {MCE_BASELINE}'s (the paper divides by AlexNet's): 100 is as robust as {MCE_BASELINE}, lower is better.")


def report_markdown(rows_, rec, conditions_, figures):
    """reports/comparison.md: the recommendation first, then the tables and the figures."""
    out = ["# Backbone comparison", ""]
    if conditions_.get("cpu") not in (None, "None", "!"):
        cores = number(conditions_.get("usable_cores"))
        out += [f"Costs measured on {conditions_['cpu']}, {NA if cores is None else f'{cores:.0f}'} usable core(s), "
                f"TensorFlow {conditions_.get('tensorflow')}; sizes in MB of 10^6 bytes.", ""]
    if conditions_.get("weights") == "none":
        out += ["These runs used `weights: none` (random initialisation): backbone accuracies measure cost, "
                "not transfer quality.", ""]
    out += ["## Recommendation", "", "```", explain(rec), "```", "",
            "## Accuracy and cost", "", main_table(rows_), MCE_NOTE, "", "## TFLite exports", "", tflite_table(rows_)]
    failed = [r for r in rows_ if r["status"] != "ok"]
    if failed:
        out += ["## Without results", ""]
        out += [f"- {r['model']}: {r['status']}; " + (f"its log: `dvc queue logs {r['model']}`"
                                                     if r["status"] == "failed" else "see `dvc queue status`")
                for r in failed]
        out.append("")
    out += ["## Figures", ""]
    out += [f"![{title}]({name})" for name, title in figures]
    return "\n".join(out) + "\n"
