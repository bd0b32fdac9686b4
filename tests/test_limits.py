"""The size limits docs/errors.md gives for params.yaml and the JSON files between stages: a file at the
limit is read, one byte over is refused with one line before it is read."""
import pytest

from conftest import ROOT
from core.contracts import MAX_JSON_BYTES, ContractError, read_json
from core.params import MAX_PARAMS_BYTES, ParamError, load


def test_params_yaml_is_read_up_to_one_mib_and_refused_past_it(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    at_limit = text + "#" * (MAX_PARAMS_BYTES - len(text.encode()) - 1) + "\n"  # a comment fills it
    assert len(at_limit.encode()) == MAX_PARAMS_BYTES == 1 << 20
    path = tmp_path / "params.yaml"
    path.write_text(at_limit)
    assert load(path) == load(ROOT / "params.yaml")
    path.write_text(at_limit + "\n")
    with pytest.raises(ParamError, match=r"params.yaml: over 1,048,576 bytes, not a params file"):
        load(path)


def test_a_json_file_between_stages_is_refused_past_64_mib_before_it_is_read(tmp_path):
    """Sparse files: the size is what the file system reports; over the limit nothing is read (the refusal
    names the size), at the limit the file is read (and these NUL bytes are then no JSON)."""
    assert MAX_JSON_BYTES == 64 << 20
    path = tmp_path / "info.json"
    with open(path, "wb") as f:
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(ContractError, match=r"info.json: over 67,108,864 bytes, not what train writes"):
        read_json(path, "train")
    with open(path, "r+b") as f:
        f.truncate(MAX_JSON_BYTES)
    with pytest.raises(ContractError, match=r"info.json: corrupt, not JSON"):
        read_json(path, "train")
