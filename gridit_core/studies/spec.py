"""A study spec: one notebook, fixed parameters, a grid and/or a list of varied ones, and profiles that size the same
study for a laptop (``cpu-small``) or a cluster (``gpu``); expanded here into runs, each keyed by its parameters.

    name: grid-ablation
    notebook: ../experiments/train.ipynb       # relative to the spec file
    parameters: {DATA: builtin:bouncing}       # every run
    grid: {ROWS: [2, 3], POS_EMBED: [grid2d, frame3d]}   # every combination...
    list: [{SAMPLER: ddpm}, {SAMPLER: ddim}]   # ...with each of these
    seeds: [0, 1, 2]                           # ...each setting once per seed (the notebook's SEED)
    profiles:
      cpu-small: {parameters: {TIME_BUDGET: 60}, jobs: 2}
      gpu: {parameters: {...}, grid: {...}, executor: submitit, slurm: {gpus_per_node: 1, timeout_min: 240}}
    report: {metrics: [coherence], pareto: [{time: train_seconds, quality: coherence}]}
    claims: [...]   # see stats.judge_claim

A profile's ``parameters`` override the fixed ones, its ``grid`` entries replace or add grid entries by name, its
``list`` replaces the list and its ``seeds`` the seeds. ``OUT_DIR`` is the runner's: every run writes into its own
folder. A setting is a run's varied parameters but its seed: the report gives each setting's mean and interval over
its seeds, and claims compare settings (``stats.judge_claim``).
"""

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gridit_core.errors import GriditError
from gridit_core.experiments.params import Param, check_params, notebook_metadata, read_parameters

TOP_KEYS = ("name", "description", "notebook", "parameters", "grid", "list", "seeds", "profiles", "report", "claims",
            "notes")  # fmt: skip
PROFILE_KEYS = ("description", "parameters", "grid", "list", "seeds", "jobs", "executor", "cluster", "slurm")
REPORT_KEYS = ("metrics", "charts", "pareto")
CLAIM_KEYS = ("id", "claim", "metric", "metric_a", "metric_b", "better", "factor", "floor", "gate", "a", "b")
EXECUTORS = ("local", "submitit")
RESERVED = "OUT_DIR"  # set by the runner to each run's folder
SEED = "SEED"  # the notebook parameter a spec's seeds set


@dataclass(frozen=True)
class Run:
    """One run of a study: its folder name (readable part + short hash), every parameter, the varied ones, and its
    setting (the parameters its list case and the grid name, but the seed) and seed."""

    name: str
    params: dict
    varied: dict
    setting: dict = field(default_factory=dict)
    seed: int | None = None

    @property
    def setting_label(self):
        """The setting in words, ``ARCH grid, TIME_BUDGET 240`` (``all`` for a study of one setting)."""
        return ", ".join(f"{k} {v}" for k, v in self.setting.items()) or "all"


@dataclass
class Study:
    """A spec file with one profile applied: the notebook, the runs, and how to run and report them."""

    name: str
    path: Path  # the spec file
    text: str  # the spec file as written
    notebook: Path
    profile: str
    runs: list
    varied: list  # names of the varied parameters, in spec order
    jobs: int = 1
    executor: str = "local"
    cluster: str = ""  # submitit's cluster: "" (auto: slurm where sbatch exists), slurm, local, debug
    slurm: dict = field(default_factory=dict)  # submitit AutoExecutor parameters (timeout_min, slurm_partition, ...)
    description: str = ""
    notes: str = ""
    report: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)


