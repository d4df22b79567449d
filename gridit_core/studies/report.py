"""A study's static report: ``index.html`` (the claims and their verdicts, each setting's mean and 95% interval over
its seeds as a table and as plotly charts with error bars, Pareto fronts of quality against time, a sortable table of
every run linking its executed notebook, the failures, the spec and the machine: ``studies.stats`` does the
statistics), which loads a local ``plotly.min.js`` (no CDN: the report opens offline):
one already beside it or in the folder above (reports side by side share one), else a copy from the installed plotly
package; and ``results.csv`` / ``results.json`` with every run.

A run's ``results.json`` (written by its notebook) holds ``metrics``: its numeric leaves, nested keys joined by dots,
are what the charts and the table show.
"""

import csv
import html
import io
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path

from gridit_core.errors import GriditError
from gridit_core.studies.stats import judge_claim, settings
from gridit_core.util.io import write_text_atomic


def plotly_js():
    """The installed plotly package's ``plotly.min.js``."""
    try:
        import plotly
    except ImportError:
        raise GriditError("the study report needs plotly (its plotly.min.js is copied beside the page): "
                          "pip install -e '.[notebooks]'") from None  # fmt: skip
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise GriditError(f"plotly {plotly.__version__} ships no package_data/plotly.min.js")
    return path


def link_plotly(out):
    """The ``src`` by which ``out/index.html`` loads plotly: a ``plotly.min.js`` already in ``out``, else one in the
    folder above (so the committed reports share one), else a copy of the installed one put into ``out``."""
    out = Path(out)
    if (out / "plotly.min.js").is_file():
        return "plotly.min.js"
    if (out.parent / "plotly.min.js").is_file():
        return "../plotly.min.js"
    shutil.copyfile(plotly_js(), out / "plotly.min.js")
    return "plotly.min.js"


def machine():
    """Where the study ran: OS, Python, torch, CPU, cores, memory, GPU and the code's git commit."""
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = "unknown"
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory": memory, "gpu": gpu,
            "commit": commit or "unknown"}  # fmt: skip


