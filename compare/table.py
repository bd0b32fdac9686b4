"""The comparison's table and recommendation: pure functions over `dvc.api.exp_show()` records (one flat dict
per experiment), which become one pandas row per model with unit-named columns; the rows give the markdown
tables, the Pareto front and the recommendation. Used by compare/report.py (the command) and compare/benchmark.py;
no stage uses it, so it is the comparison's, here, not in core/.
"""
import math
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from compare.pairwise import INTERVAL_COLUMNS, SET_COLUMNS, between, p_text
from core import StageError
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
    "train_images_per_class": ("train_images_per_class", "labelled images per class", ",.0f"),  # the budget trained on
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
MAIN_COLUMNS = [c for c in COLUMNS if not c.startswith(("tflite_", "subset_", "cifar10c_", "train_images_"))]
# The accuracies whose spread over training seeds is reported (<column without _pct>_std_pp).
SEED_SPREAD = ("val_accuracy_pct", "test_accuracy_pct", "cinic10_accuracy_pct", "corruption_accuracy_pct")
# Condition column -> record keys, the first with a value wins. `conditions.<stage>.<key>` is read from the
# experiment's metrics/conditions/<stage>.json (compare.report.with_conditions): the image size a model really
# ran at (basecnn: 32) before the param. A param is named with its file only where a metric shares its name.
CONDITIONS = {"weights": ("params.yaml:weights", "weights", "conditions.train.weights"),
              "image_size_px": ("conditions.train.image_size", "conditions.profile.image_size",
                                "params.yaml:image_size", "image_size"),
              "cifar10_format": ("cifar10.format",), "train_fraction": ("cifar10.train_fraction",),
              "cpu": ("conditions.profile.cpu",), "usable_cores": ("conditions.profile.usable_cores",),
              "tensorflow": ("conditions.profile.tensorflow",),
              "flip_tta": ("conditions.train.flip_tta",),
              "queue_workers": ("conditions.profile.queue_workers",),  # experiments sharing the host (JOBS)
              "date_utc": ("conditions.profile.date_utc",)}  # the day its costs were measured
NUMERIC_CONDITIONS = ["image_size_px", "train_fraction", "usable_cores", "queue_workers"]

# compare.<key> -> (column it limits, what it is called, unit). Latency is limited at p90, the figure MLPerf's
# single-stream scenario reports: a limit on the median would let every tenth call break it.
LIMITS = {"max_latency_ms": ("latency_p90_ms", "batch-1 latency p90", "ms"),
          "max_size_mb": ("size_mb", "size on disk", "MB"),
          "max_peak_rss_mb": ("peak_rss_mb", "peak RSS", "MB")}
RANK_BY = ("val_accuracy", "test_accuracy", "cinic10_accuracy", "corruption_accuracy")  # column: <rank_by>_pct
RANK_SETS = {f"{column}_pct": name for name, column in SET_COLUMNS.items()}  # the predictions set of each
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


def param_keys(params, prefix=""):
    """Every leaf of params.yaml but compare.* (which changes no experiment), as exp_show names it: dotted, or
    `params.yaml:<key>` where a metric has the same name. runs_of checks these."""
    keys = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            keys += param_keys(value, f"{name}.") if name != "compare" else []
        else:
            keys += [name, f"params.yaml:{name}"]
    return keys


def seed_name(model, seed):
    """The experiment name of one training seed of a model, when make benchmark runs several (SEEDS=N)."""
    return f"{model}-seed{seed}"


def unseeded(name):
    """An experiment name without seed_name's suffix: `<model>-seed<k>` -> `<model>`."""
    return re.sub(r"-seed\d+$", "", str(name))


def model_of(name, names):
    """The model an experiment name belongs to: `<model>`, or `<model>-seed<k>` (seed_name); None for others."""
    return next((m for m in names if unseeded(name) == m), None)


def record_seed(record):
    seed = record.get("params.yaml:seed", record.get("seed"))
    return None if seed is None else str(seed)


