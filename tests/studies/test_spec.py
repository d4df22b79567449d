"""Study specs: expansion of grid and list, run names, profiles, and every parameter checked before a run starts."""

import json
from pathlib import Path

import pytest

from gridit_core.cli import main
from gridit_core.errors import GriditError
from gridit_core.metrics.weights_setup import default_network
from gridit_core.studies.spec import expand, load_study, run_name

STUDIES = Path(__file__).resolve().parents[2] / "notebooks" / "studies"


def test_expand_crosses_each_list_case_with_the_grid_over_the_fixed_parameters_once_each():
    runs = expand({"A": 0, "B": 1}, {"C": [1, 2]}, [{"B": 5}, {"B": 5}, {"D": 3}])
    assert [params for params, _ in runs] == [{"A": 0, "B": 5, "C": 1}, {"A": 0, "B": 5, "C": 2},
                                              {"A": 0, "B": 1, "D": 3, "C": 1}, {"A": 0, "B": 1, "D": 3, "C": 2}]  # fmt: skip
    assert [named for _, named in runs] == [["B", "C"], ["B", "C"], ["D", "C"], ["D", "C"]]
    assert expand({"A": 0}, {}, []) == [({"A": 0}, [])]
    with pytest.raises(GriditError, match=r"both in the grid and in the list: \['C'\]"):
        expand({}, {"C": [1]}, [{"C": 2}])


def test_run_names_are_readable_and_keyed_by_every_parameter():
    name = run_name({"ARCH": "msc", "POOL": "1,2", "STEPS": 10}, ["ARCH", "POOL"])
    assert name.startswith("arch-msc_pool-1-2_") and len(name.rsplit("_", 1)[1]) == 8
    assert name == run_name({"STEPS": 10, "POOL": "1,2", "ARCH": "msc"}, ["ARCH", "POOL"])  # order does not matter
    assert name != run_name({"ARCH": "msc", "POOL": "1,2", "STEPS": 11}, ["ARCH", "POOL"])  # a fixed one does


def test_a_profile_overrides_fixed_parameters_replaces_grid_entries_and_sets_how_to_run(toy_notebook, write_spec):
    spec = write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "parameters": {"SLEEP": 1.0}, "grid": {"X": [1, 2, 3]},
                       "profiles": {"gpu": {"parameters": {"SLEEP": 0.5}, "executor": "submitit", "slurm": {"timeout_min": 5}},
                                    "cpu-small": {"grid": {"X": [4]}, "jobs": 2}}})  # fmt: skip
    small = load_study(spec)  # cpu-small by default
    assert small.profile == "cpu-small" and small.jobs == 2 and small.executor == "local"
    assert [r.params for r in small.runs] == [{"SLEEP": 1.0, "X": 4}] and small.varied == ["X"]
    gpu = load_study(spec, "gpu")
    assert [r.params["X"] for r in gpu.runs] == [1, 2, 3] and gpu.runs[0].params["SLEEP"] == 0.5
    assert gpu.executor == "submitit" and gpu.slurm == {"timeout_min": 5}
    assert gpu.notebook == toy_notebook.resolve()


def test_each_setting_runs_once_per_seed_in_a_folder_of_its_own(toy_notebook, write_spec):
    spec = write_spec({"notebook": "nb/toy.ipynb", "list": [{"X": 1}, {"X": 2, "SLEEP": 0.5}], "seeds": [0, 1, 2],
                       "profiles": {"cpu-small": {}, "quick": {"seeds": [7]}}})  # fmt: skip
    study = load_study(spec)
    assert [(r.setting, r.seed) for r in study.runs] == [({"X": 1}, s) for s in (0, 1, 2)] + [({"X": 2, "SLEEP": 0.5}, s) for s in (0, 1, 2)]
    assert [r.params["SEED"] for r in study.runs] == [0, 1, 2, 0, 1, 2] and study.varied == ["X", "SLEEP", "SEED"]
    assert len({r.name for r in study.runs}) == 6 and study.runs[1].name.startswith("x-1_seed-1_")
    assert study.runs[3].setting_label == "X 2, SLEEP 0.5"
    assert [r.seed for r in load_study(spec, "quick").runs] == [7, 7]  # a profile's seeds replace the spec's


