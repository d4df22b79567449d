"""The documentation: README.md stays short, every relative link in the Markdown docs resolves inside the repository
(anchors into Markdown files to a heading), nothing points outside it, and the committed study reports load a
``plotly.min.js`` that is in the repository."""

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 12_000
OUTSIDE = "../" + "shared"  # a sibling folder, no part of the repository (spelt so that grep finds no pointer here)
SKIPPED_TOP = {".git", ".venv", "build", "runs"}  # not the repository's files (a user's runs, the environment)
SKIPPED_ANYWHERE = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


def doc_files():
    """The Markdown files whose links are checked."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += [ROOT / p for p in ("widgets/README.md", "benchmarks/README.md", "notebooks/studies/README.md")]
    files += sorted((ROOT / "reports").glob("**/README.md")) + sorted((ROOT / "assets").glob("*/README.md"))
    return [f for f in files if f.is_file()]


FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
HTML_ID = re.compile(r"<[^>]+\b(?:id|name)=[\"']([^\"']+)[\"']")


def prose(text):
    """``text`` without fenced code blocks and inline code spans (links there are examples, not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text):
    """Every link and image target in Markdown ``text``, inline or reference-style."""
    body = prose(text)
    targets = [m.group(1) for m in LINK.finditer(body)] + [m.group(1) for m in REFERENCE.finditer(body)]
    return [t[1:-1] if t.startswith("<") else t for t in targets]


def slug(heading):
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation dropped, spaces turned to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    """The anchors a Markdown file offers: its headings' slugs (repeats numbered as GitHub does) and HTML ids."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen, out = {}, set()
    for m in HEADING.finditer(text):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out | set(HTML_ID.findall(text))


def broken_links(path, root=ROOT):
    """``(target, why)`` for each relative link of ``path`` that does not resolve inside ``root`` (the repository)."""
    bad = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            if not re.match(r"^(https?|mailto):", target, re.I):
                bad.append((target, "a scheme other than http(s) or mailto"))
            continue
        part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(part)).resolve() if part else path
        if not dest.is_relative_to(root):
            bad.append((target, "outside the repository"))
        elif not dest.exists():
            bad.append((target, "no such file or folder"))
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            bad.append((target, f"no heading #{anchor} in {dest.relative_to(root)}"))
    return bad


def test_the_readme_is_at_most_12000_bytes():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(path):
    assert broken_links(path) == []


def test_the_docs_point_nowhere_outside_the_repository():
    files = doc_files()
    assert {"README.md", "docs/README.md", "widgets/README.md"} <= {str(f.relative_to(ROOT)) for f in files}
    assert [str(f.relative_to(ROOT)) for f in files if OUTSIDE in f.read_text(encoding="utf-8")] == []


def test_no_code_notebook_or_spec_points_outside_the_repository():
    suffixes = {".py", ".md", ".ipynb", ".yaml", ".yml", ".toml", ".cfg"}
    found = []
    for folder, dirs, files in os.walk(ROOT):
        top = Path(folder) == ROOT
        dirs[:] = [d for d in dirs if not (top and d in SKIPPED_TOP) and d not in SKIPPED_ANYWHERE
                   and not d.endswith(".egg-info")]  # fmt: skip
        for name in files:
            path = Path(folder) / name
            if path.suffix in suffixes and OUTSIDE in path.read_text(encoding="utf-8", errors="replace"):
                found.append(str(path.relative_to(ROOT)))
    assert found == []


def test_the_link_checker_catches_what_it_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `gridit` command, in short\n\nText.\n")
    page = tmp_path / "docs" / "index.md"
    page.write_text("See [a](a.md), [its section](a.md#the-gridit-command-in-short), ![pic](\n"
                    "missing.png), [gone](a.md#nowhere), [up](../../elsewhere.md), [web](https://example.org/x),\n"
                    "[self](#top) and `[code](not-a-link.md)`.\n\n# Top\n\n```\n[fenced](nor-this.md)\n```\n")
    assert broken_links(page, tmp_path) == [("missing.png", "no such file or folder"),
                                            ("a.md#nowhere", "no heading #nowhere in docs/a.md"),
                                            ("../../elsewhere.md", "outside the repository")]  # fmt: skip


@pytest.mark.parametrize("page", sorted((ROOT / "reports" / "studies").glob("*/index.html")),
                         ids=lambda p: p.parent.name)  # fmt: skip
def test_each_committed_study_report_loads_scripts_that_are_in_the_repository(page):
    scripts = re.findall(r"<script[^>]*\bsrc=['\"]([^'\"]+)['\"]", page.read_text(encoding="utf-8"))
    assert scripts, f"{page} loads no plotly.min.js"
    for src in scripts:
        dest = (page.parent / src).resolve()
        assert "://" not in src and dest.is_relative_to(ROOT) and dest.is_file(), f"{page}: {src}"
