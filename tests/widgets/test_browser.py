"""The widgets in a real JupyterLab in a real browser (Debian's chromium through playwright): run the widgets tutorial,
then use both widgets as a person would, and fail on any JavaScript error.

The screenshots (sampler.png, inspector.png) go to a temporary folder, so a test run leaves the work tree as it was.
``make screenshots`` refreshes the committed ones in reports/widgets/: it runs this test with
``GRIDIT_SCREENSHOTS=reports/widgets`` (a folder, relative to the repository unless absolute).

Skipped, with a message, where chromium or playwright is missing; ``GRIDIT_REQUIRE_BROWSER=1`` (set by .ci/run)
makes that a failure instead.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = "notebooks/tutorials/04_widgets.ipynb"
SHOTS_VARIABLE = "GRIDIT_SCREENSHOTS"  # where the screenshots go; unset: a temporary folder
TOKEN = "gridit-browser-test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def _missing(what):
    message = (f"{what}: the browser test needs Debian's chromium (apt-get install chromium) and playwright "
               "(pip install -e '.[dev]'); never a downloaded browser")  # fmt: skip
    if os.environ.get("GRIDIT_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("no chromium on PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """The screenshots' folder: ``$GRIDIT_SCREENSHOTS`` (``make screenshots``: reports/widgets), else a temporary one."""
    folder = os.environ.get(SHOTS_VARIABLE)
    path = REPO / folder if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A headless JupyterLab on a free port, serving a copy of the tutorial (the browser's run never writes into the
    repository), with its settings in a temporary folder; stopped by its PID."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks" / "tutorials").mkdir(parents=True)
    shutil.copy(REPO / TUTORIAL, root / TUTORIAL)
    (root / "assets").symlink_to(REPO / "assets")
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}  # fmt: skip
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
           f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}"]
    settings = {  # no "Jupyter news?" toast over the screenshots; every cell attached, off-screen ones included
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }
    for name, values in settings.items():
        path = root / ".settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _get(f"{base}/api/status?token={TOKEN}")
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.25)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_kernel_idle(base, timeout=240):
    """Until the tutorial's kernel has been idle for three polls in a row (it goes idle between cells for an
    instant, so one idle answer is not enough)."""
    end, calm = time.time() + timeout, 0
    while time.time() < end:
        sessions = [s for s in _get(f"{base}/api/sessions?token={TOKEN}") if s["path"].endswith("04_widgets.ipynb")]
        state = _get(f"{base}/api/kernels/{sessions[0]['kernel']['id']}?token={TOKEN}")["execution_state"] if sessions else ""
        calm = calm + 1 if state == "idle" else 0
        if calm == 3:
            return
        time.sleep(0.5)
    pytest.fail(f"the kernel did not go idle within {timeout} s")


def _src(locator):
    return locator.get_attribute("src")


def test_both_widgets_work_in_jupyterlab_in_chromium(chromium, lab, shots, tmp_path):
    page = chromium.new_page(viewport={"width": 1500, "height": 1700})  # tall enough for the sampler
    stage = ["opening the tutorial"]
    try:
        _use_both_widgets(page, lab, stage, shots)
    except Exception as e:
        failure = tmp_path / "failure.png"  # what the browser showed (never committed)
        page.screenshot(path=str(failure), full_page=True)
        raise AssertionError(f"while {stage[0]}: {str(e).splitlines()[0]} (screenshot: {failure})") from e
    finally:
        page.close()


def _use_both_widgets(page, lab, stage, shots):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{lab}/lab/tree/{TUTORIAL}?token={TOKEN}")
    page.locator(".jp-Notebook").wait_for(timeout=60_000)
    _wait_kernel_idle(lab)
    stage[0] = "running all cells"
    page.locator(".lm-MenuBar-item", has_text="Run").click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    page.locator(".gridit-sampler .gridit-status", has_text="done: 8 of 8").wait_for(timeout=120_000)
    _wait_kernel_idle(lab)

    # the grid demo's widgets: the tutorial opens a second inspector, on the MSC checkpoint, after them
    sampler, inspector = page.locator(".gridit-sampler").first, page.locator(".gridit-inspector").first
    stage[0] = "waiting for the inspector"
    inspector.locator(".gridit-patch-view").wait_for(timeout=30_000)
    # Run, as a person would: 12 frames this time, then wait for them
    stage[0] = "running the sampler for 12 frames"
    frames = sampler.locator(".gridit-frames input")
    frames.fill("12")
    frames.press("Enter")
    sampler.locator("button", has_text="Run").click()
    sampler.locator(".gridit-status", has_text="done: 12 of 12").wait_for(timeout=60_000)
    # the frame slider: the shown frame changes
    stage[0] = "moving the frame slider"
    shown = sampler.locator(".gridit-frame-lr")
    before = _src(shown)
    readout = sampler.locator(".widget-hslider:has(.widget-label:text-is('frame')) .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("11")
    page.keyboard.press("Enter")
    page.wait_for_function("([el, old]) => el.getAttribute('src') !== old", arg=[shown.element_handle(), before],
                           timeout=30_000)  # fmt: skip
    sampler.screenshot(path=str(shots / "sampler.png"))
    # a click on a patch of the inspector: the heatmap over the frames changes
    stage[0] = "clicking a patch"
    patch = inspector.locator(".gridit-patch-view")
    patch.scroll_into_view_if_needed()
    before = _src(patch)
    patch.click(position={"x": 20, "y": 20})
    page.wait_for_function("([el, old]) => el.getAttribute('src') !== old", arg=[patch.element_handle(), before],
                           timeout=30_000)  # fmt: skip
    inspector.locator(".widget-label", has_text="token: frame 0, patch row 0, column 0").wait_for(timeout=30_000)
    inspector.screenshot(path=str(shots / "inspector.png"))
    # Stop during a long run: it stops and keeps the frames made
    stage[0] = "stopping a long run"
    frames.fill("4000")
    frames.press("Enter")
    sampler.locator("button", has_text="Run").click()
    sampler.locator(".widget-label", has_text=re.compile(r"; ([4-9]|\d\d+) frames")).wait_for(timeout=60_000)
    sampler.locator("button", has_text="Stop").click()
    stopped = sampler.locator(".gridit-status", has_text="stopped:")
    stopped.wait_for(timeout=30_000)
    assert " of 4000 frames" in stopped.inner_text()
    assert errors == [], errors