def test_yaml_and_json_specs_read_alike(toy_notebook, write_spec):
    spec = {"notebook": "nb/toy.ipynb", "list": [{"X": 1}, {"X": 2, "SLEEP": 0.5}]}
    as_json, as_yaml = load_study(write_spec(spec)), load_study(write_spec(spec, "study.yaml"))
    assert [r.name for r in as_json.runs] == [r.name for r in as_yaml.runs] and len(as_json.runs) == 2
    assert as_json.varied == ["X", "SLEEP"] and as_json.name == "study"
    assert as_json.runs[0].varied == {"X": 1, "SLEEP": 0.0} and as_json.runs[0].name.startswith("x-1_")  # the default filled in


@pytest.mark.parametrize("spec, message", [
    ({"notebook": "nb/toy.ipynb", "grid": {"Y": [1]}}, r"unknown parameters \['Y'\] for toy.ipynb"),
    ({"notebook": "nb/toy.ipynb", "parameters": {"OUT_DIR": "x"}}, "OUT_DIR is set by the study runner"),
    ({"notebook": "nb/missing.ipynb"}, "notebook nb/missing.ipynb not found"),
    ({"grid": {"X": [1]}}, "names no notebook"),
    ({"notebook": "nb/toy.ipynb", "grid": {"X": ["a"]}}, 'run {"X": "a"}: X must be an integer'),
    ({"notebook": "nb/toy.ipynb", "grid": {"X": []}}, "grid.X must be a non-empty list"),
    ({"notebook": "nb/toy.ipynb", "profiles": {"gpu": {}}, "seed": [2]}, r"unknown keys \['seed'\]"),
    ({"notebook": "nb/toy.ipynb", "seeds": 2}, "seeds must be a non-empty list of integers, got 2"),
    ({"notebook": "nb/toy.ipynb", "seeds": [0, 0]}, r"seeds repeat: \[0, 0\]"),
    ({"notebook": "nb/toy.ipynb", "grid": {"SEED": [1]}, "seeds": [0]}, "SEED is set by seeds"),
    ({"notebook": "nb/toy.ipynb", "profiles": {"cpu-small": {"jobs": 0}}}, "jobs must be an integer >= 1"),
    ({"notebook": "nb/toy.ipynb", "profiles": {"cpu-small": {"executor": "ray"}}}, "executor must be one of local"),
    ({"notebook": "nb/toy.ipynb", "report": {"pareto": [{"time": "t"}]}}, "report.pareto entries are"),
    ({"notebook": "nb/toy.ipynb", "claims": [{"id": "a", "a": {}, "b": {}}]}, "claim a names no metric"),
    ({"notebook": "nb/toy.ipynb", "claims": [{"id": "a", "metric": "y", "cutoff": 2}]}, r"claim a: unknown keys \['cutoff'\]"),
])  # fmt: skip
def test_bad_specs_are_refused_in_one_line(toy_notebook, write_spec, spec, message):
    with pytest.raises(GriditError, match=message):
        load_study(write_spec(spec))


def test_missing_spec_and_missing_profile_are_refused(toy_notebook, write_spec, tmp_path):
    with pytest.raises(GriditError, match="study spec not found"):
        load_study(tmp_path / "nope.yaml")
    with pytest.raises(GriditError, match="has no profile 'gpu'; it has: none"):
        load_study(write_spec({"notebook": "nb/toy.ipynb"}), "gpu")


@pytest.mark.parametrize("name", ["grid-ablation", "families", "msc-ablation", "paper-claims", "grid-conditioning",
                                  "grid-finetune", "real-video"])  # fmt: skip
@pytest.mark.parametrize("profile", ["cpu-small", "gpu"])
def test_the_shipped_studies_expand_and_check_under_both_profiles(name, profile, monkeypatch):
    monkeypatch.chdir(STUDIES.parents[1])  # relative files in the specs start from the repository root
    if name == "real-video":  # FVD and FID with the real networks: checked only where they are installed
        for kind in ("i3d", "inception"):
            try:
                default_network(kind)
            except GriditError:
                pytest.skip(f"the real {kind} network is not installed: run `make weights`")
    study = load_study(STUDIES / f"{name}.yaml", profile)
    assert study.notebook.name == "train.ipynb" and len(study.runs) >= 3 and study.varied
    assert len({r.name for r in study.runs}) == len(study.runs)
    seeds = {}
    for r in study.runs:
        seeds.setdefault(r.setting_label, set()).add(r.seed)
    assert all(len(s) >= 3 and None not in s for s in seeds.values())  # every setting runs with three seeds or more
    if profile == "gpu":
        assert study.executor == "submitit" and study.slurm.get("gpus_per_node") == 1