def runs_of(records, names, param_keys=()):
    """model -> its experiments, newest first (exp_show lists the newest first), one per training seed: the
    experiments named `<model>` or `<model>-seed<k>`, the newest of each seed. Experiments of one model must
    differ in `seed` only (`param_keys`: the params to check, as exp_show names them): otherwise their mean
    would mix settings, and the comparison stops, naming them and the params that differ."""
    runs = {}
    for record in records:
        model = model_of(record.get("Experiment"), names)
        if model:
            runs.setdefault(model, {}).setdefault(record_seed(record) or record.get("Experiment"), record)
    runs = {model: list(by_seed.values()) for model, by_seed in runs.items()}
    for model, group in runs.items():
        differ = sorted(k for k in param_keys if k not in ("seed", "params.yaml:seed")
                        and len({str(r.get(k)) for r in group}) > 1)
        if differ:
            raise StageError(f"the experiments of {model} ({', '.join(str(r['Experiment']) for r in group)}) differ "
                             f"in {', '.join(differ)}, not only in seed: their mean would mix settings; remove the "
                             "odd ones (`dvc exp remove`) or run `make benchmark` again")
    return runs


def run_rows(records):
    """One row per experiment record: status, every column in its unit (NaN where not measured), conditions."""
    frame = pd.DataFrame(records)
    # exp_show names a metric with its file (`metrics/profile.json:size_mb`) only where another file has it too.
    frame = frame.T.groupby(lambda key: key.rpartition(".json:")[2], sort=False).first().T
    status = first_of(frame, ["State"]).map(lambda s: s.lower() if s in ("Failed", "Queued", "Running", "not found")
                                            else "ok").rename("status")
    scale = [1e-6 if name == "params_m" else 100 if name.endswith(("_pct", "_pp")) else 1 for name in COLUMNS]
    figures = finite(frame.reindex(columns=[column[0] for column in COLUMNS.values()])).set_axis(list(COLUMNS), axis=1)
    conditions = pd.DataFrame({name: first_of(frame, keys) for name, keys in CONDITIONS.items()})
    conditions[NUMERIC_CONDITIONS] = finite(conditions[NUMERIC_CONDITIONS])
    return pd.concat([status, (figures * scale).where(status == "ok", axis=0),
                      conditions.where(status == "ok", axis=0)], axis=1)


def comparison_table(records, names=MODELS, param_keys=(), groups=None):
    """One row per name (the index, named model): the mean of its experiments' figures over its training seeds
    (runs_of), with the seed-to-seed standard deviation of each accuracy (`<column>_std_pp`, n/a for one
    seed), its status (ok only if every seed's experiment is), the number of seeds and the conditions of its
    newest experiment. `groups`: runs_of's result, when the caller has it already."""
    groups = runs_of(records, names, param_keys) if groups is None else groups
    rows = []
    for name in names:
        runs = run_rows(groups.get(name) or [{"State": "not found"}])
        bad = runs.status[runs.status != "ok"]
        row = runs.iloc[0].copy()
        row["status"] = bad.iloc[0] if len(bad) else "ok"
        ok = runs.loc[runs.status == "ok", list(COLUMNS)] if row["status"] == "ok" else runs.loc[[], list(COLUMNS)]
        row[list(COLUMNS)] = ok.mean() if len(ok) else math.nan
        for column in SEED_SPREAD:
            row[f"{column.removesuffix('_pct')}_std_pp"] = ok[column].std() if len(ok) > 1 else math.nan
        row["seeds"] = len(ok) if len(ok) else math.nan
        seeds = {record_seed(r) or NA for r in groups.get(name, [])}
        row["seed"] = " ".join(sorted(seeds, key=lambda s: (len(s), s))) if len(ok) else NA  # 9 before 10
        row["experiments"] = ", ".join(str(r.get("Experiment")) for r in groups.get(name, [])) or name
        rows.append(row)
    out = pd.DataFrame(rows, index=pd.Index(names, name="model"))
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