def read_spec(path):
    """The spec file at ``path`` (``.yaml``/``.yml`` or ``.json``) as ``(dict, text)``."""
    path = Path(path)
    if not path.is_file():
        raise GriditError(f"study spec not found: {path}")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GriditError(f"study spec {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise GriditError("YAML study specs need PyYAML: pip install -e '.[notebooks]' (or write the spec as JSON)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise GriditError(f"study spec {path}: not valid YAML ({' '.join(str(e).split())})") from None
    else:
        raise GriditError(f"study spec {path}: expected a .yaml, .yml or .json file")
    if not isinstance(data, dict):
        raise GriditError(f"study spec {path} must be a mapping of {', '.join(TOP_KEYS)}")
    return data, text


def _mapping(value, what):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GriditError(f"{what} must be a mapping, got {value!r}")
    return value


def _unknown(d, known, what):
    extra = sorted(set(d) - set(known))
    if extra:
        raise GriditError(f"{what}: unknown keys {extra}; known: {', '.join(known)}")


def _grid(value, what):
    grid = _mapping(value, what)
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GriditError(f"{what}.{name} must be a non-empty list of values, got {values!r}")
    return grid


def _cases(value, what):
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, dict) and c for c in value):
        raise GriditError(f"{what} must be a list of non-empty mappings of parameters, got {value!r}")
    return value


