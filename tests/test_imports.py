"""What importing the library pulls in: the core depends on what it imports, and imports flow one way."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # each test starts a fresh interpreter that imports torch

NOTEBOOK_PACKAGES = ["jupyterlab", "ipywidgets", "anywidget", "plotly", "papermill", "ipykernel", "nbformat", "widgets",
                     "submitit"]  # fmt: skip


def run(code):
    """Run ``code`` in a fresh interpreter; its stdout, or the test fails with its stderr."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_module_imports_without_the_notebook_packages_and_none_imports_widgets():
    out = run(f"""
        import importlib, pkgutil, sys
        for name in {NOTEBOOK_PACKAGES!r}:
            sys.modules[name] = None  # any import of these (widgets/ included) now fails
        import gridit_core
        names = [m.name for m in pkgutil.walk_packages(gridit_core.__path__, "gridit_core.")]
        for name in names:
            if not name.endswith("__main__"):
                importlib.import_module(name)
        print(len(names))
    """)
    assert int(out) >= 30


def test_sampling_does_not_import_the_trainer():
    out = run("""
        import sys
        from gridit_core.cli.commands import cmd_sample  # what gridit sample loads
        from gridit_core.sampling.two_stage import sample_two_stage
        from gridit_core.training import load_sr, load_trained
        model, diffusion, cfg = load_trained("assets/demo_bouncing/model.safetensors")
        print(sorted(m for m in sys.modules if m.startswith("gridit_core.training.trainer")))
    """)
    assert out.strip() == "[]"