def tta(value):
    return "on" if str(value) == "True" else "off" if str(value) == "False" else NA


def conditions_text(table, budgets=False):
    """What the figures were measured under, read from the experiments: the value most models share, the
    others' in parentheses. `budgets`: the rows are labelled budgets (compare/labels.py), whose train_fraction
    is each row's own."""
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
            f"CIFAR-10 {shared('cifar10_format')} at "
            + ("each labelled budget" if budgets else f"train_fraction {shared('train_fraction', lambda f: f'{f:g}')}")
            + "; "
            f"CINIC-10 {shared('cinic10')}; CIFAR-10-C {shared('cifar10c')}; flip TTA {shared('flip_tta', tta)}")


def markdown(header, body):
    """A pipe table, cells as given (tabulate would pad every cell, changing each line of the report)."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(map(str, row)) + " |" for row in body)]) + "\n"


def fmt(value, spec=".2f"):
    return NA if pd.isna(value) else format(value, spec)


def cells(frame):
    return frame.apply(lambda column: column.map(lambda v: fmt(v, FORMATS[column.name])))


def with_spread(table, shown):
    """Each accuracy cell with its 95 % interval and, over several seeds, the seeds' standard deviation."""
    for column in SEED_SPREAD:
        low, high = (table.get(f"{column.removesuffix('_pct')}_ci_{end}_pct") for end in ("low", "high"))
        sd = table.get(f"{column.removesuffix('_pct')}_std_pp")
        for model in table.index:
            cell = shown.at[model, column]
            if low is not None and not pd.isna(low[model]):
                cell += f" [{low[model]:.2f}, {high[model]:.2f}]"
            if sd is not None and not pd.isna(sd[model]):
                cell += f", sd {sd[model]:.2f}"
            shown.at[model, column] = cell
    return shown


def main_table(table):
    """Accuracy and cost per model; accuracies with their 95 % interval (and seed sd) where known."""
    names = [m if s == "ok" else f"{m} ({s})" for m, s in table.status.items()]
    shown = with_spread(table, cells(table[MAIN_COLUMNS]))
    known = table.reindex(columns=INTERVAL_COLUMNS).notna().any().any()
    header = ["model", *(LABELS[c] + (" [95 % CI]" if known and c in SEED_SPREAD else "") for c in MAIN_COLUMNS)]
    if (table.get("seeds", pd.Series(dtype=float)) > 1).any():
        header.insert(1, "seeds")
        shown.insert(0, "seeds", table.seeds.map(lambda n: fmt(n, ".0f")))
    return markdown(header, [[name, *row] for name, row in zip(names, shown.itertuples(index=False))])


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


# compare.prefer -> (the cost column that breaks a tie, how the cheaper model is said to be better)
# compare.prefer -> (the cost column that breaks a tie, how the cheaper model is better, the figure's name)
PREFER_COLUMNS = {"latency": ("latency_p90_ms", "faster at batch 1", "latency p90"),
                  "size": ("size_mb", "smaller on disk", "size"), "memory": ("peak_rss_mb", "lighter", "peak RSS")}


def constraints(params):
    """compare.* from params.yaml, checked: a limit is a number >= 0 or null (no limit); `.inf` means no limit
    too, NaN is refused."""
    checked = check_section(params, "compare")  # unknown keys (core.params.KEYS), prefer, mixed_tta
    out = {key: None if get(params, f"compare.{key}") is None else
           number(params, f"compare.{key}", 0, infinite=True) for key in LIMITS}
    # .inf is read as null: no limit, so a model that lacks the figure is kept rather than ruled out unmeasured.
    out = {key: None if limit == math.inf else limit for key, limit in out.items()}
    return out | {"rank_by": choice(params, "compare.rank_by", RANK_BY), "prefer": checked["compare.prefer"],
                  "mixed_tta": checked["compare.mixed_tta"]}