def test_the_train_notebooks_settings_are_checked_by_building_its_model_before_any_run(tmp_path, monkeypatch):
    spec = tmp_path / "msc.json"
    spec.write_text(json.dumps({"notebook": str(STUDIES.parent / "experiments" / "train.ipynb"),
                                "parameters": {"ARCH": "msc"}, "grid": {"WINDOW": [3, 2]}}))  # fmt: skip
    with pytest.raises(GriditError, match=r'run {"WINDOW": 2}: msc model DiT-N/4: .*window w must be an odd number'):
        load_study(spec)
    spec.write_text(json.dumps({"notebook": str(STUDIES.parent / "experiments" / "train.ipynb"),
                                "parameters": {"ARCH": "msc", "FRAMES": 8, "SCHEDULE": "full"},
                                "grid": {"SAMPLE_FRAMES": ["8", "8,64"]}}))  # fmt: skip
    with pytest.raises(GriditError, match=r'run {"SAMPLE_FRAMES": "8,64"}: sampling 64 frames: the full schedule denoises '
                                          r"all frames at once: at most the training length 8, got 64"):  # fmt: skip
        load_study(spec)
    spec.write_text(json.dumps({"notebook": str(STUDIES.parent / "experiments" / "train.ipynb"),
                                "grid": {"ROWS": [2], "OVERLAP": [2, 4]}}))  # fmt: skip
    with pytest.raises(GriditError, match=r"sampling 64 frames: overlap must be in 0..3 for a 2x2 grid, got 4"):
        load_study(spec)
    spec.write_text(json.dumps({"notebook": str(STUDIES.parent / "experiments" / "train.ipynb"), "grid": {"INIT": ["no.pt"]}}))
    with pytest.raises(GriditError, match="INIT: file no.pt does not exist"):
        load_study(spec, base=tmp_path)


def test_dry_run_lists_the_runs_and_the_slurm_settings_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(STUDIES.parents[1])
    out = tmp_path / "families-gpu"
    assert main(["study", str(STUDIES / "families.yaml"), "--profile", "gpu", "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    study = load_study(STUDIES / "families.yaml", "gpu")
    assert lines[0].startswith(f"study families (gpu): {len(study.runs)} runs of train.ipynb, submitit, ")
    assert lines[1].startswith("slurm: ") and "gpus_per_node=1" in lines[1]
    assert [line.split()[:2] for line in lines[2:-1]] == [["pending", r.name] for r in study.runs]
    assert lines[-1] == f"{out} does not exist yet" and not out.exists()


def test_dry_run_on_a_study_folder_says_which_runs_are_done(toy_notebook, write_spec, tmp_path, capsys):
    spec = write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "grid": {"X": [1, 2]}})
    study = load_study(spec)
    out = tmp_path / "out"
    (out / "runs" / study.runs[0].name).mkdir(parents=True)
    (out / "runs" / study.runs[0].name / "results.json").write_text("{}")
    assert main(["study", str(spec), "--out", str(out), "--dry-run", "--jobs", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "study toy: 2 runs of toy.ipynb, local, 3 at a time"
    assert lines[1].split() == ["done", study.runs[0].name, "X=1"] and lines[2].split() == ["pending", study.runs[1].name, "X=2"]
    assert lines[3] == f"1 to run, 1 done in {out}" and sorted(p.name for p in out.iterdir()) == ["runs"]


def test_report_only_rewrites_the_report_from_the_runs_there_and_runs_nothing(toy_notebook, write_spec, tmp_path, capsys):
    spec = write_spec({"name": "toy", "notebook": "nb/toy.ipynb", "grid": {"X": [1, 2]}})
    study = load_study(spec)
    out = tmp_path / "out"
    assert main(["study", str(spec), "--out", str(out), "--report-only"]) == 2
    assert "holds no study runs to report on" in capsys.readouterr().err
    (out / "runs" / study.runs[0].name).mkdir(parents=True)
    (out / "runs" / study.runs[0].name / "results.json").write_text('{"metrics": {"y": 4}}')
    assert main(["study", str(spec), "--out", str(out), "--report-only"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'index.html'}"
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["status"], r["metrics"]) for r in runs] == [("done", {"y": 4}), ("pending", {})]
    assert not (out / "runs" / study.runs[1].name).exists()  # nothing ran
