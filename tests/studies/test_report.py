"""The study report: claims judged from runs, Pareto fronts, and the offline page with its aggregates."""

import csv
import io
import json
import re
from pathlib import Path

import pytest

from gridit_core.studies.report import flatten, pareto_front, plotly_js, write_study_report
from gridit_core.studies.spec import load_study


def test_flatten_keeps_numeric_leaves_with_dotted_keys():
    assert flatten({"a": 1, "b": {"c": 2.5, "d": "x", "e": [1]}, "f": True, "g": float("nan")}) == {"a": 1, "b.c": 2.5, "f": 1}


def test_pareto_front_keeps_the_points_no_other_beats_on_time_and_quality():
    points = [(1.0, 0.2), (2.0, 0.1), (2.0, 0.5), (3.0, 0.4), (4.0, 0.9)]
    assert pareto_front(points) == [0, 2, 4]
    assert pareto_front(points, higher=False) == [0, 1]


def test_the_report_opens_offline_with_one_local_plotly_and_links_every_run(toy_notebook, write_spec, tmp_path):
    study = load_study(write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "grid": {"X": [1, 2]},
                                   "report": {"pareto": [{"time": "seconds", "quality": "y"}]},
                                   "claims": [{"id": "a", "claim": "two beats one", "metric": "y",
                                               "a": {"X": 2}, "b": {"X": 1}, "factor": 2}]}))  # fmt: skip
    done, failed = study.runs
    records = [{"name": done.name, "status": "done", "parameters": done.params, "varied": done.varied,
                "metrics": {"y": 1, "seconds": 0.1}, "results": {"figures": ["loss.png", "samples_8f.gif", "gone.gif"]}, "error": None,
                "notebook": f"runs/{done.name}/toy.ipynb", "log": None},
               {"name": failed.name, "status": "failed", "parameters": failed.params, "varied": failed.varied,
                "metrics": {}, "results": None, "error": "ValueError: boom", "notebook": f"runs/{failed.name}/toy.ipynb",
                "log": f"runs/{failed.name}/log.txt"}]  # fmt: skip
    out = tmp_path / "report"
    (out / "runs" / done.name).mkdir(parents=True)
    (out / "runs" / done.name / "samples_8f.gif").write_bytes(b"GIF89a")
    page = write_study_report(study, out, records, {"done": 1, "failed": 1, "seconds": 3.0}).read_text()
    assert (out / "plotly.min.js").read_bytes() == plotly_js().read_bytes()
    scripts = re.findall(r"<script[^>]*src=['\"]([^'\"]+)", page)
    assert scripts == ["plotly.min.js"] and "cdn" not in page.lower()
    assert page.count("Plotly.newPlot") == 3  # the Pareto chart, y by X, seconds by X
    assert f'href="runs/{done.name}/toy.ipynb"' in page and f'href="runs/{failed.name}/log.txt"' in page
    assert "ValueError: boom" in page and "inconclusive" in page and "two beats one" in page
    assert re.findall(r"<img src='([^']+)'", page) == [f"runs/{done.name}/samples_8f.gif"]  # listed and present only
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [(r["run"], r["status"], r["X"], r["y"]) for r in rows] == [(done.name, "done", "1", "1"), (failed.name, "failed", "2", "")]
    aggregate = json.loads((out / "results.json").read_text())
    assert aggregate["claims"][0]["verdict"] == "inconclusive" and len(aggregate["runs"]) == 2


def test_reports_side_by_side_share_the_plotly_in_the_folder_above_and_a_lone_report_gets_its_own(toy_notebook, write_spec,
                                                                                                  tmp_path):  # fmt: skip
    study = load_study(write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "grid": {"X": [1]}}))
    (run,) = study.runs
    records = [{"name": run.name, "status": "done", "parameters": run.params, "varied": run.varied,
                "metrics": {"y": 1}, "results": {}, "error": None, "notebook": f"runs/{run.name}/toy.ipynb", "log": None}]  # fmt: skip

    def script(out):
        out.mkdir(parents=True, exist_ok=True)
        page = write_study_report(study, out, records, {"done": 1}).read_text()
        return re.findall(r"<script[^>]*src=['\"]([^'\"]+)", page)

    shared = tmp_path / "studies" / "plotly.min.js"
    shared.parent.mkdir()
    shared.write_text("/* shared */")
    assert script(tmp_path / "studies" / "a") == ["../plotly.min.js"]  # the folder above's copy, none made
    assert not (tmp_path / "studies" / "a" / "plotly.min.js").exists() and shared.read_text() == "/* shared */"
    own = tmp_path / "studies" / "b" / "plotly.min.js"
    own.parent.mkdir()
    own.write_text("/* own */")
    assert script(own.parent) == ["plotly.min.js"] and own.read_text() == "/* own */"  # one beside it comes first
    lone = tmp_path / "elsewhere" / "deep" / "c"
    assert script(lone) == ["plotly.min.js"]  # neither: a copy beside it, so it still opens offline
    assert (lone / "plotly.min.js").read_bytes() == plotly_js().read_bytes()
    assert not (lone.parent / "plotly.min.js").exists()


@pytest.mark.parametrize("name", ["families", "grid-ablation", "msc-ablation", "paper-claims", "grid-conditioning",
                                  "grid-finetune", "real-video"])  # fmt: skip
def test_each_committed_report_loads_a_plotly_that_is_in_the_repository(name):
    folder = Path(__file__).resolve().parents[2] / "reports" / "studies" / name
    scripts = re.findall(r"<script[^>]*src=['\"]([^'\"]+)", (folder / "index.html").read_text())
    assert scripts == ["../plotly.min.js"] and (folder / scripts[0]).resolve().is_file()