@dataclass
class Recommendation:
    model: Optional[str]     # None: no model meets every constraint
    rank_by: str             # the column models were ranked on
    fallback: Optional[str]  # why that is not the column compare.rank_by asked for
    ranking: pd.DataFrame    # the rows within every limit, best first
    ruled_out: dict          # model -> [(compare.<key>, or "status" / "rank_by", why), ...]
    limits: dict             # compare.<key> -> limit, or None
    prefer: str = "latency"  # compare.prefer: the cost that breaks a tie
    tied: list = field(default_factory=list)  # the most accurate and every model within noise of it, best first
    margins: dict = field(default_factory=dict)  # model -> pairwise figures of the most accurate minus it
    refused: Optional[str] = None  # why the models are not ranked at all (evaluated differently)


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


def mixed_evaluation(table):
    """Why the models with results were not evaluated alike (flip test-time augmentation on for some, off for
    others), or None."""
    ok = table[table.status == "ok"]
    modes = ok.flip_tta.map(tta)
    if modes.nunique() < 2:
        return None
    return ("the models were not evaluated alike: flip_tta " + ", ".join(f"{m} {v}" for m, v in modes.items())
            + " (test-time augmentation adds a second pass to accuracy, latency and FLOPs). Run them again with one "
            "flip_tta for all, or set compare.mixed_tta: true to rank them anyway")


def recommend(table, constraints_, pairs=None):
    """The most accurate model within every limit, or, when others are within noise of it on the ranked set
    (the 95 % paired interval of the difference, from `pairs`, holds 0), the cheapest of those by
    compare.prefer; each other model with what ruled it out."""
    limits = {key: constraints_.get(key) for key in LIMITS}
    column, fallback = rank_column(table, constraints_.get("rank_by", RANK_BY[0]))
    ruled_out = {}
    for model, row in table.iterrows():
        why = [(key, beyond(key, row[LIMITS[key][0]], limit)) for key, limit in limits.items()
               if limit is not None and not row[LIMITS[key][0]] <= limit]
        why += [("rank_by", f"no {LABELS[column][:-4]} to rank on")] if pd.isna(row[column]) else []
        if row.status != "ok" or why:
            ruled_out[model] = [("status", f"{row.status}: no results")] if row.status != "ok" else why
    prefer = constraints_.get("prefer", "latency")
    cost = PREFER_COLUMNS[prefer][0]
    # Equal figures go to the cheaper model, then the smaller; an unmeasured figure loses.
    ranking = table.drop(index=list(ruled_out)).sort_values(
        [column, cost, "size_mb", "model"], ascending=[False, True, True, True], na_position="last")
    rec = Recommendation(None, column, fallback, ranking, ruled_out, limits, prefer)
    rec.refused = None if constraints_.get("mixed_tta") else mixed_evaluation(table)
    if rec.refused or not len(ranking):
        return rec
    best = ranking.index[0]
    if pairs is not None:
        rec.margins = {m: between(pairs, best, m, RANK_SETS[column]) for m in ranking.index[1:]}
    rec.tied = [best] + [m for m, d in rec.margins.items() if d and d["ci_low"] <= 0 <= d["ci_high"]]
    rec.model = ranking.loc[rec.tied].sort_values([cost, column], ascending=[True, False], na_position="last").index[0]
    return rec


def limits_text(limits):
    parts = [f"{LIMITS[k][1]} ≤ {v:g} {LIMITS[k][2]}" for k, v in limits.items() if v is not None]
    return ", ".join(parts) if parts else "no limits"


SET_TEXT = {"val": "val", "test": "test", "cinic10": "CINIC-10", "cifar10c": "CIFAR-10-C"}


def points(margin):
    """Pairwise figures (fractions) as percentage points with their interval."""
    return (f"{100 * margin['difference']:.2f} points, 95 % CI {100 * margin['ci_low']:.2f} to "
            f"{100 * margin['ci_high']:.2f}")


