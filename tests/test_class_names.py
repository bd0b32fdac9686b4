"""Every class name the data stage accepts survives every text the pipeline writes from it: JSON, CSV and the
figures' titles (a name is data: a "$" in it is not mathtext)."""
import csv
import io
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.archives import ArchiveError, check_class_name
from core.io import csv_text, write_json

# What a folder name can be on Linux and the data stage reads: no "/" or NUL, not hidden (skipped), not "." / "..".
FOLDER_NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1,
                       max_size=12).filter(lambda s: not s.startswith("."))
MARKUP = ["x $\\foo$ y", "$", "a$b$c", "100%", "<b>", "a,b\"c", "\\", "{}", "ünïcödé", "猫", "🐈"]


def accepted(name):
    try:
        check_class_name(name, "ds")
    except ArchiveError:
        return False
    return True


def written_everywhere(name, tmp_path):
    """What evaluate writes with a class name: info.json, the per-class and confusion CSVs, two figures."""
    from core.robustness import example_grid
    from stages.evaluate import misclassified_grid
    classes = [name, "other"]
    write_json(tmp_path / "info.json", {"classes": classes})
    assert json.loads((tmp_path / "info.json").read_text(encoding="utf-8"))["classes"] == classes
    text = csv_text(["actual", "predicted"], [(name, "other"), ("other", name)])
    assert list(csv.reader(io.StringIO(text)))[1:] == [[name, "other"], ["other", name]]
    x = np.zeros((2, 8, 8, 3), np.uint8)
    y = np.array([0, 1])
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])  # both wrong: both drawn with both names in their titles
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Glyph ... missing from font": drawn as a box, not an error
        misclassified_grid(tmp_path / "grid.png", x, y, probs, classes, np.array(["imagenet", "imagenet"]))
        example_grid(tmp_path / "examples.png", {"fog": {"clean": x[:1], "corrupted": np.zeros((5, 1, 8, 8, 3), np.uint8),
                                                         "y": y[:1], "clean_pred": np.array([1]),
                                                         "pred": np.zeros((5, 1), int)}}, classes)
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "examples.png").stat().st_size > 0


@pytest.mark.parametrize("name", MARKUP)
def test_names_with_markup_or_any_script_are_accepted_and_written(name, tmp_path):
    assert accepted(name)
    written_everywhere(name, tmp_path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=FOLDER_NAMES)
def test_any_name_the_data_stage_accepts_is_written_everywhere(name, tmp_path):
    if accepted(name):
        written_everywhere(name, tmp_path)
    else:  # refused: only for what no writer can carry
        assert any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name)
