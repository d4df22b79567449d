"""``gridit study``: run every run of a study in its own process, locally (``--jobs`` at a time) or as a submitit job
array (SLURM, or submitit's local executor), then write the study's report.

Layout of ``OUT``: ``spec.yaml`` (the spec as given), ``study.json`` (profile, runs, machine), ``runs/NAME/`` per run
(``run.json`` what it runs, the executed notebook, ``results.json`` written by the notebook as its last step, figures,
``log.txt``, and ``error.json`` when it failed), ``index.html`` with ``plotly.min.js``, ``results.csv`` and
``results.json``. A run is done when its ``results.json`` exists: a rerun with ``--resume`` skips it and redoes the
failed and unfinished ones, so an interruption loses at most the runs in flight.
"""

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from gridit_core.errors import GriditError
from gridit_core.util.io import write_text_atomic

POLL_S = 0.5  # how often finished processes and jobs are looked for


def run_folder(out, run):
    return Path(out) / "runs" / run.name


def _status(folder):
    if (folder / "results.json").is_file():
        return "done"
    return "failed" if (folder / "error.json").is_file() else "pending"


def _error(folder, message, **extra):
    write_text_atomic(json.dumps({"error": " ".join(str(message).split()), **extra}, indent=2) + "\n", folder / "error.json")


def execute_run(run_dir):
    """Run one run's notebook with papermill (``run_dir/run.json`` says which, with what parameters and where);
    returns ``"done"`` or ``"failed"``. A failure writes ``error.json`` and keeps the executed notebook with the error;
    the cell outputs are logged to ``log.txt`` as they come. What a submitit job calls."""
    import logging

    import papermill as pm

    folder = Path(run_dir)
    job = json.loads((folder / "run.json").read_text())
    (folder / "error.json").unlink(missing_ok=True)
    handler = logging.FileHandler(folder / "log.txt")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        pm.execute_notebook(job["notebook"], str(folder / Path(job["notebook"]).name), parameters=job["parameters"],
                            kernel_name="python3", cwd=job["cwd"], progress_bar=False, log_output=True)  # fmt: skip
    except Exception as e:  # the notebook's error (PapermillExecutionError) or a kernel that died
        what = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {e}"
        cell = getattr(e, "exec_count", None)
        _error(folder, what, cell=cell, seconds=time.perf_counter() - started)
        return "failed"
    finally:
        logger.removeHandler(handler)
        handler.close()
    if not (folder / "results.json").is_file():
        _error(folder, "the notebook ran to the end without writing results.json", seconds=time.perf_counter() - started)
        return "failed"
    return "done"