def cheaper(rec, model, other):
    """How much cheaper `model` is than `other` by compare.prefer, with both figures."""
    column, said, figure = PREFER_COLUMNS[rec.prefer]
    mine, theirs = rec.ranking.at[model, column], rec.ranking.at[other, column]
    unit = column.rpartition("_")[2].replace("mb", "MB")
    if pd.isna(mine) or pd.isna(theirs):
        return f"{model}'s {figure} is {fmt(mine)}, {other}'s {fmt(theirs)} {unit}"
    # two decimals near 1 (1.02x, not 1.0x), one above 2 (2.9x)
    ratio = "infinitely" if mine <= 0 else f"{theirs / mine:.2f}x" if theirs / mine < 1.995 else f"{theirs / mine:.1f}x"
    return f"{model} is {ratio} {said} ({figure} {mine:.2f} vs {theirs:.2f} {unit})"


def margin_lines(rec):
    """What the pairwise tests say of the recommendation: the tie it broke, or its lead over the runner-up."""
    best, set_text = rec.ranking.index[0], SET_TEXT[RANK_SETS[rec.rank_by]]
    if len(rec.tied) > 1:
        first = rec.model if rec.model != best else rec.tied[1]
        lines = [f"{best} and {first} are within noise on {set_text}: {points(rec.margins[first])}; "
                 f"{cheaper(rec, rec.model, best if rec.model != best else first)}."]
        return lines + [f"{m} is within noise of {best} too ({points(rec.margins[m])}); {cheaper(rec, rec.model, m)}."
                        for m in rec.tied[1:] if m not in (first, rec.model)]
    if len(rec.ranking) > 1:
        runner = rec.ranking.index[1]
        margin = rec.margins.get(runner)
        if margin is None:
            return [f"Not tested against the runner-up {runner}: no per-image predictions of both on the same "
                    f"images (data/predictions), so a lead this small may be noise."]
        text = p_text(margin["mcnemar_p"])
        p = "" if text == NA else f", exact McNemar p {'' if text.startswith('<') else '= '}{text}"
        return [f"A clear lead on {set_text}: {points(margin)} over the runner-up {runner}{p}."]
    return []


def explain(rec):
    """The recommendation and why, as printed and as written into the report."""
    label, figure = LABELS[rec.rank_by][:-4], rec.ranking[rec.rank_by]
    if rec.refused:
        lines = [f"Not ranked: {rec.refused}."]
    elif rec.model:
        chosen = rec.ranking.loc[rec.model]
        held_out = ", ".join(f"{name} {NA if pd.isna(chosen[c]) else f'{chosen[c]:.2f} %'}"
                             for c, name in HELD_OUT.items() if c != rec.rank_by)
        within = f"of the {len(rec.ranking)} model(s) within the limits ({limits_text(rec.limits)})"
        if rec.model == rec.ranking.index[0]:
            lines = [f"Recommended: {rec.model}, the highest {label} ({figure.iloc[0]:.2f} %) {within}."]
        else:
            lines = [f"Recommended: {rec.model} ({chosen[rec.rank_by]:.2f} %), the cheapest by {rec.prefer} "
                     f"(compare.prefer) of the {len(rec.tied)} model(s) within noise of the most accurate, "
                     f"{rec.ranking.index[0]} ({figure.iloc[0]:.2f} % {label}), among the {len(rec.ranking)} "
                     f"within the limits ({limits_text(rec.limits)})."]
        lines[0] += f" Its held-out accuracy: {held_out}."
        lines += margin_lines(rec)
        others = figure.drop(index=rec.model)
        if len(others):
            lines.append("Runners-up: " + ", ".join(f"{m} ({x:.2f} %)" for m, x in others.items()) + ".")
        if rec.rank_by in HELD_OUT:
            lines.append(f"Selected on {HELD_OUT[rec.rank_by]}, a held-out set: {rec.model}'s "
                         f"{chosen[rec.rank_by]:.2f} % there is optimistic, the best of {len(rec.ranking)} model(s) "
                         "on those same images; compare.rank_by: val_accuracy selects on the validation split and "
                         "keeps them unbiased.")
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