def flatten(metrics, prefix=""):
    """The numeric leaves of a nested dict, keys joined by dots (booleans as 0/1, lists left out)."""
    out = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = int(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = value
    return out


def collect(study, out):
    """One record per run of ``study`` in ``out``: status, parameters, results, flattened metrics, error, links."""
    records = []
    for run in study.runs:
        folder = Path(out) / "runs" / run.name
        results = _read_json(folder / "results.json")
        error = _read_json(folder / "error.json")
        status = "done" if results is not None else "failed" if error is not None else "pending"
        notebook = folder / study.notebook.name
        records.append({
            "name": run.name, "status": status, "varied": run.varied, "parameters": run.params,
            "setting": run.setting, "setting_label": run.setting_label,
            "metrics": flatten((results or {}).get("metrics")), "results": results, "error": (error or {}).get("error"),
            "notebook": f"runs/{run.name}/{study.notebook.name}" if notebook.is_file() else None,
            "log": f"runs/{run.name}/log.txt" if (folder / "log.txt").is_file() else None,
        })  # fmt: skip
    return records


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def metric_names(records, wanted=None):
    """The metrics to show: ``wanted`` (the spec's ``report.metrics``) where some run has them, else every one."""
    seen = list(dict.fromkeys(k for r in records for k in r["metrics"]))
    return [m for m in wanted if m in seen] if wanted else seen


# ---- charts --------------------------------------------------------------------------------------------------------


def _label(value):
    return value if isinstance(value, str) else json.dumps(value)


def setting_chart(records, summary, metric):
    """``(data, layout)`` of ``metric`` by setting: each setting's mean over its seeds with its 95% interval as error
    bars (``summary`` from ``stats.settings``), and every run a faint point."""
    rows = [g for g in summary if metric in g["metrics"]]
    labels = [g["label"] for g in rows]
    stats = [g["metrics"][metric] for g in rows]
    means = [st["mean"] for st in stats]
    up = [st["ci"][1] - st["mean"] if st["ci"] else 0 for st in stats]
    down = [st["mean"] - st["ci"][0] if st["ci"] else 0 for st in stats]
    done = [r for r in records if r["status"] == "done" and metric in r["metrics"] and r.get("setting_label") in labels]
    data = [{"type": "scatter", "mode": "markers", "x": [r["setting_label"] for r in done],
             "y": [r["metrics"][metric] for r in done], "text": [r["name"] for r in done], "name": "runs",
             "marker": {"size": 6, "opacity": 0.35, "color": "#777"}},
            {"type": "scatter", "mode": "markers", "x": labels, "y": means, "name": "mean, 95% interval",
             "text": [f"{st['n']} runs" for st in stats], "marker": {"size": 10},
             "error_y": {"type": "data", "symmetric": False, "array": up, "arrayminus": down}}]  # fmt: skip
    layout = {"title": {"text": f"{metric}: mean and 95% interval over seeds", "font": {"size": 13}}, "autosize": True,
              "xaxis": {"title": {"text": "setting"}, "type": "category", "automargin": True},
              "yaxis": {"title": {"text": metric}}, "height": 360, "margin": {"t": 40, "b": 80, "l": 60, "r": 10},
              "showlegend": False}  # fmt: skip
    return data, layout


def pareto_front(points, higher=True):
    """Indices of the points ``(time, quality)`` no other point beats on both (less time, better quality), by time."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1] if higher else points[i][1]))
    front, best = [], None
    for i in order:
        q = points[i][1]
        if best is None or (q > best if higher else q < best):
            front.append(i)
            best = q
    return front


def pareto_chart(summary, time, quality, better="higher"):
    """``(data, layout)`` of quality against time over the settings' means (``stats.settings``), with their
    intervals, and the Pareto front of the means drawn as a line."""
    rows = [g for g in summary if time in g["metrics"] and quality in g["metrics"]]
    points = [(g["metrics"][time]["mean"], g["metrics"][quality]["mean"]) for g in rows]
    front = pareto_front(points, better == "higher")

    def bars(key, i):
        ci = [g["metrics"][key]["ci"] for g in rows]
        return {"type": "data", "symmetric": False, "array": [c[1] - p[i] if c else 0 for c, p in zip(ci, points)],
                "arrayminus": [p[i] - c[0] if c else 0 for c, p in zip(ci, points)]}  # fmt: skip

    data = [{"type": "scatter", "mode": "markers", "x": [p[0] for p in points], "y": [p[1] for p in points],
             "text": [g["label"] for g in rows], "name": "settings", "marker": {"size": 9, "opacity": 0.8},
             "error_x": bars(time, 0), "error_y": bars(quality, 1)},
            {"type": "scatter", "mode": "lines+markers", "x": [points[i][0] for i in front],
             "y": [points[i][1] for i in front], "text": [rows[i]["label"] for i in front], "name": "Pareto front",
             "line": {"shape": "hv"}}]  # fmt: skip
    layout = {"title": {"text": f"{quality} ({better} is better) against {time}", "font": {"size": 13}}, "autosize": True,
              "xaxis": {"title": {"text": time}},
              "yaxis": {"title": {"text": quality}}, "height": 380, "margin": {"t": 40, "b": 50, "l": 60, "r": 10}}  # fmt: skip
    return data, layout


# ---- page ----------------------------------------------------------------------------------------------------------

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows), up = th.dataset.dir !== 'up';
    th.dataset.dir = up ? 'up' : 'down';
    var key = function (row) { var t = row.cells[col].dataset.v || row.cells[col].textContent, n = parseFloat(t);
                               return isNaN(n) ? t : n; };
    rows.sort(function (a, b) { var x = key(a), y = key(b), c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                                                   : (typeof x === 'number' ? -1 : 1);
                                return up ? c : -c; });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px}"
         "th{background:#f3f3f3;cursor:pointer}td.n{text-align:right}.failed{color:#b00}.charts{display:grid;"
         "grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:8px}.charts>div{width:100%}.wide{overflow-x:auto}"
         "pre{background:#f7f7f7;padding:1em;"
         "overflow:auto}.holds{color:#070}.does-not-hold{color:#b00}.inconclusive{color:#a60}"
         ".gallery figure{display:inline-block;margin:6px;font-size:11px;max-width:540px}"
         ".gallery img{image-rendering:pixelated;width:512px}")  # fmt: skip


def _cell(value):
    if isinstance(value, float):
        return f'<td class="n" data-v="{value!r}">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="n">{value}</td>'
    return f"<td>{html.escape('' if value is None else _label(value))}</td>"


def _table(head, rows, sortable=False):
    cls = ' class="sortable"' if sortable else ""
    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table{cls}><thead><tr>{top}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _link(path, text):
    return f'<a href="{html.escape(path)}">{html.escape(text)}</a>' if path else html.escape(text)


class _Charts:
    """Plotly figures as divs drawn by ``Plotly.newPlot`` from the local ``plotly.min.js``."""

    def __init__(self):
        self.count = 0

    def div(self, figure):
        data, layout = figure
        self.count += 1
        name = f"chart{self.count}"
        spec = json.dumps(data).replace("</", "<\\/"), json.dumps(layout).replace("</", "<\\/")
        return (f'<div id="{name}"></div><script>Plotly.newPlot("{name}", {spec[0]}, {spec[1]}, '
                f'{{"displaylogo": false, "responsive": true, "displayModeBar": "hover"}});</script>')  # fmt: skip


def samples_gallery(out, records):
    """HTML figures of the GIFs each finished run lists in its results' ``figures`` and has in its folder (linked
    relative to ``out``, so the page stays offline); empty when there are none."""
    figures = []
    for r in records:
        gifs = [f for f in ((r["results"] or {}).get("figures") or []) if str(f).endswith(".gif")]
        for gif in gifs:
            src = f"runs/{r['name']}/{gif}"
            if (Path(out) / src).is_file():
                figures.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(gif)}'>"
                               f"<figcaption>{html.escape(r['name'])}<br>{html.escape(gif)}</figcaption></figure>")
    return f"<div class='gallery'>{''.join(figures)}</div>" if figures else ""


def settings_table(summary_rows, metrics):
    """One row per setting: its runs and each metric's mean with its interval."""
    rows = []
    for g in summary_rows:
        cells = [f"<td>{html.escape(g['label'])}</td><td class='n'>{len(g['runs'])}</td>"]
        for m in metrics:
            st = g["metrics"].get(m)
            text = "" if st is None else f"{st['mean']:.4g}" + (f" [{st['ci'][0]:.3g}, {st['ci'][1]:.3g}]" if st["ci"] else "")
            cells.append(f"<td class='n'>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _table(["setting", "runs", *metrics], rows, sortable=True)


def page(study, records, summary, machine_info, out, plotly_src="plotly.min.js"):
    """The HTML of ``index.html``; ``out`` is the study folder, where the runs' sample GIFs are looked for, and
    ``plotly_src`` the page's link to ``plotly.min.js``."""
    report = study.report
    metrics = metric_names(records, report.get("metrics"))
    charts = _Charts()
    parts = [f"<h1>Study: {html.escape(study.name)}</h1>"]
    if study.description:
        parts.append(f"<p>{html.escape(study.description)}</p>")
    counts = ", ".join(f"{summary.get(k, 0)} {k.replace('_', ' ')}" for k in ("done", "skipped", "failed", "not_run"))
    parts.append(f"<p>Profile <b>{html.escape(study.profile)}</b>, notebook <code>{html.escape(study.notebook.name)}"
                 f"</code>, {len(records)} runs: {counts}; this invocation took {summary.get('seconds', 0):.0f} s.</p>")
    if study.notes:
        parts += ["<h2>What the results mean</h2>"] + [f"<p>{html.escape(p.strip())}</p>" for p in study.notes.split("\n\n")]
    summary_rows = settings(records, metrics)
    if study.claims:
        rows = []
        for c in (judge_claim(c, records) for c in study.claims):
            measured = "n/a" if c["measured"] is None else f"{c['measured']:.3g}x"
            if c["interval"]:
                measured += f" [{c['interval'][0]:.3g}, {c['interval'][1]:.3g}]"
            rows.append(f"<tr><td>{html.escape(c['id'])}</td><td>{html.escape(c['claim'])}</td><td>{measured} "
                        f"(needs {c['factor']:g}x, {c['better']} is better)</td><td>{c['runs']}</td>"
                        f"<td class=\"{c['verdict'].replace(' ', '-')}\">{c['verdict']}</td><td>{html.escape(c['why'])}"
                        f"{'; ' + html.escape(c['method']) if c['method'] else ''}</td></tr>")  # fmt: skip
        parts += ["<h2>Claims</h2><p>The ratio of side a to side b (above 1: a is better) with its 95% interval; a "
                  "verdict needs 3 runs a side, and the interval wholly above or below the factor.</p>",
                  _table(["claim", "wording", "measured [95% interval]", "runs", "verdict", "why"], rows)]
    if summary_rows:
        parts += ["<h2>Settings</h2><p>Each setting's mean over its seeds with the 95% t-interval.</p>",
                  f"<div class='wide'>{settings_table(summary_rows, metrics)}</div>"]
    pareto = report.get("pareto") or []
    if pareto:
        parts.append("<h2>Quality against time</h2><div class='charts'>")
        parts += [charts.div(pareto_chart(summary_rows, p["time"], p["quality"], p.get("better", "higher"))) for p in pareto]
        parts.append("</div>")
    chart_metrics = [m for m in report.get("charts") or metrics[:4] if m in metrics]
    if chart_metrics:
        parts.append("<h2>By setting</h2><div class='charts'>")
        parts += [charts.div(setting_chart(records, summary_rows, m)) for m in chart_metrics]
        parts.append("</div>")
    gallery = samples_gallery(out, records)
    if gallery:
        parts += ["<h2>Samples</h2><p>Each finished run's sampled sequences, as its notebook saved them.</p>", gallery]
    rows = []
    for r in records:
        name = _link(r["notebook"], r["name"])
        cells = [f"<td class='{r['status']}'>{r['status']}</td><td>{name}</td>"]
        cells += [_cell(r["varied"].get(p)) for p in study.varied] + [_cell(r["metrics"].get(m)) for m in metrics]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    parts += ["<h2>Runs</h2><p>Click a heading to sort; a run's name opens its executed notebook.</p>",
              f"<div class='wide'>{_table(['status', 'run', *study.varied, *metrics], rows, sortable=True)}</div>"]
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        rows = [f"<tr><td class='failed'>{r['status']}</td><td>{_link(r['notebook'], r['name'])}</td>"
                f"<td>{html.escape(r['error'] or 'not run yet')}</td><td>{_link(r['log'], 'log') if r['log'] else ''}</td></tr>"
                for r in failed]  # fmt: skip
        parts += ["<h2>Failures and runs not finished</h2>", _table(["status", "run", "error", "log"], rows)]
    parts += [f"<h2>Spec</h2><p><code>{html.escape(str(study.path))}</code>, profile {html.escape(study.profile)}</p>"
              f"<pre>{html.escape(study.text)}</pre>",
              "<h2>Machine</h2>", _table(["", ""], [f"<tr><td>{html.escape(k)}</td>{_cell(v)}</tr>" for k, v in machine_info.items()])]  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Study {html.escape(study.name)}</title>"
            f"<script src='{html.escape(plotly_src)}'></script><style>{STYLE}</style></head><body>{''.join(parts)}"
            f"<script>{SORT_JS}</script></body></html>")  # fmt: skip