def prepare(study, out, resume):
    """Check ``out`` and write what the runs need; returns the runs to execute, and how many are skipped as done."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GriditError(f"output path {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not resume:
        raise GriditError(f"output folder {out} already exists; pass --resume to continue the study there")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(study.text, out / f"spec{study.path.suffix}")
    write_text_atomic("checkpoints/\nsamples/\nsubmitit/\n", out / ".gitignore")  # committed: the report; not: weights, frames
    todo, skipped = [], 0
    for run in study.runs:
        folder = run_folder(out, run)
        if _status(folder) == "done":
            skipped += 1
            continue
        folder.mkdir(parents=True, exist_ok=True)
        params = {k: _absolute(v) for k, v in run.params.items()} | {"OUT_DIR": str(folder.resolve())}
        job = {"notebook": str(study.notebook), "parameters": params, "cwd": str(study.notebook.parent), "varied": run.varied}
        write_text_atomic(json.dumps(job, indent=2) + "\n", folder / "run.json")
        todo.append(run)
    return todo, skipped


def _absolute(value):
    """A string naming an existing file or folder (it has a ``/`` or a suffix) relative to where the study was started,
    made absolute: the kernel runs in the notebook's folder, as in Jupyter."""
    if isinstance(value, str) and ("/" in value or Path(value).suffix) and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _stop(proc):
    """End a worker and its children (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def worker_env(jobs, cores=None):
    """The environment of a run's worker: with ``jobs`` runs at a time, each gets its share of the cores for its
    thread pools (``OMP_NUM_THREADS``, which torch follows), so runs side by side do not fight over every core; a
    value already set is kept."""
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (cores or os.cpu_count() or 1) // jobs))
    return env


def run_local(out, runs, jobs, bar):
    """Each run in its own worker process (``python -m gridit_core.studies.runner RUN_DIR``), ``jobs`` at a time,
    each with its share of the cores (``worker_env``)."""
    pending, active, env = collections.deque(runs), {}, worker_env(jobs)  # active: folder -> worker process
    try:
        while pending or active:
            while pending and len(active) < jobs:
                folder = run_folder(out, pending.popleft())
                with open(folder / "log.txt", "a") as log:  # the worker's own crash, if any, lands in the log
                    active[folder] = subprocess.Popen([sys.executable, "-m", "gridit_core.studies.runner", str(folder)],
                                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                      env=env)  # fmt: skip
            time.sleep(POLL_S)
            for folder, proc in list(active.items()):
                if proc.poll() is not None:
                    del active[folder]
                    _finished(folder, f"the run's process ended with exit code {proc.returncode}")
                    bar.update(1)
    finally:  # Ctrl-C or an error here: the runs in flight are lost, nothing else
        for proc in active.values():
            _stop(proc)


def _finished(folder, why):
    if _status(folder) == "pending":  # killed before it could say why
        _error(folder, f"{why} (see log.txt)")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise GriditError("--executor submitit needs submitit: pip install -e '.[notebooks]'") from None
    return submitit


def run_submitit(out, study, runs, jobs, bar):
    """The runs as one submitit job array: on SLURM with the profile's ``slurm`` settings, or where there is no
    SLURM (or ``cluster: local``) as local processes. Interrupting cancels the jobs not finished."""
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(folder=Path(out) / "submitit", cluster=study.cluster or None)
        executor.update_parameters(**{"name": f"gridit-{study.name}", "slurm_array_parallelism": jobs, **study.slurm})
    except (ValueError, RuntimeError) as e:
        raise GriditError(f"submitit ({study.cluster or 'auto'}): {' '.join(str(e).split())}") from None
    folders = [str(run_folder(out, run)) for run in runs]
    submitted = executor.map_array(execute_run, folders)
    waiting = dict(zip(folders, submitted))
    try:
        while waiting:
            time.sleep(POLL_S)
            for folder, job in list(waiting.items()):
                if job.done():
                    del waiting[folder]
                    if job.exception() is not None:
                        _error(Path(folder), f"submitit job {job.job_id}: {job.exception()}", job_id=job.job_id)
                    _finished(Path(folder), f"submitit job {job.job_id} ended in state {job.state}")
                    bar.update(1)
    finally:
        for job in waiting.values():
            job.cancel(check=False)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """``kill`` (SIGTERM) handled as Ctrl-C while the runs go: the runs in flight are stopped and the report written."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _how_to_run(study, jobs, executor):
    """``(jobs, executor)``: those given on the command line, else the profile's."""
    return jobs or study.jobs, executor or study.executor


