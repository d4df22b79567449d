"""A toy study notebook (no torch: its kernel starts fast) and a spec writer for the runner and report tests."""

import json

import nbformat
import pytest

TOY_SOURCE = '''import json, os, pathlib, time

if str(X) in os.environ.get("TOY_FAIL", "").split(","):
    raise ValueError(f"run X={X} failed on purpose")
time.sleep(SLEEP)
pathlib.Path(OUT_DIR, "results.json").write_text(json.dumps({"metrics": {"y": X * X, "seconds": 0.1 * X, "nested": {"z": -X}}}))'''


@pytest.fixture
def toy_notebook(tmp_path):
    """``toy.ipynb``: parameters ``OUT_DIR``, ``X``, ``SLEEP`` and ``SEED``; writes ``metrics: {y: X*X, ...}``, or fails when
    ``X`` is listed in the environment variable ``TOY_FAIL``."""
    params = nbformat.v4.new_code_cell('OUT_DIR = "."  # run folder\nX = 1  # the varied number\nSLEEP = 0.0  # seconds\n'
                                       'SEED = 0  # the seed')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(TOY_SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb" / "toy.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    return path


@pytest.fixture
def write_spec(tmp_path):
    """``write_spec(dict, name="study.json")``: the spec written beside the toy notebook's folder; returns its path."""

    def write(spec, name="study.json"):
        path = tmp_path / name
        if name.endswith(".json"):
            path.write_text(json.dumps(spec))
        else:
            import yaml

            path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write