def results_csv(study, records):
    """One row per run: name, status, every parameter, every metric, the error."""
    params = list(dict.fromkeys(k for r in records for k in r["parameters"]))
    metrics = metric_names(records)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run", "status", *params, *metrics, "error"])
    for r in records:
        writer.writerow([r["name"], r["status"], *[_csv(r["parameters"].get(p)) for p in params],
                         *[r["metrics"].get(m, "") for m in metrics], r["error"] or ""])  # fmt: skip
    return buf.getvalue()


def _csv(value):
    return "" if value is None else value if isinstance(value, (str, int, float)) else json.dumps(value)


def write_study_report(study, out, records, summary):
    """``index.html``, ``results.csv`` and ``results.json`` into ``out``, and ``plotly.min.js`` when neither ``out`` nor
    the folder above holds one (``link_plotly``); returns the page's path."""
    out = Path(out)
    plotly_src = link_plotly(out)
    info = _read_json(out / "study.json") or {}
    machine_info = info.get("machine") or machine()
    claims = [judge_claim(c, records) for c in study.claims]
    aggregate = {"study": study.name, "profile": study.profile, "notebook": str(study.notebook), "summary": summary,
                 "varied": study.varied, "claims": claims, "settings": settings(records, metric_names(records)),
                 "machine": machine_info, "runs": records}  # fmt: skip
    write_text_atomic(json.dumps(aggregate, indent=2) + "\n", out / "results.json")
    write_text_atomic(results_csv(study, records), out / "results.csv")
    return write_text_atomic(page(study, records, summary, machine_info, out, plotly_src), out / "index.html")