def run_study(study, out, *, jobs=None, executor=None, resume=False, progress=True):
    """Run ``study`` into ``out`` and write its report; returns the counts ``{"done", "skipped", "failed", "not_run",
    "seconds", "stopped"}`` and the report's path. Ctrl-C stops the runs in flight (``stopped``: they count as not
    run) and still writes the report of what finished."""
    from gridit_core.studies.report import collect, machine, plotly_js, write_study_report

    plotly_js()  # the report's one dependency, found now rather than after the runs

    out = Path(out)
    jobs, executor = _how_to_run(study, jobs, executor)
    if executor == "submitit":
        _submitit()  # missing: said before the output folder is made
    todo, skipped = prepare(study, out, resume)
    started = time.time()
    record = {"name": study.name, "profile": study.profile, "notebook": str(study.notebook), "spec": str(study.path),
              "executor": executor, "jobs": jobs, "runs": [r.name for r in study.runs], "machine": machine()}  # fmt: skip
    write_text_atomic(json.dumps(record, indent=2) + "\n", out / "study.json")
    bar = tqdm(total=len(todo), desc=f"study {study.name}", unit="run", disable=not progress)
    interrupted = False
    try:
        with _terminate_as_interrupt():
            if todo:
                (run_local(out, todo, jobs, bar) if executor == "local" else run_submitit(out, study, todo, jobs, bar))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    records = collect(study, out)
    counts = {s: sum(r["status"] == s for r in records if r["name"] in {t.name for t in todo})
              for s in ("done", "failed", "pending")}  # fmt: skip
    summary = {"done": counts["done"], "skipped": skipped, "failed": counts["failed"], "not_run": counts["pending"],
               "seconds": time.time() - started, "stopped": interrupted}  # fmt: skip
    return summary, write_study_report(study, out, records, summary)


def rewrite_report(study, out):
    """Write ``out``'s report again from the runs already there, running nothing (after editing the spec's ``report``
    or ``notes``); the summary is the last run's, from ``out/results.json``. Returns the page's path."""
    from gridit_core.studies.report import collect, write_study_report

    out = Path(out)
    if not (out / "runs").is_dir():
        raise GriditError(f"{out} holds no study runs to report on")
    try:
        summary = json.loads((out / "results.json").read_text())["summary"]
    except (OSError, ValueError, KeyError):
        summary = {}
    records = collect(study, out)
    summary = summary or {s: sum(r["status"] == s for r in records) for s in ("done", "failed")}
    return write_study_report(study, out, records, summary)


def plan(study, out, *, jobs=None, executor=None):
    """What ``run_study`` would do, as lines of text, without running or writing anything: the profile, how the runs
    would execute (with the SLURM settings), and each run with its varied parameters and whether ``out`` already
    holds its result. Every run's parameters were checked when ``study`` was loaded."""
    jobs, executor = _how_to_run(study, jobs, executor)
    how = f"{executor}, {jobs} at a time"
    if executor == "submitit":
        how += f", cluster {study.cluster or 'auto (slurm where sbatch exists)'}"
    lines = [f"{_title(study)}: {len(study.runs)} runs of {study.notebook.name}, {how}"]
    if executor == "submitit" and study.slurm:
        lines.append("slurm: " + ", ".join(f"{k}={v}" for k, v in study.slurm.items()))
    states = [_status(run_folder(out, run)) for run in study.runs]
    for run, state in zip(study.runs, states):
        varied = " ".join(f"{k}={v}" for k, v in run.varied.items())
        lines.append(f"  {state:7s} {run.name}  {varied}")
    done = states.count("done")
    lines.append(f"{len(states) - done} to run, {done} done in {out}" if Path(out).is_dir() else f"{out} does not exist yet")
    return lines


def _title(study):
    """``study NAME (PROFILE)``, or ``study NAME`` for a spec without profiles."""
    return f"study {study.name} ({study.profile})" if study.profile else f"study {study.name}"


def summary_line(study, summary, page):
    """``study NAME (cpu-small): 5 done, 2 skipped, 1 failed in 3 min 10 s; report: OUT/index.html``."""
    minutes, seconds = divmod(round(summary["seconds"]), 60)
    lost = f", {summary['not_run']} not run (stopped)" if summary["not_run"] else ""
    return (f"{_title(study)}: {summary['done']} done, {summary['skipped']} skipped, "
            f"{summary['failed']} failed{lost} in {minutes} min {seconds} s; report: {page}")  # fmt: skip


if __name__ == "__main__":  # the worker of the local executor: one run, in its own process
    sys.exit(0 if execute_run(sys.argv[1]) == "done" else 1)
