"""How sure the comparison is, from the per-image predictions of every model (compare/predictions.py): a 95 %
interval on each accuracy, and for each pair of models on each set the difference with its paired interval
and the exact McNemar p-value (reports/pairwise.csv). The recommendation's tie rule reads these rows.
"""
import itertools
import math

import numpy as np
import pandas as pd

from compare import predictions, stats

# predictions set -> the accuracy column of the comparison table (without _pct)
SET_COLUMNS = {"val": "val_accuracy", "test": "test_accuracy", "cinic10": "cinic10_accuracy",
               "cifar10c": "corruption_accuracy"}
COLUMNS = ["model_a", "model_b", "set", "n", "accuracy_a", "accuracy_b", "difference", "ci_low", "ci_high",
           "mcnemar_p", "seeds_a", "seeds_b"]
RESAMPLES = 2000  # per interval: the 2.5 % and 97.5 % quantiles then rest on 50 resamples each
SEED = 0  # the bootstrap's: the same predictions give the same intervals


def model_scores(runs):
    """{model: {set: (images digest, scores (seeds, images))}} from {model: [one {set: arrays} per seed]}. A set
    is kept only if every seed of the model has it."""
    out = {}
    for model, per_seed in runs.items():
        sets = [name for name in predictions.SETS if per_seed and all(name in p for p in per_seed)]
        out[model] = {name: predictions.scores([p[name] for p in per_seed]) for name in sets}
    return out


def interval_columns(name):
    column = SET_COLUMNS[name]
    return f"{column}_ci_low_pct", f"{column}_ci_high_pct"


INTERVAL_COLUMNS = [c for name in SET_COLUMNS for c in interval_columns(name)]


def with_intervals(table, scores):
    """The table with each accuracy's 95 % interval in % (stats.accuracy_interval: Wilson for one run, else a
    bootstrap over images and seeds), n/a where a model has no predictions for the set."""
    table = table.copy()
    for column in INTERVAL_COLUMNS:
        table[column] = math.nan
    for model, sets in scores.items():
        if table.at[model, "status"] != "ok":
            continue
        for name, (_, s) in sets.items():
            table.loc[model, list(interval_columns(name))] = [100 * v for v in stats.accuracy_interval(s)]
    return table


def pairwise(scores, names):
    """One row per pair of models (in `names` order) and set both have, on the same images (equal digests):
    n, each accuracy and the difference a - b as fractions, its 95 % interval and the McNemar p (stats.paired).
    Returns the rows and, for pairs on different images, why they are not paired."""
    rows, unpaired = [], []
    for a, b in itertools.combinations([n for n in names if n in scores], 2):
        for name in SET_COLUMNS:
            if name not in scores[a] or name not in scores[b]:
                continue
            (digest_a, sa), (digest_b, sb) = scores[a][name], scores[b][name]
            if digest_a != digest_b:
                unpaired.append(f"{a} and {b} on {name}: different images (data_seed or the data differ)")
                continue
            rows.append({"model_a": a, "model_b": b, "set": name, "n": sa.shape[1], "accuracy_a": sa.mean(),
                         "accuracy_b": sb.mean(), **stats.paired(sa, sb, RESAMPLES, SEED),
                         "seeds_a": len(sa), "seeds_b": len(sb)})
    return pd.DataFrame(rows, columns=COLUMNS), unpaired


def between(rows, a, b, name):
    """The pairwise figures of a minus b on set `name` (the row of the pair either way round), or None."""
    for _, row in rows[(rows.set == name) & rows.model_a.isin([a, b]) & rows.model_b.isin([a, b])].iterrows():
        if row.model_a == a:
            return row.to_dict()
        flipped = {"difference": -row.difference, "ci_low": -row.ci_high, "ci_high": -row.ci_low}
        return row.to_dict() | flipped | {"model_a": a, "model_b": b, "accuracy_a": row.accuracy_b,
                                          "accuracy_b": row.accuracy_a}
    return None


def p_text(p):
    """A p-value for people: 3 significant digits; below the smallest double it is 0.0 in floating point,
    which is not a probability of 0."""
    return "n/a" if np.isnan(p) else "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def pairwise_csv(rows):
    """reports/pairwise.csv: fractions to 6 places, the p-value to 4 significant digits (0 where it is below the
    smallest double), n/a where not defined."""
    out = rows.copy()
    for column in ("accuracy_a", "accuracy_b", "difference", "ci_low", "ci_high"):
        out[column] = out[column].round(6)
    out["mcnemar_p"] = out.mcnemar_p.map(lambda p: "n/a" if np.isnan(p) else f"{p:.4g}")
    return out.to_csv(index=False, na_rep="n/a", lineterminator="\n")