def _seeds(value, named):
    """The spec's ``seeds``: distinct integers, and no ``SEED`` set another way beside them."""
    if value is None:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise GriditError(f"seeds must be a non-empty list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise GriditError(f"seeds repeat: {value}")
    if SEED in named:
        raise GriditError(f"{SEED} is set by seeds; remove it from the parameters, grid and list")
    return list(value)


def expand(fixed, grid, cases):
    """Every run as ``(parameters, named)``: each case of ``cases`` (or none) with every combination of ``grid``,
    over ``fixed``; ``named`` are the names the case and the grid set. Repeated parameter sets are kept once."""
    clash = sorted({k for c in cases for k in c} & set(grid))
    if clash:
        raise GriditError(f"parameters both in the grid and in the list: {clash}")
    out, seen = [], set()
    for case in cases or [{}]:
        for combo in itertools.product(*grid.values()):
            params = {**fixed, **case, **dict(zip(grid, combo))}
            key = json.dumps(params, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append((params, [*case, *grid]))
    return out


def _slug(value):
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"


def run_name(params, named):
    """``arch-grid_rows-2_1a2b3c4d``: the parameters the run's list entry and the grid name, readable, then 8 hex
    digits of a hash of every parameter."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    readable = "_".join(f"{_slug(k)}-{_slug(params[k])}" for k in named)[:80].rstrip("_-")
    return f"{readable}_{digest}" if readable else digest


def notebook_params(notebook):
    """``(defaults, check)`` for a notebook: its parameters cell, and ``check(values, base)``: the library check the
    notebook names in its metadata (``"gridit": {"checks": NAME}``, a key of ``experiments.runs.NOTEBOOK_CHECKS``),
    else each value held to its default's type."""
    from gridit_core.experiments.runs import NOTEBOOK_CHECKS

    defaults = read_parameters(notebook)
    if RESERVED not in defaults:
        raise GriditError(f"notebook {notebook} has no {RESERVED} parameter: a study notebook writes into its run folder")
    name = notebook_metadata(notebook).get("gridit", {}).get("checks")
    if name is not None:
        if name not in NOTEBOOK_CHECKS:
            raise GriditError(f"notebook {notebook} names the check {name!r}; known: {', '.join(NOTEBOOK_CHECKS)}")
        return defaults, NOTEBOOK_CHECKS[name]
    spec = {k: Param(type(v) if type(v) in (int, float, str, bool) else str) for k, v in defaults.items()}
    return defaults, lambda values, base: check_params(values, spec, base)


def _check_report(report, claims):
    """The ``report`` and ``claims`` sections, checked now rather than after the runs."""
    _unknown(report, REPORT_KEYS, "report")
    for key in ("metrics", "charts"):
        if not isinstance(report.get(key, []), list):
            raise GriditError(f"report.{key} must be a list of metric names, got {report[key]!r}")
    for chart in report.get("pareto") or []:
        if not isinstance(chart, dict) or not {"time", "quality"} <= set(chart) or chart.get("better", "higher") not in ("higher", "lower"):
            raise GriditError(f"report.pareto entries are {{time: METRIC, quality: METRIC, better: higher|lower}}, got {chart!r}")
    for claim in claims:
        _unknown(claim, CLAIM_KEYS, f"claim {claim.get('id', '?')}")
        if not all(claim.get(f"metric_{side}", claim.get("metric")) for side in "ab"):
            raise GriditError(f"claim {claim.get('id', '?')} names no metric (metric, or metric_a and metric_b)")
        if claim.get("better", "higher") not in ("higher", "lower") or not isinstance(claim.get("factor", 1), (int, float)):
            raise GriditError(f"claim {claim.get('id', '?')}: better is higher or lower, factor a number")
        if not all(isinstance(claim.get(side, {}), dict) for side in "ab"):
            raise GriditError(f"claim {claim.get('id', '?')}: a and b select runs by parameters, {{NAME: value}}")


def load_study(path, profile=None, base=None):
    """The study of spec ``path`` under ``profile`` (default ``cpu-small``, else the first profile), every run's
    parameters checked against the notebook before anything runs; ``base`` is where relative files are found."""
    path = Path(path)
    data, text = read_spec(path)
    _unknown(data, TOP_KEYS, f"study spec {path}")
    if "notebook" not in data:
        raise GriditError(f"study spec {path} names no notebook")
    notebook = (path.parent / str(data["notebook"])).resolve()
    if not notebook.is_file():
        raise GriditError(f"study spec {path}: notebook {data['notebook']} not found ({notebook})")
    profiles = _mapping(data.get("profiles"), "profiles")
    if profile is None:
        profile = "cpu-small" if "cpu-small" in profiles else next(iter(profiles), "")
    elif profile not in profiles:
        raise GriditError(f"study spec {path} has no profile {profile!r}; it has: {', '.join(profiles) or 'none'}")
    prof = _mapping(profiles.get(profile), f"profiles.{profile}")
    _unknown(prof, PROFILE_KEYS, f"profiles.{profile}")
    fixed = {**_mapping(data.get("parameters"), "parameters"), **_mapping(prof.get("parameters"), f"profiles.{profile}.parameters")}
    grid = {**_grid(data.get("grid"), "grid"), **_grid(prof.get("grid"), f"profiles.{profile}.grid")}
    cases = _cases(prof["list"] if "list" in prof else data.get("list"), "list")
    seeds = _seeds(prof["seeds"] if "seeds" in prof else data.get("seeds"), {**fixed, **grid, **{k: 0 for c in cases for k in c}})
    if seeds:
        grid[SEED] = seeds  # last, so that the runs of one setting stand together
    varied = list(dict.fromkeys([*[k for c in cases for k in c], *grid]))
    defaults, check = notebook_params(notebook)
    given = {*fixed, *varied}
    if RESERVED in given:
        raise GriditError(f"{RESERVED} is set by the study runner (each run's folder); remove it from the spec")
    unknown = sorted(given - set(defaults))
    if unknown:
        raise GriditError(f"unknown parameters {unknown} for {notebook.name}; it takes: {', '.join(defaults)}")
    runs = []
    for params, named in expand(fixed, grid, cases):
        params = {k: defaults[k] for k in varied if k not in params} | params  # a case that leaves one out: the default
        try:
            check({**defaults, **params}, base)
        except GriditError as e:
            raise GriditError(f"run {json.dumps({k: params[k] for k in named})}: {e}") from None
        setting = {k: params[k] for k in named if k != SEED}
        seed = params[SEED] if SEED in named else None
        runs.append(Run(run_name(params, named), params, {k: params[k] for k in varied}, setting, seed))
    jobs = prof.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise GriditError(f"profiles.{profile}.jobs must be an integer >= 1, got {jobs!r}")
    executor = prof.get("executor", "local")
    if executor not in EXECUTORS:
        raise GriditError(f"profiles.{profile}.executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    report, claims = _mapping(data.get("report"), "report"), _cases(data.get("claims"), "claims")
    _check_report(report, claims)
    return Study(
        name=str(data.get("name") or path.stem), path=path, text=text, notebook=notebook, profile=profile, runs=runs,
        varied=varied, jobs=jobs, executor=executor, cluster=str(prof.get("cluster") or ""),
        slurm=_mapping(prof.get("slurm"), f"profiles.{profile}.slurm"), description=str(data.get("description") or ""),
        notes=str(data.get("notes") or ""), report=report, claims=claims,
    )  # fmt: skip
