"""Self-contained HTML reports: animations and figures embedded as base64, so one file can be mailed around."""

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from gridit_core.util.io import write_text_atomic


def gif_bytes(frames, *, fps=8, scale=1, columns=1):
    """An animated GIF from ``frames`` uint8 ``(T, H, W, 3)``, or ``(S, T, H, W, 3)`` tiled ``columns`` wide."""
    frames = np.asarray(frames)
    if frames.ndim == 4:
        frames = frames[None]
    s, t, h, w, c = frames.shape
    rows = -(-s // columns)
    pad = np.zeros((rows * columns - s, t, h, w, c), dtype=np.uint8)
    tiles = np.concatenate([frames, pad]).reshape(rows, columns, t, h, w, c)
    tiles = tiles.transpose(2, 0, 3, 1, 4, 5).reshape(t, rows * h, columns * w, c)  # (T, rows*H, columns*W, C)
    images = [Image.fromarray(f).resize((columns * w * scale, rows * h * scale), Image.NEAREST) for f in tiles]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def figure_png(fig):
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _img_tag(data, mime, alt):
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def _table(rows):
    """HTML table from a list of dicts (same keys); floats to 3 decimals."""
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r[k])}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out_dir, title, sections, metrics=None):
    """Write ``out_dir/index.html`` from sections and ``out_dir/metrics.json`` from ``metrics``.

    Each section is a dict with ``heading`` and any of ``text``, ``gif`` (bytes), ``png`` (bytes), ``table`` (list of dicts).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s['heading'])}</h2>")
        if s.get("text"):
            parts.append(f"<p>{html.escape(s['text'])}</p>")
        if s.get("gif"):
            parts.append(_img_tag(s["gif"], "image/gif", s["heading"]))
        if s.get("png"):
            parts.append(_img_tag(s["png"], "image/png", s["heading"]))
        if s.get("table"):
            parts.append(_table(s["table"]))
        parts.append("</section>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "img{image-rendering:pixelated;max-width:100%}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}section{margin-bottom:2em}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    if metrics is not None:
        write_text_atomic(json.dumps(metrics, indent=2), out_dir / "metrics.json")
    write_text_atomic(page, out_dir / "index.html")
    return out_dir / "index.html"
