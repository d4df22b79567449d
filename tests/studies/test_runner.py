"""The study runner end to end on a toy notebook: failure isolation, resume, interruption, the submitit path (its
local executor) and the CLI's one-line errors."""

import json

import pytest

from gridit_core.cli import main
from gridit_core.studies import runner
from gridit_core.studies.spec import load_study

pytestmark = pytest.mark.slow  # every run is a process with a Jupyter kernel


def statuses(out):
    return {r["varied"]["X"]: r["status"] for r in json.loads((out / "results.json").read_text())["runs"]}


def test_a_failed_run_is_kept_and_listed_and_resume_skips_done_runs_and_redoes_failed_ones(toy_notebook, write_spec,
                                                                                           tmp_path, monkeypatch, capsys):  # fmt: skip
    spec = write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "grid": {"X": [1, 2, 3]},
                       "profiles": {"cpu-small": {"jobs": 2}}})  # fmt: skip
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_FAIL", "2")
    assert main(["study", str(spec), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().startswith("study toy (cpu-small): 2 done, 0 skipped, 1 failed in ")
    assert statuses(out) == {1: "done", 2: "failed", 3: "done"}
    failed = out / "runs" / load_study(spec).runs[1].name
    assert "failed on purpose" in (failed / "toy.ipynb").read_text()  # the executed notebook keeps the error
    assert json.loads((failed / "error.json").read_text())["error"] == "ValueError: run X=2 failed on purpose"
    page = (out / "index.html").read_text()
    assert "run X=2 failed on purpose" in page and (out / "plotly.min.js").is_file()
    assert len((out / "results.csv").read_text().splitlines()) == 4
    done = {x: (out / "runs" / r.name / "results.json").stat().st_mtime_ns for x, r in zip((1, 3), load_study(spec).runs[::2])}

    assert main(["study", str(spec), "--out", str(out)]) == 2  # the folder exists: --resume or another folder
    assert "already exists; pass --resume" in capsys.readouterr().err

    monkeypatch.setenv("TOY_FAIL", "")
    assert main(["study", str(spec), "--out", str(out), "--resume"]) == 0
    assert ": 1 done, 2 skipped, 0 failed in " in capsys.readouterr().out
    assert statuses(out) == {1: "done", 2: "done", 3: "done"} and not (failed / "error.json").exists()
    assert {x: (out / "runs" / r.name / "results.json").stat().st_mtime_ns
            for x, r in zip((1, 3), load_study(spec).runs[::2])} == done  # fmt: skip


class StopAfterFirst:
    """A progress bar that presses Ctrl-C when the first run finishes."""

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n):
        raise KeyboardInterrupt

    def close(self):
        pass


def test_an_interruption_loses_only_the_runs_in_flight(toy_notebook, write_spec, tmp_path, monkeypatch):
    sleep = 600.0  # run 2's length: a runner that waited for it instead of stopping it could not finish sooner
    spec = write_spec({"notebook": "nb/toy.ipynb", "list": [{"X": 1}, {"X": 2, "SLEEP": sleep}, {"X": 3}]})
    study, out = load_study(spec), tmp_path / "out"
    monkeypatch.setattr(runner, "tqdm", StopAfterFirst)
    summary, page = runner.run_study(study, out, jobs=2, progress=False)
    assert summary["stopped"] and (summary["done"], summary["not_run"]) == (1, 2)
    assert statuses(out) == {1: "done", 2: "pending", 3: "pending"} and summary["seconds"] < sleep
    assert "not run yet" in page.read_text()


def test_submitit_runs_the_study_as_a_job_array_with_its_local_executor(toy_notebook, write_spec, tmp_path, monkeypatch):
    spec = write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "grid": {"X": [1, 2]},
                       "profiles": {"cpu-small": {"executor": "submitit", "cluster": "local",
                                                  "slurm": {"timeout_min": 5, "slurm_partition": "unused-here"}}}})  # fmt: skip
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_FAIL", "2")
    summary, _ = runner.run_study(load_study(spec), out, progress=False)
    errors = {p.parent.name: p.read_text() for p in out.glob("runs/*/error.json")}  # what went wrong, if anything
    assert (summary["done"], summary["failed"]) == (1, 1) and statuses(out) == {1: "done", 2: "failed"}, errors
    assert any((out / "submitit").iterdir())  # submitit's own job files and logs
    metrics = {r["varied"]["X"]: r["metrics"] for r in json.loads((out / "results.json").read_text())["runs"]}
    assert metrics[1] == {"y": 1, "seconds": 0.1, "nested.z": -1} and metrics[2] == {}


def test_bad_input_ends_in_one_line_and_exit_code_2(toy_notebook, write_spec, tmp_path, capsys):
    spec = write_spec({"notebook": "nb/toy.ipynb", "grid": {"Y": [1]}})
    assert main(["study", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gridit study: error: unknown parameters ['Y']") and err.count("\n") == 1
    assert main(["study", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "study spec not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_runs_side_by_side_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runner.worker_env(2, cores=8)["OMP_NUM_THREADS"] == "4" and runner.worker_env(3, cores=2)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in runner.worker_env(1, cores=8)  # one run at a time: torch takes every core
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runner.worker_env(2, cores=8)["OMP_NUM_THREADS"] == "3"  # the user's choice stands
